"""Process-tree rules: nothing a slot starts may outlive it.

* The main process is a child subreaper: orphans of a slot's descendants are
  re-parented to it, so it can reap them and kill what a dead slot left.
* Each slot leads its own process group and dies with the main process
  (``PR_SET_PDEATHSIG``); :func:`spawn` gives an agent's subprocesses the same
  parent-death rule towards the slot.
* Every process started inside a slot inherits ``RUNNER_SLOT_PID``, which
  identifies the slot even after a double fork and ``setsid``.
"""

import ctypes
import json
import multiprocessing
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SLOT_ENV = 'RUNNER_SLOT_PID'

_libc = ctypes.CDLL(None, use_errno=True)


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
    children = []
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            stat = _stat(entry.name)
            if stat is not None and int(stat[1]) == parent:
                children.append(int(entry.name))
    return children


def slot_of(pid: int) -> int | None:
    """The slot pid a process belongs to: its process group, else its environment."""
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


def call_in_child(function: Callable[[], Any]) -> Any:
    """Run ``function`` in a forked child and return its JSON-able result.

    Lets the main process try something (import the app) without keeping
    anything it leaves behind.  An exception in the child is raised here as
    ``(type name, message)`` inside a ChildFailed.
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


class ChildFailed(Exception):
    def __init__(self, kind: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code


def _send_result(function: Callable[[], Any], read_fd: int, write_fd: int) -> None:
    os.close(read_fd)
    try:
        reply = {'result': function()}
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent
        reply = {'error': [type(exc).__name__, str(exc), getattr(exc, 'exit_code', None)]}
    with os.fdopen(write_fd, 'wb') as pipe:
        pipe.write(json.dumps(reply).encode())
    os._exit(0)
