"""Slot data directories: one per slot, never shared, held with an exclusive ``flock``."""

import fcntl
import os
from pathlib import Path

from .errors import ResourceBusy

LOCK_NAME = 'runner.lock'


def slot_dir(datadir: str, index: int) -> Path:
    """The data directory of slot ``index``: ``{datadir}/slot-{index}``."""
    return Path(datadir) / f'slot-{index}'


class DirLock:
    """An exclusive lock on a directory, released when the holder exits (even by KILL)."""

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
