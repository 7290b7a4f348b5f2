"""Slot → main process reports: JSON lines over a pipe, one per status change or second.

The slot never blocks on its pipe (a full pipe drops the report; the next one
carries the same state), and the main process reads without blocking.
"""

import json
import os
from typing import Any


class Reporter:
    """The writing end, in the slot."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(',', ':')).encode() + b'\n'
        try:
            os.write(self._fd, data)
        except (BlockingIOError, BrokenPipeError):
            pass


class ReportReader:
    """The reading end, in the main process."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._partial = b''

    def read(self) -> list[dict[str, Any]]:
        """Every complete report that has arrived (an empty list at EOF or when none)."""
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        *lines, self._partial = (self._partial + b''.join(chunks)).split(b'\n')
        return [json.loads(line) for line in lines if line]

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
