"""A pidfile that is locked while its process lives, so a stale one is harmless."""

import fcntl
import os
from pathlib import Path

from .errors import ResourceBusy


class AlreadyRunning(ResourceBusy):
    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(f'already running (pid {pid}, pidfile {path})')
        self.pid = pid


class Pidfile:
    """Holds an exclusive ``flock`` on the file for as long as this process runs."""

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
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        self.fd = fd

    def rewrite(self) -> None:
        """Record the current pid (after daemonizing changed it)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f'{os.getpid()}\n'.encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
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
