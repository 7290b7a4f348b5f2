"""Signals become events in a queue that a process's main loop handles.

Handlers only enqueue (``queue.SimpleQueue.put`` is safe inside a signal
handler); all real work happens in the main loop, between its other steps.
"""

import faulthandler
import logging
import os
import queue
import signal
import sys
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


def ignore(*signums: signal.Signals) -> None:
    for signum in signums:
        signal.signal(signum, signal.SIG_IGN)


def dump_stacks(tag: str) -> None:
    """Write every thread's stack to the log stream with ``faulthandler``, framed by ``tag``."""
    stream = _log_stream()
    header = f'--- stack dump of {tag} pid {os.getpid()} ---'
    log.warning(header)
    _flush_log()
    faulthandler.dump_traceback(file=stream, all_threads=True)
    stream.flush()
    log.warning('--- end of stack dump of %s pid %d ---', tag, os.getpid())


def _log_stream():
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, 'stream', None)
        if stream is not None and hasattr(stream, 'fileno'):
            return stream
    return sys.stderr


def _flush_log() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
