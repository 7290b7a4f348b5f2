"""Signals become events in a queue that a process's main loop handles.

Handlers only enqueue (``queue.SimpleQueue.put`` is safe inside a signal
handler); all real work happens in the main loop, between its other steps.
"""

import faulthandler
import logging
import os
import queue
import signal
import tempfile
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SignalQueue:
    """Maps signals to event names and hands them to the main loop in arrival order."""

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
