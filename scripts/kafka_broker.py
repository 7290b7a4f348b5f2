#!/usr/bin/env python3
"""Run a real single-node Apache Kafka broker (KRaft mode) for tests and demos.

Library: ``ensure_jars()`` fetches Kafka's jars with Maven, ``Broker`` runs a broker
on free loopback ports: a PLAINTEXT listener (``bootstrap_servers``) and a SASL_PLAINTEXT
one with the PLAIN mechanism (``sasl_bootstrap_servers``, user ``SASL_USERNAME`` with
password ``SASL_PASSWORD``).  Command line::

    python scripts/kafka_broker.py fetch            # fetch the jars, print their directory
    python scripts/kafka_broker.py start --dir DIR  # start a detached broker, print its address
    python scripts/kafka_broker.py stop --dir DIR   # stop the broker started in DIR
    python scripts/kafka_broker.py run [--] CMD ... # run CMD with KAFKA_BOOTSTRAP_SERVERS set

Needs ``java`` and, to fetch the jars once, ``mvn``; waiting for the broker uses
kafka-python.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import fcntl
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

DEFAULT_VERSION = "4.3.1"
# Kafka's pom brings slf4j-api and log4j-core but no binding between them; without
# this one the broker logs nothing.  2.25.4 is the log4j-core that Kafka 4.3.1 uses.
LOG4J_SLF4J_VERSION = "2.25.4"
JVM_OPTIONS = ["-Xmx768m", "-Xms256m", "-XX:+UseG1GC"]
POLL_SECONDS = 0.2
KILL_WAIT_SECONDS = 10.0
PR_SET_PDEATHSIG = 1
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")  # Debian's mvn prints them even with -B
ERROR_PATTERNS = (re.compile(r"\bERROR\b"), re.compile(r"\bError\b|Exception"))

PROPERTIES_FILE = "server.properties"
LOG_CONFIG_FILE = "log4j2.properties"
LOG_FILE = "server.log"
OUTPUT_FILE = "kafka.out"
DATA_DIR = "data"
BOOTSTRAP_FILE = "bootstrap"
PID_FILE = "broker.pid"
#: The one user of the SASL_PLAINTEXT listener (PLAIN mechanism); a test credential only.
SASL_USERNAME = "runner"
SASL_PASSWORD = "runner-test-secret"

POM_TEMPLATE = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>runner.local</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j_slf4j_version}</version>
    </dependency>
  </dependencies>
</project>
"""

LOG_CONFIG_TEMPLATE = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
"""


class BrokerError(RuntimeError):
    """An expected failure: a missing tool, a failed download, a broker that won't start."""

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(f"{summary}\n{details}" if details else summary)
        self.summary = summary
        self.details = details

    def one_line(self) -> str:
        """The summary plus the first error in the details (or their last line)."""
        lines = [line.strip() for line in self.details.splitlines() if line.strip()]
        if not lines:
            return self.summary
        first = _first_error(lines)
        if first is None:
            return f"{self.summary}: {lines[-1]}"
        cause = lines[first + 1 : first + 2]  # the exception under an ERROR record
        if cause and cause[0].startswith(("[", "at ")):
            cause = []
        return f"{self.summary}: {' '.join([lines[first], *cause])}"


def _first_error(lines: list[str]) -> int | None:
    """The index of the first ERROR line, else of the first Error/Exception line."""
    for pattern in ERROR_PATTERNS:
        for index, line in enumerate(lines):
            if pattern.search(line):
                return index
    return None


def _require(tool: str) -> str:
    """The path of `tool` on PATH, or a BrokerError saying it is missing."""
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"{tool!r} not found on PATH; the Kafka broker needs Java 17+ and Maven")
    return path


def cache_dir(version: str = DEFAULT_VERSION) -> Path:
    """Where the jars are cached: $RUNNER_KAFKA_CACHE, else ~/.cache/runner/kafka-VERSION."""
    configured = os.environ.get("RUNNER_KAFKA_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "runner" / f"kafka-{version}"


def ensure_jars(version: str = DEFAULT_VERSION) -> Path:
    """Return a directory holding Kafka `version`'s broker and tools jars, fetching them once."""
    cache = cache_dir(version)
    libs, marker = cache / "libs", cache / "libs.complete"
    if _marker_matches(marker, version):
        return libs
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _marker_matches(marker, version):
            _fetch_jars(cache, libs, version)
            marker.write_text(version + "\n")
    return libs


def _marker_matches(marker: Path, version: str) -> bool:
    """Whether `marker` records a finished fetch of `version`."""
    return marker.is_file() and marker.read_text().strip() == version


def _fetch_jars(cache: Path, libs: Path, version: str) -> None:
    """Run Maven to copy Kafka's runtime dependencies into `libs`."""
    mvn = _require("mvn")
    _require("java")
    shutil.rmtree(libs, ignore_errors=True)
    pom = cache / "pom.xml"
    pom.write_text(POM_TEMPLATE.format(version=version, log4j_slf4j_version=LOG4J_SLF4J_VERSION))
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        output = ANSI_CODES.sub("", result.stdout + result.stderr)
        output = "\n".join(output.splitlines()[-40:])
        raise BrokerError(f"mvn could not fetch Kafka {version} (exit {result.returncode})", output)


class Broker:
    """A single-node KRaft broker on free loopback ports; use it as a context manager.

    `workdir` holds the config, data and logs; a temporary one is made (and removed
    by `stop`) when it is None.  With `die_with_parent` (Linux), the broker is killed
    when the thread that started it dies, even by SIGKILL.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        version: str = DEFAULT_VERSION,
        *,
        die_with_parent: bool = True,
    ) -> None:
        self.workdir = Path(workdir).resolve() if workdir is not None else None
        self.version = version
        self.die_with_parent = die_with_parent
        self._owns_workdir = workdir is None
        self._process: subprocess.Popen[bytes] | None = None
        self._bootstrap: str | None = None
        self._sasl_bootstrap: str | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def bootstrap_servers(self) -> str:
        """The broker's address, ``127.0.0.1:PORT``."""
        if self._bootstrap is None:
            raise BrokerError("the Kafka broker is not running")
        return self._bootstrap

    @property
    def sasl_bootstrap_servers(self) -> str:
        """The address of the SASL_PLAINTEXT listener (PLAIN: ``SASL_USERNAME``,
        ``SASL_PASSWORD``), ``127.0.0.1:PORT``."""
        if self._sasl_bootstrap is None:
            raise BrokerError("the Kafka broker is not running")
        return self._sasl_bootstrap

    @property
    def pid(self) -> int:
        """The process id of the broker's JVM."""
        if self._process is None:
            raise BrokerError("the Kafka broker is not running")
        return self._process.pid

    def start(self, timeout: float = 90) -> str:
        """Start the broker and wait up to `timeout` s for it to answer; return its address.

        The jars are fetched first if needed; that time is not part of `timeout`.
        """
        if self._process is not None:
            raise BrokerError("the Kafka broker is already started")
        java, libs = _require("java"), ensure_jars(self.version)
        deadline = time.monotonic() + timeout
        workdir = self._prepare_workdir()
        port = free_port(3)
        address = f"127.0.0.1:{port}"
        try:
            _write_config(workdir, port, port + 1, port + 2)
            _format_storage(java, libs, workdir)
            self._process = _launch(java, libs, workdir, self.die_with_parent)
            _wait_until_ready(address, self._process, workdir, deadline)
        except BaseException:
            self.stop()
            raise
        self._bootstrap, self._sasl_bootstrap = address, f"127.0.0.1:{port + 2}"
        return address

    def restart(self, down: float | Callable[[], object] = 0.0, timeout: float = 90) -> None:
        """Stop the broker (SIGTERM), stay away ``down`` seconds (or until ``down()``
        returns, even by raising), start it again on the same ports with its data kept,
        and wait up to `timeout` s for it to answer."""
        process, address = self._process, self.bootstrap_servers
        if process is None or self.workdir is None:
            raise BrokerError("the Kafka broker is not running")
        _terminate(process.pid, lambda: process.poll() is None, 30)
        try:
            down() if callable(down) else time.sleep(down)
        finally:
            self._process = _launch(_require("java"), ensure_jars(self.version), self.workdir,
                                    self.die_with_parent)
            _wait_until_ready(address, self._process, self.workdir, time.monotonic() + timeout)

    def stop(self, timeout: float = 30) -> None:
        """Stop the broker: SIGTERM, SIGKILL after `timeout` s; remove a workdir it made."""
        process, self._process = self._process, None
        self._bootstrap = self._sasl_bootstrap = None
        if process is not None:
            _terminate(process.pid, lambda: process.poll() is None, timeout)
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _prepare_workdir(self) -> Path:
        """Create the workdir, or clear the data and log of a previous run in it."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="runner-kafka-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.workdir / DATA_DIR, ignore_errors=True)
        (self.workdir / LOG_FILE).unlink(missing_ok=True)
        return self.workdir


def free_port(count: int = 1) -> int:
    """A free loopback port followed by ``count - 1`` more free ones (e.g. for slots on PORT+i).

    Ports are drawn below the kernel's ephemeral range, so an outgoing connection
    (a Kafka client, an HTTP request) cannot take one between this choice and its use.
    """
    low, high = _unassigned_range()
    while True:
        port = random.randrange(low, high - count)
        if all(_port_is_free(port + i) for i in range(count)):
            return port


def _unassigned_range() -> tuple[int, int]:
    """Ports the kernel never hands out on its own: from 10000 to its ephemeral range."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return (10000, first) if first > 12000 else (first - 2000, first)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _write_config(workdir: Path, port: int, controller_port: int, sasl_port: int) -> None:
    """Write the broker's server.properties and log4j2 config into `workdir`."""
    sasl = f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}"
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        f",{sasl}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},{sasl}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        ",SASL_PLAINTEXT:SASL_PLAINTEXT",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{SASL_USERNAME}" password="{SASL_PASSWORD}" '
            f'user_{SASL_USERNAME}="{SASL_PASSWORD}";'
        ),
        "log.dirs": str(workdir / DATA_DIR),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    (workdir / PROPERTIES_FILE).write_text("\n".join(lines) + "\n")
    log_config = LOG_CONFIG_TEMPLATE.format(log_file=workdir / LOG_FILE)
    (workdir / LOG_CONFIG_FILE).write_text(log_config)


def new_cluster_id() -> str:
    """A random cluster id as Kafka makes them: 16 bytes, URL-safe base64, no padding."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # would read as an option on a command line
            return cluster_id


def _format_storage(java: str, libs: Path, workdir: Path) -> None:
    """Format the log dir for a new single-node cluster, as kafka-storage.sh does."""
    command = [
        java,
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        new_cluster_id(),
        "-c",
        str(workdir / PROPERTIES_FILE),
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=workdir)
    if result.returncode != 0:
        raise BrokerError(
            f"formatting Kafka storage failed (exit {result.returncode})",
            result.stdout + result.stderr,
        )


def _launch(java: str, libs: Path, workdir: Path, die_with_parent: bool) -> subprocess.Popen[bytes]:
    """Start the broker JVM in its own session, output to the workdir."""
    command = [
        java,
        *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={workdir / LOG_CONFIG_FILE}",
        "-cp",
        f"{libs}/*",
        "kafka.Kafka",
        str(workdir / PROPERTIES_FILE),
    ]
    with open(workdir / OUTPUT_FILE, "wb") as output:
        return subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The only stdlib way to set PR_SET_PDEATHSIG; the hook calls just prctl and getppid.
            preexec_fn=_parent_death_hook() if die_with_parent else None,  # noqa: PLW1509
        )


def _parent_death_hook() -> Callable[[], None] | None:
    """A preexec_fn making the kernel SIGKILL the child when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def _wait_until_ready(
    address: str, process: subprocess.Popen[bytes], workdir: Path, deadline: float
) -> None:
    """Poll until the broker answers a metadata request; fail if it dies or time runs out."""
    while True:
        if process.poll() is not None:
            raise BrokerError(
                f"the Kafka broker exited with code {process.returncode} before it answered",
                _log_excerpt(workdir),
            )
        if _answers(address, deadline):
            return
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"the Kafka broker did not answer on {address} in time",
                _log_excerpt(workdir),
            )
        time.sleep(POLL_SECONDS)


def _answers(address: str, deadline: float) -> bool:
    """Whether the broker at `address` accepts connections and reports itself registered."""
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(1000 * min(5.0, max(0.5, deadline - time.monotonic())))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=address,
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except (KafkaError, OSError):
        return False
    try:
        return bool(admin.describe_cluster()["brokers"])
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _log_excerpt(workdir: Path, count: int = 40) -> str:
    """From the broker's log and console output: the first error on, else the tail."""
    excerpts = []
    for path in (workdir / LOG_FILE, workdir / OUTPUT_FILE):
        lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
        first = _first_error(lines)
        chosen = lines[first : first + count] if first is not None else lines[-count:]
        if chosen:
            excerpts.append(f"==> {path} <==\n" + "\n".join(chosen))
    return "\n".join(excerpts)


def _terminate(pid: int, alive: Callable[[], bool], timeout: float) -> None:
    """SIGTERM `pid`, wait up to `timeout` s for `alive()` to turn false, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, KILL_WAIT_SECONDS)):
        if not alive():
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_for(lambda: not alive(), wait):
            return
    raise BrokerError(f"the Kafka broker (pid {pid}) survived SIGKILL")


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` s pass; return whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def _runs_broker(pid: int, workdir: Path) -> bool:
    """Whether process `pid` is a live broker of `workdir` (a zombie counts as gone)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _signal_reaches(pid)
    return b"kafka.Kafka" in argv and os.fsencode(workdir / PROPERTIES_FILE) in argv


def _signal_reaches(pid: int) -> bool:
    """Whether a process `pid` exists (for systems without /proc)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        pass
    return True


def _read_pid(workdir: Path) -> int | None:
    """The pid recorded in `workdir`, if any."""
    try:
        return int((workdir / PID_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _cmd_fetch(args: argparse.Namespace) -> int:
    print(ensure_jars(args.version))
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    workdir = Path(args.dir).resolve()
    pid = _read_pid(workdir)
    if pid is not None and _runs_broker(pid, workdir):
        raise BrokerError(f"a Kafka broker already runs in {workdir} (pid {pid})")
    broker = Broker(workdir, args.version, die_with_parent=False)
    address = broker.start(args.timeout)
    (workdir / BOOTSTRAP_FILE).write_text(address + "\n")
    (workdir / PID_FILE).write_text(f"{broker.pid}\n")
    print(address)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    workdir = Path(args.dir).resolve()
    pid = _read_pid(workdir)
    if pid is None or not _runs_broker(pid, workdir):
        print(f"kafka_broker.py: no Kafka broker running in {workdir}", file=sys.stderr)
    else:
        _terminate(pid, lambda: _runs_broker(pid, workdir), args.timeout)
        print(
            f"kafka_broker.py: stopped the Kafka broker in {workdir} (pid {pid})",
            file=sys.stderr,
        )
    (workdir / PID_FILE).unlink(missing_ok=True)
    (workdir / BOOTSTRAP_FILE).unlink(missing_ok=True)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise BrokerError("run: no command given")
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return _run_command(command, dict(os.environ))
    with Broker(version=args.version) as broker:
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
        return _run_command(command, env)


def _run_command(command: list[str], env: dict[str, str]) -> int:
    """Run `command`, passing SIGTERM on to it; return a shell-style exit status."""
    try:
        process = subprocess.Popen(command, env=env)
    except OSError as err:
        raise BrokerError(f"cannot run {command[0]!r}: {err.strerror}") from err
    previous = signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        code = process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return code if code >= 0 else 128 - code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafka_broker.py", description="Run a single-node Kafka broker for tests and demos."
    )
    parser.add_argument(
        "--kafka-version",
        dest="version",
        default=DEFAULT_VERSION,
        help=f"Kafka version (default {DEFAULT_VERSION})",
    )
    commands = parser.add_subparsers(dest="name", required=True)
    commands.add_parser("fetch", help="fetch the jars, print their directory").set_defaults(
        handler=_cmd_fetch
    )
    start = commands.add_parser("start", help="start a detached broker, print its address")
    start.add_argument("--dir", required=True, help="directory for its config, data and logs")
    start.add_argument("--timeout", type=float, default=90, help="seconds to wait for it")
    start.set_defaults(handler=_cmd_start)
    stop = commands.add_parser("stop", help="stop the broker started with start --dir DIR")
    stop.add_argument("--dir", required=True)
    stop.add_argument("--timeout", type=float, default=30, help="seconds before SIGKILL")
    stop.set_defaults(handler=_cmd_stop)
    run = commands.add_parser("run", help="run CMD with KAFKA_BOOTSTRAP_SERVERS set")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    run.set_defaults(handler=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokerError as err:
        print(f"kafka_broker.py: error: {err.one_line()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
