"""Operating-system helpers: locks, the pidfile, daemonizing, children, signals, titles.

Fork rules, which every process of the runner follows:

* Nothing that holds a thread, a socket or a lock survives ``fork()``: the main
  process holds none of them (no thread, no Kafka client, no LevelDB handle),
  and a slot creates its own after the fork.  Forking is explicit
  (:func:`fork_context`), whatever Python's default start method is.
* Nothing a slot starts may outlive it.  The main process is a child subreaper
  (orphans below it are re-parented to it); each slot leads its own process
  group and dies with the main process (``PR_SET_PDEATHSIG``); :func:`spawn`
  gives an agent's subprocesses the same rule towards the slot; and every
  process started in a slot inherits ``RUNNER_SLOT_PID``, which names the slot
  even after a double fork and ``setsid``.
"""

import ctypes
import faulthandler
import fcntl
import json
import logging
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ResourceBusy

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SLOT_ENV = 'RUNNER_SLOT_PID'
LOCK_NAME = 'runner.lock'

_libc = ctypes.CDLL(None, use_errno=True)


# -- locks ------------------------------------------------------------------------


class AlreadyRunning(ResourceBusy):
    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(f'already running (pid {pid}, pidfile {path})')
        self.pid = pid


class Pidfile:
    """Holds an exclusive ``flock`` on the file for as long as this process runs,
    so a file left behind by a crash is harmless."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self.fd: int | None = None

    def acquire(self) -> None:
        """Write our pid, or raise AlreadyRunning if a live process holds the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.path, running_pid(self.path)) from None
        self.fd = fd
        self.rewrite()

    def rewrite(self) -> None:
        """Record the current pid (after daemonizing changed it)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f'{os.getpid()}\n'.encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def running_pid(path: str | Path) -> int | None:
    """The pid in ``path`` if that process still holds the file's lock, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors='replace').strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class DirLock:
    """An exclusive lock on a data directory, released when the holder exits (even by KILL).

    Slots never share a data directory: the second one to lock it fails.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the directory or raise ResourceBusy naming the pid that holds it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ResourceBusy(f'cannot use data directory {self.path}: {exc.strerror}') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or 'unknown'
            os.close(fd)
            raise ResourceBusy(f'data directory {self.path} is in use by pid {holder}') from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- daemonizing ------------------------------------------------------------------


def detach() -> None:
    """Continue in a grandchild without a controlling terminal (``--detach``); the
    calling process exits 0.  The working directory is kept: ``-A`` imports from it."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


# -- children ---------------------------------------------------------------------


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def become_subreaper() -> None:
    """Adopt the orphans of every descendant (Linux ``PR_SET_CHILD_SUBREAPER``)."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(parent: int, signum: signal.Signals = signal.SIGKILL) -> None:
    """Get ``signum`` when the parent dies; exit now if it already has."""
    _prctl(PR_SET_PDEATHSIG, int(signum))
    if os.getppid() != parent:
        os._exit(1)


def mark_slot() -> None:
    """Make this process a slot: its own process group, and its pid in the environment."""
    os.setpgid(0, 0)
    os.environ[SLOT_ENV] = str(os.getpid())


def spawn(args: Sequence[str] | str, **popen: Any) -> subprocess.Popen:
    """Start a subprocess from an agent; it is killed when the slot dies, even by KILL.

    Takes the arguments of :class:`subprocess.Popen`.  The kill is tied to the
    thread that calls this (Linux semantics), so call it from the agent's thread.
    """
    if popen.get('preexec_fn') is not None:
        raise ValueError('spawn() sets preexec_fn itself')
    if popen.get('start_new_session') or popen.get('process_group') is not None:
        raise ValueError('spawn() keeps the subprocess in the slot\'s process group')
    return subprocess.Popen(args, preexec_fn=_die_with(os.getpid()), **popen)  # noqa: PLW1509


def _die_with(parent: int) -> Callable[[], None]:
    def hook() -> None:
        die_with_parent(parent)
    return hook


def adopted_children(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (read from ``/proc``)."""
    found = []
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            stat = _stat(entry.name)
            if stat is not None and int(stat[1]) == parent:
                found.append(int(entry.name))
    return found


def slot_of(pid: int) -> int | None:
    """The slot pid a process belongs to: its environment, else its process group."""
    stat = _stat(str(pid))
    if stat is None:
        return None
    try:
        environ = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
    except OSError:
        environ = []
    for item in environ:
        if item.startswith(SLOT_ENV.encode() + b'='):
            return int(item.split(b'=', 1)[1] or 0) or None
    return int(stat[2])


def _stat(pid: str) -> list[str] | None:
    """Fields after the command name in ``/proc/PID/stat``: state, ppid, pgrp, ..."""
    try:
        text = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    return text.rsplit(')', 1)[1].split()


def kill_quietly(pid: int, signum: signal.Signals = signal.SIGKILL) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def kill_group(pgid: int, signum: signal.Signals = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def fork_context() -> multiprocessing.context.BaseContext:
    """Forking is explicit: Python 3.14 changes the default start method."""
    return multiprocessing.get_context('fork')


class ChildFailed(Exception):
    def __init__(self, kind: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code


def call_in_child(function: Callable[[], Any]) -> Any:
    """Run ``function`` in a forked child and return its JSON-able result.

    Lets the main process try something (import the app) without keeping
    anything it leaves behind.  An exception in the child is raised here as a
    ChildFailed with the exception's type name, message and exit code.
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    process = fork_context().Process(target=_send_result, args=(function, read_fd, write_fd))
    process.start()
    os.close(write_fd)
    with os.fdopen(read_fd, 'rb') as pipe:
        data = pipe.read()
    process.join()
    reply = json.loads(data or b'{"error": ["ChildFailed", "the child died"]}')
    if 'error' in reply:
        raise ChildFailed(*reply['error'])
    return reply['result']


def _send_result(function: Callable[[], Any], read_fd: int, write_fd: int) -> None:
    os.close(read_fd)
    try:
        reply = {'result': function()}
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent
        reply = {'error': [type(exc).__name__, str(exc), getattr(exc, 'exit_code', None)]}
    with os.fdopen(write_fd, 'wb') as pipe:
        pipe.write(json.dumps(reply).encode())
    os._exit(0)


# -- signals ----------------------------------------------------------------------


class SignalQueue:
    """Signals (and other events) as a queue that a process's main loop handles in order.

    Handlers only enqueue (``queue.SimpleQueue.put`` is safe inside a signal
    handler); all real work happens in the main loop, between its other steps.
    """

    def __init__(self) -> None:
        self._events: queue.SimpleQueue = queue.SimpleQueue()

    def install(self, mapping: Mapping[signal.Signals, str]) -> None:
        """Route each signal in ``mapping`` to its event name (main thread only)."""
        for signum, event in mapping.items():
            signal.signal(signum, lambda _signum, _frame, event=event: self._events.put(event))

    def put(self, event: object) -> None:
        """Queue an event from any thread (a failure report, for example)."""
        self._events.put(event)

    def get(self, timeout: float) -> object | None:
        """The next event, or ``None`` after ``timeout`` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None


def dump_stacks(tag: str) -> None:
    """Log every thread's stack (``faulthandler``) as one block tagged with ``tag`` and the pid.

    The dump goes through a scratch file so the block reaches the log in one
    piece even when several processes dump into the same file at once.
    """
    with tempfile.TemporaryFile('w+') as scratch:
        faulthandler.dump_traceback(file=scratch, all_threads=True)
        scratch.seek(0)
        stacks = scratch.read()
    pid = os.getpid()
    log.warning('--- stack dump of %s pid %d ---\n%s--- end of stack dump of %s pid %d ---',
                tag, pid, stacks, tag, pid)


# -- titles -----------------------------------------------------------------------


def set_title(title: str) -> None:
    """The process title ``ps`` shows, such as ``runner: slot 1 proj``."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # optional: without it, log lines still carry the role
        return
    setproctitle(title)
