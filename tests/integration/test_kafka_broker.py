"""The test broker from scripts/kafka_broker.py: the session fixture and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from runner.main.control import wait_until

KAFKA_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka_broker.py"


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def consume(consumer: KafkaConsumer, count: int, timeout: float) -> list:
    """Poll `consumer` until `count` records arrived or `timeout` seconds passed."""
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def kafka_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python scripts/kafka_broker.py ARGS``."""
    return subprocess.run(
        [sys.executable, str(KAFKA_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_fixture_broker_creates_topics_and_carries_records(
    kafka_bootstrap: str, admin: KafkaAdminClient, topic_name: str
) -> None:
    admin.create_topics(
        {topic_name: {"num_partitions": 3, "replication_factor": 1}}, wait_for_metadata=True
    )
    [topic] = admin.describe_topics([topic_name])
    assert len(topic["partitions"]) == 3

    with KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all") as producer:
        sent = producer.send(topic_name, key=b"key", value=b"hello", partition=2).get(timeout=30)
    assert sent.partition == 2

    with KafkaConsumer(
        topic_name,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{topic_name}",
        auto_offset_reset="earliest",
    ) as consumer:
        received = consume(consumer, count=1, timeout=60)
        assert consumer.partitions_for_topic(topic_name) == {0, 1, 2}
    assert [(r.partition, r.key, r.value) for r in received] == [(2, b"key", b"hello")]


def test_cli_start_and_stop_round_trip(tmp_path: Path) -> None:
    workdir = tmp_path / "broker"
    started = kafka_cli("start", "--dir", str(workdir))
    try:
        assert started.returncode == 0, started.stderr
        address = started.stdout.strip()
        assert (workdir / "bootstrap").read_text().strip() == address
        pid = int((workdir / "broker.pid").read_text())
        with KafkaAdminClient(bootstrap_servers=address) as client:
            assert [b["port"] for b in client.describe_cluster()["brokers"]] == [
                int(address.rsplit(":", 1)[1])
            ]
    finally:
        stopped = kafka_cli("stop", "--dir", str(workdir))
    assert stopped.returncode == 0, stopped.stderr
    assert wait_until(lambda: not process_alive(pid), timeout=30)
    assert not (workdir / "broker.pid").exists()

    again = kafka_cli("stop", "--dir", str(workdir))
    assert again.returncode == 0
    assert "no Kafka broker running" in again.stderr


def test_cli_run_uses_given_bootstrap_servers_and_passes_exit_status() -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    command = "import os, sys; print(os.environ['KAFKA_BOOTSTRAP_SERVERS']); sys.exit(3)"
    result = kafka_cli("run", "--", sys.executable, "-c", command, env=env)
    assert result.returncode == 3
    assert result.stdout.strip() == "127.0.0.1:1"
