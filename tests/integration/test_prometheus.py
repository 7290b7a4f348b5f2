"""A real Prometheus scrapes the slots through the target file the main process writes:
records processed reach what was sent, lag returns to 0, and a slot added with TTIN is
found without touching Prometheus's configuration."""

import json
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from apps import forward_app, outputs
from harness import REPO, debian_command, free_port, produce, wait_for

RECORDS = 200


def prometheus_binary() -> str:
    """Debian's prometheus, installed when missing (as root); the test is skipped, with the
    reason, where it cannot be."""
    return debian_command('prometheus')


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, query) of contrib/grafana/runner.json, its variables filled in."""
    dashboard = json.loads((REPO / 'contrib' / 'grafana' / 'runner.json').read_text())
    return [(panel['title'], target['expr'].replace('$app', '.*').replace('$job', 'runner'))
            for panel in dashboard['panels'] for target in panel['targets']]


class Prometheus:
    """A Prometheus server on a free port, scraping every second the targets listed in
    ``targets`` (a ``file_sd_configs`` file), keeping its data in ``directory``."""

    def __init__(self, binary: str, directory: Path, targets: Path) -> None:
        self.port = free_port()
        config = directory / 'prometheus.yml'
        config.write_text(json.dumps({     # YAML is a superset of JSON
            'global': {'scrape_interval': '1s', 'scrape_timeout': '1s'},
            'scrape_configs': [{'job_name': 'runner', 'file_sd_configs': [
                {'files': [str(targets)], 'refresh_interval': '1s'}]}]}))
        self.log_path = directory / 'prometheus.log'
        with open(self.log_path, 'w') as log:
            self.proc = subprocess.Popen(
                [binary, f'--config.file={config}', f'--storage.tsdb.path={directory / "tsdb"}',
                 f'--web.listen-address=127.0.0.1:{self.port}'],
                stdout=log, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{self.port}/-/ready', timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expression: str) -> list[dict]:
        """The result of an instant query: one ``{'metric': labels, 'value': [t, text]}``
        per series."""
        url = (f'http://127.0.0.1:{self.port}/api/v1/query?'
               + urllib.parse.urlencode({'query': expression}))
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.load(response)
        assert answer['status'] == 'success', answer
        return answer['data']['result']

    def value(self, expression: str) -> float | None:
        """The value of a query giving one series, else None."""
        result = self.query(expression)
        return float(result[0]['value'][1]) if len(result) == 1 else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def prometheus(tmp_path):
    """Start a Prometheus for the test's ``runner.pid.targets.json``; always stopped."""
    binary = prometheus_binary()
    directory = tmp_path / 'prometheus'
    directory.mkdir()
    server = Prometheus(binary, directory, tmp_path / 'runner.pid.targets.json')
    try:
        wait_for(lambda: server.ready() or server.proc.poll() is not None, 60,
                 'Prometheus to be ready')
        assert server.proc.poll() is None, server.log_path.read_text()[-2000:]
        yield server
    finally:
        server.stop()


def test_prometheus_scrapes_every_slot_through_the_target_file_ttin_included(
        tmp_path, names, workers, kafka_bootstrap, prometheus):
    pidfile = tmp_path / 'runner.pid'
    worker = workers(forward_app(tmp_path, names, partitions=4),
                     extra=('-w', '2', '--pidfile', str(pidfile)))
    worker.wait_ready(slot=0)
    worker.wait_ready(slot=1)
    worker.split_between(2)                      # settled: no rebalance under the records
    wait_for(lambda: prometheus.value('count(up == 1)') == 2, 60,
             'Prometheus to scrape both slots')

    produce(kafka_bootstrap, names['source'], ((f'k{i}', i) for i in range(RECORDS)))
    outputs(kafka_bootstrap, names['sink'], RECORDS)
    wait_for(lambda: prometheus.value('sum(runner_records_processed_total)') == RECORDS, 60,
             f'Prometheus to count {RECORDS} records processed')
    wait_for(lambda: prometheus.value('count(runner_consumer_lag_records)') == 4
             and prometheus.value('max(runner_consumer_lag_records)') == 0, 60,
             'the lag of the four partitions to be 0 in Prometheus')
    by_slot = {series['metric']['runner_slot'] for series in
               prometheus.query('sum by (runner_slot) (runner_records_processed_total)')}
    assert by_slot == {'0', '1'}
    for title, expression in dashboard_queries():      # Prometheus takes every one
        assert isinstance(prometheus.query(expression), list), title

    worker.signal(signal.SIGTTIN)
    wait_for(lambda: prometheus.value('runner_slot_ready{runner_slot="2"}') == 1, 90,
             "the new slot's series in Prometheus")
    assert prometheus.value('runner_kafka_reachable{runner_slot="2"}') == 1
    wait_for(lambda: prometheus.value('sum(runner_rebalance_handover_seconds_count)')
             and prometheus.value('sum(runner_partitions_kept_total)'), 60,
             'the handover of the partitions the new slot took, and those kept')
    assert prometheus.value('sum(runner_records_processed_total)') == RECORDS
