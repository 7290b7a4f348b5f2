"""Operating-system helpers: locks, the pidfile, daemonizing, children, signals, titles.

Fork rules, which every process of the runner follows:

* Nothing that holds a thread, a socket or a lock survives ``fork()``: the main
  process holds none of them (no thread, no Kafka client, no LevelDB handle),
  and a slot creates its own after the fork.  The one exception is a slot's
  listening web socket (see :func:`listen`): the main process binds it and each
  process of that slot inherits it, a file descriptor that no thread or client
  state comes with; every other child closes it.  Forking is explicit
  (:func:`fork_context`), whatever Python's default start method is.
* Nothing a slot starts may outlive it.  The main process and every slot are
  child subreapers: an orphan anywhere below a slot is re-parented to that
  slot, and when the slot exits, everything below it is re-parented to the
  main process.  So every child of the main process that is not a slot (or
  the app check) is something a slot left behind, and is killed.  Each slot
  also leads its own process group and dies with the main process
  (``PR_SET_PDEATHSIG``); :func:`spawn` gives an agent's subprocesses the
  same rule towards the slot.
"""

import contextlib
import ctypes
import errno
import faulthandler
import fcntl
import json
import logging
import multiprocessing
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import EX_SOFTWARE, CannotCreate, CannotFork, DiskError, ResourceBusy, RunnerError

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


#: Files and directories the runner makes are its own: ``umask`` 077 (see :func:`private_files`).
PRIVATE_UMASK = 0o077


def private_files() -> None:
    """From now on, files and directories this process and its children make are readable
    by their owner only: pidfile, locks, status, identity, LevelDB stores, log file."""
    os.umask(PRIVATE_UMASK)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Report an OSError raised while the block writes ``path`` (a full disk) as one line."""
    try:
        yield
    except OSError as exc:
        raise DiskError(f'cannot write {path}: {exc.strerror or exc}') from None


def open_own(path: Path, flags: int, what: str) -> int:
    """Open (or create) a file the runner writes, never through a symbolic link: one
    planted by another user would make it write wherever the link points."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _cannot_use(what, path, exc) from None


def read_own(path: Path, what: str) -> str | None:
    """The text of a file the runner wrote (the status file), never read through a
    symbolic link (CannotCreate, as :func:`open_own` says); None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _cannot_use(what, path, exc) from None
    with os.fdopen(fd, errors='replace') as file:
        return file.read()


def _cannot_use(what: str, path: str | Path, exc: OSError) -> CannotCreate:
    reason = 'it is a symbolic link' if exc.errno == errno.ELOOP else exc.strerror
    return CannotCreate(f'cannot use {what} {path}: {reason}')


class Pidfile:
    """Holds an exclusive ``flock`` on the file for as long as this process runs,
    so a file left behind by a crash is harmless."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self.fd: int | None = None

    def acquire(self) -> None:
        """Write our pid, or raise AlreadyRunning if a live process holds the file."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CannotCreate(f'cannot use pidfile {self.path}: {exc.strerror}') from None
        fd = open_own(self.path, os.O_RDWR | os.O_CREAT, 'pidfile')
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.path, running_pid(self.path)) from None
        self.fd = fd
        self.rewrite()

    def rewrite(self) -> None:
        """Record the current pid (after daemonizing changed it)."""
        with writing(self.path):
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f'{os.getpid()}\n'.encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def running_pid(path: str | Path) -> int | None:
    """The pid in ``path`` if that process still holds the file's lock, else None; a
    pidfile that is a symbolic link is refused (CannotCreate), never followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _cannot_use('pidfile', path, exc) from None
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

    def acquire(self, raise_if_held: bool = True) -> bool:
        """Lock the directory.  If another process holds it: raise ResourceBusy naming its
        pid, or return False (to try again later) when not ``raise_if_held``."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResourceBusy(f'cannot use data directory {self.path}: {exc.strerror}') from None
        fd = open_own(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 'lock file')
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or 'unknown'
            os.close(fd)
            if not raise_if_held:
                return False
            raise ResourceBusy(f'data directory {self.path} is in use by pid {holder}') from None
        self._fd = fd
        with writing(self.path / LOCK_NAME):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def stable_identity(directory: Path) -> str:
    """The identity kept in ``directory`` (created once, then read on every start), so
    whatever starts from the same data directory is the same member of its group.

    A new identity is on disk before it is used, so a crash never leaves a file that
    differs from what was used.  A blank file (what a crash could leave before this
    was so) counts as missing: a missing file is opened as a blank one, never through a
    link (a link there is refused, as for every file of the runner).
    """
    path = Path(directory) / 'identity'
    with open(open_own(path, os.O_RDONLY | os.O_CREAT, 'identity file')) as file:
        identity = file.read().strip()
    if not identity:
        identity = uuid.uuid4().hex
        replace_file(path, identity + '\n', durable=True)
    return identity


def replace_file(path: Path, text: str, durable: bool = False) -> None:
    """Replace ``path`` by ``text`` in one step: a fresh scratch file (created, never
    opened through a link) is written, then renamed over ``path`` (which replaces a
    link there rather than following it).  ``durable``: both are synced, so the new
    text survives a crash."""
    scratch = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    scratch.unlink(missing_ok=True)
    fd = open_own(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 'scratch file')
    try:
        with writing(path), os.fdopen(fd, 'w') as file:
            file.write(text)
            if durable:
                file.flush()
                os.fsync(file.fileno())
    except DiskError:
        scratch.unlink(missing_ok=True)
        raise
    os.replace(scratch, path)
    if durable:
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# -- listening sockets ------------------------------------------------------------

#: Connections waiting in the kernel to be accepted by a web server.
LISTEN_BACKLOG = 128


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` (port 0: one the system picks); a port in
    use or an address that cannot be listened on is ResourceBusy, in one line."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise ResourceBusy(f'web port {host}:{port} is already in use') from None
        raise ResourceBusy(f'cannot listen on {host}:{port}: {exc.strerror or exc}') from None
    except OverflowError:           # a port beyond 65535
        listener.close()
        raise ResourceBusy(f'cannot listen on {host}:{port}: no such port') from None
    return listener


# -- daemonizing ------------------------------------------------------------------


def detach() -> None:
    """Continue in a grandchild without a controlling terminal (``--detach``); the
    calling process exits 0.  The working directory is kept: ``-A`` imports from it."""
    sys.stdout.flush()
    sys.stderr.flush()
    if fork() > 0:
        os._exit(0)
    os.setsid()
    if fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


# -- children ---------------------------------------------------------------------


def fork() -> int:
    """``os.fork()``; CannotFork, one line, when no process can be made (no memory, too
    many processes: ``EAGAIN``)."""
    try:
        return os.fork()
    except OSError as exc:
        raise CannotFork(f'no process can be forked: {exc.strerror or exc}') from None


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
    """Make this process a slot: its own process group, a child subreaper (so what it
    starts stays below it, see the fork rules), and its pid in ``RUNNER_SLOT_PID``."""
    os.setpgid(0, 0)
    become_subreaper()
    os.environ[SLOT_ENV] = str(os.getpid())


#: What :func:`spawn`'s child runs first, in place of the program: ask the kernel for KILL
#: when the spawning thread dies, exit if it already has, then become the program.  Run
#: after exec, in a Python of its own: nothing runs between fork and exec, where Python
#: code (``preexec_fn``) can deadlock a threaded process.
_DIE_WITH_PARENT = ('import ctypes, os, sys\n'
                    f'ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, {int(signal.SIGKILL)})\n'
                    'os.getppid() == int(sys.argv[1]) or os._exit(1)\n'
                    'os.execvp(sys.argv[2], sys.argv[3:])\n')


def spawn(args: Sequence[str] | str, **popen: Any) -> subprocess.Popen:
    """Start a subprocess from an agent; it is killed when the slot dies, even by KILL.

    Takes the arguments of :class:`subprocess.Popen` (but ``preexec_fn`` and a session
    or process group of its own).  The kill is tied to the thread that calls this (Linux
    semantics), so call it from the agent's thread.  A program that cannot be found
    raises FileNotFoundError here, as with Popen.
    """
    if popen.get('preexec_fn') is not None:
        raise ValueError('spawn() runs nothing between fork and exec: no preexec_fn')
    if popen.get('start_new_session') or popen.get('process_group') is not None:
        raise ValueError('spawn() keeps the subprocess in the slot\'s process group')
    argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
    if popen.pop('shell', False):
        argv = ['/bin/sh', '-c', *argv]
    program = os.fsdecode(popen.pop('executable', None) or argv[0])
    path = (popen.get('env') or os.environ).get('PATH', os.defpath)
    if shutil.which(program, path=path) is None:
        raise FileNotFoundError(errno.ENOENT, 'No such file or directory', program)
    return subprocess.Popen([sys.executable, '-I', '-S', '-c', _DIE_WITH_PARENT,
                             str(os.getpid()), program, *map(os.fsdecode, argv)], **popen)


def children(parent: int) -> dict[int, tuple[str, int, int]]:
    """The children of ``parent`` (read from ``/proc``): pid → (state letter, process group,
    session)."""
    found = {}
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            stat = _stat(entry.name)
            if stat is not None and int(stat[1]) == parent:
                found[int(entry.name)] = (stat[0], int(stat[2]), int(stat[3]))
    return found


def reap(pid: int) -> None:
    """Collect the exit status of child ``pid`` if it has exited; never blocks."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def reap_adopted() -> None:
    """Reap exited orphans this subreaper adopted: children outside its process group that
    lead neither a group nor a session.

    A child this process started itself is in its group, or leads a group or a
    session of its own (``start_new_session``, ``process_group``): its owner
    waits for it, and reaping it here would steal its exit status.  An orphan
    that leads its own session (``setsid cmd &``) cannot be told apart from
    such a child, so it is left until this process exits.
    """
    try:
        if os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            return
    except ChildProcessError:
        return
    group = os.getpgrp()
    for pid, (state, pgrp, session) in children(os.getpid()).items():
        if state == 'Z' and pgrp != group and pid not in (pgrp, session):
            reap(pid)


def _stat(pid: str) -> list[str] | None:
    """Fields after the command name in ``/proc/PID/stat``: state, ppid, pgrp, ..."""
    try:
        text = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    return text.rsplit(')', 1)[1].split()


def kill_quietly(pid: int, signum: signal.Signals = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def kill_group(pgid: int, signum: signal.Signals = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def fork_context() -> multiprocessing.context.BaseContext:
    """Forking is explicit: Python 3.14 changes the default start method."""
    return multiprocessing.get_context('fork')


class ChildFailed(Exception):
    """What the function of a :class:`ChildCall` raised, with its exit code (the
    RunnerError's, else EX_SOFTWARE); or, with ``code`` None, why the child gave no
    answer, said as a predicate ("did not finish within 5s")."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


#: The longest message a child call sends back (it must fit in the pipe).
MAX_REPLY = 16 * 1024


class ChildCall:
    """``function()`` run in a forked child; the parent awaits its JSON-able result
    without blocking: it selects on :attr:`fd` (readable once the child has exited),
    then takes :meth:`result`; past :attr:`deadline` it calls :meth:`cancel`.

    The child dies with the parent (``PR_SET_PDEATHSIG``), ignores ``INT`` (the
    parent decides what Ctrl-C does to it), and closes ``close`` first, so it holds
    no lock of the parent's, such as the pidfile's.
    """

    def __init__(self, function: Callable[[], Any], timeout: float,
                 close: Iterable[int] = ()) -> None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = fork()
            if pid == 0:
                _run_child(function, write_fd, parent, [read_fd, *close])
        except CannotFork:
            os.close(read_fd)
            os.close(write_fd)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write_fd)
        self.pid: int | None = pid
        self.deadline = time.monotonic() + timeout
        self._pipe = read_fd
        #: A pidfd: readable once the child has exited.
        self.fd = os.pidfd_open(pid)

    def result(self) -> Any:
        """The child's return value, once :attr:`fd` is readable; ChildFailed if it
        raised or died without answering."""
        _, status = os.waitpid(self.pid, 0)   # it has exited: this does not block
        os.set_blocking(self._pipe, False)
        chunks = []
        try:
            while chunk := os.read(self._pipe, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        data = b''.join(chunks)
        self._close()
        self.pid = None
        if not data:
            raise ChildFailed(f'{_describe_status(status)} without answering')
        try:
            reply = json.loads(data)
        except ValueError:
            raise ChildFailed(f'answered {data[:80]!r}') from None
        if 'error' in reply:
            raise ChildFailed(*reply['error'])
        return reply['result']

    def cancel(self) -> None:
        """Kill the child unless its result was taken; a child that is not gone at once
        is left to the caller's sweep of its children."""
        if self.pid is not None:
            kill_quietly(self.pid)
            reap(self.pid)
            self.pid = None
            self._close()

    def _close(self) -> None:
        for fd in (self._pipe, self.fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _run_child(function: Callable[[], Any], write_fd: int, parent: int,
               close: list[int]) -> None:
    """The child side of a :class:`ChildCall`; never returns."""
    try:
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        die_with_parent(parent)
        reset_signals(ignore=(signal.SIGINT,))
        try:
            reply = {'result': function()}
        except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent
            message = str(exc) if isinstance(exc, RunnerError) else f'{type(exc).__name__}: {exc}'
            reply = {'error': [message, getattr(exc, 'exit_code', EX_SOFTWARE)]}
        os.write(write_fd, _reply_bytes(reply))
    finally:
        os._exit(0)


def _reply_bytes(reply: dict[str, Any]) -> bytes:
    """The reply as JSON of at most MAX_REPLY bytes (a long error message is cut), so the
    child never blocks on a full pipe the parent reads only after it has exited."""
    data = json.dumps(reply).encode()
    if len(data) > MAX_REPLY and 'error' in reply:
        message, code = reply['error']
        while len(data) > MAX_REPLY:
            message = message[:len(message) // 2]
            data = json.dumps({'error': [message + ' ...', code]}).encode()
    return data[:MAX_REPLY] if len(data) > MAX_REPLY else data


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f'was killed by signal {os.WTERMSIG(status)}'
    return f'exited with code {os.waitstatus_to_exitcode(status)}'


def call_in_child(function: Callable[[], Any], timeout: float) -> Any:
    """Run ``function`` in a forked child (see :class:`ChildCall`) and wait for its result,
    at most ``timeout`` seconds: then the child is killed and ChildFailed raised.

    Lets a process try something (import the app) without keeping anything it
    leaves behind.
    """
    call = ChildCall(function, timeout)
    try:
        readable, _, _ = select.select([call.fd], [], [], timeout)
        if not readable:
            raise ChildFailed(f'did not finish within {timeout:g}s')
        return call.result()
    finally:
        call.cancel()


# -- signals ----------------------------------------------------------------------


def reset_signals(ignore: Iterable[signal.Signals] = ()) -> None:
    """In a child just forked with every signal blocked: no wakeup fd, the default
    action again for each signal that had a Python handler, ``ignore`` ignored; then
    every signal unblocked."""
    signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        if callable(signal.getsignal(signum)):
            signal.signal(signum, signal.SIG_DFL)
    for signum in ignore:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


class SignalQueue:
    """Signals (and other events) as a queue that a process's main loop handles in order.

    Handlers only enqueue (``queue.SimpleQueue.put`` is safe inside a signal
    handler); all real work happens in the main loop, between its other steps.
    """

    def __init__(self) -> None:
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._names: dict[int, str] = {}

    def install(self, mapping: Mapping[signal.Signals, str], wakeup_fd: int | None = None
                ) -> None:
        """Route each signal in ``mapping`` to its event name (main thread only).

        Python runs a signal's handler once however often the signal arrived before it
        could (two TTINs back to back would add one slot).  With ``wakeup_fd`` (the
        write end of a non-blocking pipe) every signal delivered is counted instead:
        the interpreter writes a byte per signal there, the handlers do nothing, and
        :meth:`feed` turns the bytes read from the pipe into events, one each.  (Signals
        of one kind that arrive while the process cannot take them, such as while it
        is not scheduled, are merged by the kernel: plain POSIX signals do not queue.)
        """
        self._names = {int(signum): event for signum, event in mapping.items()}
        if wakeup_fd is not None:
            signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
        for signum, event in mapping.items():
            signal.signal(signum, _counted_by_wakeup if wakeup_fd is not None else
                          lambda _signum, _frame, event=event: self._events.put(event))

    def feed(self, signals: bytes) -> None:
        """Queue an event for every signal number in ``signals`` (read from the wakeup
        pipe), in the order they arrived."""
        for signum in signals:
            event = self._names.get(signum)
            if event is not None:
                self._events.put(event)

    def put(self, event: object) -> None:
        """Queue an event from any thread (a failure report, for example)."""
        self._events.put(event)

    def get(self, timeout: float) -> object | None:
        """The next event, or ``None`` after ``timeout`` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None


def _counted_by_wakeup(_signum: int, _frame: Any) -> None:
    """A signal's handler where the wakeup pipe counts it (see :class:`SignalQueue`)."""


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


def stack_of(thread: threading.Thread) -> str:
    """Where ``thread`` is now, as a traceback (most recent call last)."""
    frame = sys._current_frames().get(thread.ident)
    if frame is None:
        return '(the thread has ended)\n'
    return ''.join(traceback.format_stack(frame))


# -- titles -----------------------------------------------------------------------


def set_title(title: str) -> None:
    """The process title ``ps`` shows, such as ``runner: slot 1 proj``."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # optional: without it, log lines still carry the role
        return
    setproctitle(title)
