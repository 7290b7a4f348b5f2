"""Shared fixtures: a real Kafka broker, unique topic names and an admin client.

The broker is the one $KAFKA_BOOTSTRAP_SERVERS names, else one started for the run.  Under
pytest-xdist every worker process is a session of its own: the controller starts the
broker once, as the workers start, tells each where to find its addresses and stops it at
the end.
Without xdist (``-n0``, ``-p no:xdist``), or when every path given lies in ``tests/unit``,
the first test that needs a broker starts one for its session.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import kafka_broker
import pytest
from harness import Worker, wait_for
from kafka import KafkaAdminClient

UNIT_TESTS = Path(__file__).resolve().parent / "unit"
#: Where xdist workers find the run's broker (the path of its file, in workerinput).
RUN_BROKER = "runner_run_broker"
RUN_BROKER_PATH = pytest.StashKey[Path]()
#: How long a worker waits for the run's broker: the jars' first download included.
RUN_BROKER_TIMEOUT = 600


class BrokerAddresses(NamedTuple):
    """The listeners of a broker another process runs (the controller's, under xdist)."""

    bootstrap_servers: str
    sasl_bootstrap_servers: str


class RunBroker:
    """The run's broker under xdist, started by the controller on a thread of its own while
    the workers start (the broker dies with the thread that started it, so that thread
    also stops it).  Its addresses, or why it did not start, go to ``path`` as JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="run-broker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        broker = kafka_broker.Broker()
        try:
            broker.start()
        except Exception as exc:  # noqa: BLE001 - every test that needs it reports it
            self._publish({"error": str(exc)})
            return
        try:
            self._publish(BrokerAddresses(broker.bootstrap_servers,
                                          broker.sasl_bootstrap_servers)._asdict())
            self._stopping.wait()
        finally:
            broker.stop()

    def _publish(self, content: dict[str, str]) -> None:
        written = self.path.with_suffix(".tmp")
        written.write_text(json.dumps(content))
        written.replace(self.path)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(120)

    @staticmethod
    def addresses(path: Path) -> BrokerAddresses:
        """Wait for the broker whose file is ``path``; its addresses, or why it failed."""
        content = wait_for(lambda: path.is_file() and json.loads(path.read_text()),
                           RUN_BROKER_TIMEOUT, "the run's Kafka broker to start")
        if "error" in content:
            raise kafka_broker.BrokerError(content["error"])
        return BrokerAddresses(**content)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``long`` first, each followed by a short one.  xdist's load scheduling
    (with ``--maxschedchunk=1``) hands each worker two tests, then one more whenever one
    ends: so the long tests start at once, each on a worker of its own, and overlap the
    rest of the suite rather than end it."""
    long = [item for item in items if item.get_closest_marker("long")]
    rest = [item for item in items if not item.get_closest_marker("long")]
    paired = [item for pair in zip(long, rest) for item in pair]
    items[:] = paired + long[len(rest):] + rest[len(long):]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under xdist, in the controller: start the run's broker as the workers start."""
    config = session.config
    if (not config.pluginmanager.has_plugin("dsession") or os.environ.get(
            "KAFKA_BOOTSTRAP_SERVERS") or _only_unit_tests(config)):
        return
    directory = Path(tempfile.mkdtemp(prefix="runner-run-broker-"))
    config.add_cleanup(lambda: shutil.rmtree(directory, ignore_errors=True))
    config.add_cleanup(RunBroker(directory / "broker.json").stop)
    config.stash[RUN_BROKER_PATH] = directory / "broker.json"



def _only_unit_tests(config: pytest.Config) -> bool:
    """Whether every path the run was given lies in tests/unit (which needs no broker)."""
    paths = (config.invocation_params.dir / arg.split("::")[0] for arg in config.args)
    return all(path.resolve().is_relative_to(UNIT_TESTS) for path in paths)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # xdist.workermanage.WorkerController
    """Tell an xdist worker where to find the run's broker, if the controller runs one."""
    path = node.config.stash.get(RUN_BROKER_PATH, None)
    if path is not None:
        node.workerinput[RUN_BROKER] = str(path)


@pytest.fixture(scope="session")
def session_broker(
        request: pytest.FixtureRequest) -> Iterator[kafka_broker.Broker | BrokerAddresses | None]:
    """The broker run for the session (or, under xdist, for the run); None when
    $KAFKA_BOOTSTRAP_SERVERS names one."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    shared = getattr(request.config, "workerinput", {}).get(RUN_BROKER)
    if shared:
        yield RunBroker.addresses(Path(shared))
        return
    with kafka_broker.Broker() as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(session_broker: kafka_broker.Broker | BrokerAddresses | None) -> str:
    """The bootstrap address of $KAFKA_BOOTSTRAP_SERVERS, else of a broker run for the session."""
    return session_broker.bootstrap_servers if session_broker else os.environ[
        "KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """The root logger's handlers and levels as they were before the test: a test that calls
    ``logs.setup`` must not leave a handler writing to a stream its capture has closed."""
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    handlers, levels = list(root.handlers), (root.level, kafka.level)
    yield
    for handler in set(root.handlers) - set(handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(levels[0])
    kafka.setLevel(levels[1])


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
