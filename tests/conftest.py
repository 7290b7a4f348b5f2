"""Shared fixtures: a real Kafka broker, unique topic names and an admin client."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import kafka_broker
import pytest
from harness import Worker
from kafka import KafkaAdminClient


@pytest.fixture(scope="session")
def session_broker() -> Iterator[kafka_broker.Broker | None]:
    """The broker run for the session; None when $KAFKA_BOOTSTRAP_SERVERS names one."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    with kafka_broker.Broker() as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(session_broker: kafka_broker.Broker | None) -> str:
    """The bootstrap address of $KAFKA_BOOTSTRAP_SERVERS, else of a broker run for the session."""
    return session_broker.bootstrap_servers if session_broker else os.environ[
        "KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test run, e.g. ``t-test_send-1a2b3c4d``."""
    test = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:100].strip("-")
    return f"t-{test}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    """A KafkaAdminClient connected to the test broker."""
    client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    yield client
    client.close()


@pytest.fixture
def names(request: pytest.FixtureRequest) -> dict[str, str]:
    """Unique names for one test's app (its consumer group), source and sink topics."""
    suffix = uuid.uuid4().hex[:8]
    return {"app": f"app-{suffix}", "source": f"in-{suffix}", "sink": f"out-{suffix}"}


class Workers:
    """Starts worker processes in one test's directory and kills any left at the end."""

    def __init__(self, cwd: Path, bootstrap: str) -> None:
        self.cwd = cwd
        self.bootstrap = bootstrap
        self.started: list[Worker] = []

    def __call__(self, app: str, name: str = 'w', extra: tuple[str, ...] = (),
                 datadir: Path | None = None) -> Worker:
        """A worker of ``app`` on the test broker, a free port and its own data directory
        (or ``datadir``)."""
        return self._track(Worker.for_app(self.cwd, app, self.bootstrap, name, extra,
                                          datadir=datadir))

    def raw(self, args: list[str], port: int, name: str = 'w') -> Worker:
        """A worker started with exactly ``args``; ``port`` is where its web server listens."""
        return self._track(Worker(self.cwd, args, port, name))

    def _track(self, worker: Worker) -> Worker:
        self.started.append(worker)
        return worker

    def kill_all(self) -> None:
        for worker in self.started:
            worker.kill()


@pytest.fixture
def workers(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Workers]:
    """Start worker processes in ``tmp_path``; any still running at the end are killed."""
    started = Workers(tmp_path, kafka_bootstrap)
    yield started
    started.kill_all()
