"""Saying what a command waits for (``stop``, ``restart``, the demo).

On a terminal, one progress line rewritten in place; into a pipe or a file, plain lines: one
whenever what it waits for changes, and again every :data:`PLAIN_EVERY` seconds while it
does not.  Either way on stderr, so stdout keeps only the command's answer.
"""

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TextIO

#: Into a pipe, how often a wait that has not changed is said again (seconds).
PLAIN_EVERY = 10.0
#: Back to the start of the line, and the line cleared (a terminal's progress line).
_CLEAR_LINE = '\r\x1b[K'


class Waiting:
    """The wait of one command.  ``say`` what it waits for each time it looks; used as a
    context manager, the progress line is cleared at the end."""

    def __init__(self, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream or sys.stderr
        self._terminal = self._stream.isatty()
        self._clock = clock
        self._began = clock()
        self._shown = ''                # the line last written
        self._what = ''                 # what it was waiting for then
        self._said_at = float('-inf')

    def say(self, what: str) -> None:
        """The command waits for ``what`` (such as ``pid 4711 to stop: 2 slots left``)."""
        now = self._clock()
        line = f'runner: waiting for {what} ({now - self._began:.0f}s)'
        if self._terminal:
            if line != self._shown:
                self._write(f'{_CLEAR_LINE}{line}', line)
        elif what != self._what or now - self._said_at >= PLAIN_EVERY:
            self._write(f'{line}\n', line)
            self._said_at = now
        self._what = what

    def end(self) -> None:
        """The wait is over: a progress line is cleared."""
        if self._terminal and self._shown:
            self._write(_CLEAR_LINE, '')

    def _write(self, text: str, line: str) -> None:
        self._stream.write(text)
        self._stream.flush()
        self._shown = line

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.end()
