"""Logging for the main process and the slots: one format, tagged with the process role."""

import faulthandler
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from . import platform
from .errors import CannotCreate

FORMAT = '[%(asctime)s] [%(process)d] [%(role)s] %(levelname)s %(name)s: %(message)s'


class _RoleFilter(logging.Filter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        return True


#: What kafka-python logs as a warning or an error when its clients are closed while
#: requests are in flight: expected once the process is stopping.
STOP_NOISE = re.compile(r'Metadata refresh: failed Cancelled|left RUNNING after step'
                        r'|\[Cancelled\]')
#: What kafka-python warns about that no operator can act on: a step of its I/O loop that
#: took long (the runner's own blocking calls run in it).
SLOW_TASK_NOISE = re.compile(r'blocking the event loop')
#: kafka-python's line for each failed try to reach a broker: about 1,000 a minute per
#: slot while Kafka is away.  The slot says once that Kafka is away, and when it is back
#: for how long and how many of these lines it kept at debug level.
CONNECTION_NOISE = re.compile(r'KafkaConnectionError|NodeNotReady|NoBrokersAvailable'
                              r'|Connection (failed|lost|refused)|socket disconnected'
                              r'|Bootstrap (attempt|connection|failed)|Request timed out'
                              r'|RequestTimedOut|Connect attempt .* failed|ECONNREFUSED'
                              r'|Errno 111|No node available')


class _KafkaNoiseFilter(logging.Filter):
    """Lowers kafka-python's noise to debug: :data:`SLOW_TASK_NOISE` and
    :data:`CONNECTION_NOISE` (counted) always, :data:`STOP_NOISE` once :func:`stopping`
    has been called."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = False
        self.connection_errors = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name.startswith('kafka') and record.levelno > logging.DEBUG
                and self._is_noise(record.getMessage())):
            return True
        record.levelno, record.levelname = logging.DEBUG, 'DEBUG'
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    def _is_noise(self, message: str) -> bool:
        if CONNECTION_NOISE.search(message):
            self.connection_errors += 1
            return True
        return bool(SLOW_TASK_NOISE.search(message)
                    or (self.stopping and STOP_NOISE.search(message)))


_stop_noise = _KafkaNoiseFilter()


class _LogFile(logging.FileHandler):
    """The log file.  A line it cannot write (a full disk) is lost, and said so once on
    stderr until a line gets through again; never a traceback per line."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)     # as given, for an error message
        super().__init__(path, encoding='utf-8')
        self._failing = False
        self._failed_now = False

    def _open(self) -> TextIO:
        """The log file, opened for appending, never through a symbolic link."""
        fd = platform.open_own(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 'log file')
        return open(fd, 'a', encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)
        if self._failing and not self._failed_now:
            self._failing = False
            sys.stderr.write(f'runner: writing log file {self.baseFilename} again\n')

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            self._lost(exc)

    def close(self) -> None:
        try:
            super().close()
        except OSError as exc:
            self._lost(exc)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            self._lost(error)
        else:
            super().handleError(record)

    def _lost(self, error: OSError) -> None:
        self._failed_now = True
        if not self._failing:
            self._failing = True
            sys.stderr.write(f'runner: cannot write log file {self.baseFilename}: '
                             f'{error.strerror or error}; log lines are lost until it can\n')


class _RedactingFormatter(logging.Formatter):
    """Writes ``***`` for every secret in a finished line, tracebacks included:
    kafka-python logs its whole configuration and SASL exchange at debug level."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(FORMAT)
        forms = {form for secret in secrets if secret
                 for form in (secret, repr(secret)[1:-1], repr(secret.encode())[2:-1])}
        self._secrets = sorted(forms, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            line = line.replace(secret, '***')
        return line


def stopping() -> None:
    """This process is stopping: kafka-python's complaints about requests cancelled by
    closing its clients are expected from now on, and logged at debug level."""
    _stop_noise.stopping = True


def connection_errors_suppressed() -> int:
    """How many of kafka-python's connection errors were logged at debug level since the
    last call (see :data:`CONNECTION_NOISE`)."""
    count, _stop_noise.connection_errors = _stop_noise.connection_errors, 0
    return count


def plural(count: int, noun: str) -> str:
    """``1 slot``, ``2 slots``, ``0 slots``."""
    return f'{count} {noun}' if count == 1 else f'{count} {noun}s'


def clock(unix_time: float) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(unix_time))


def duration(seconds: float) -> str:
    """Seconds in their two largest units: ``45s``, ``3m 20s``, ``2h 5m``, ``4d 3h``."""
    whole = int(seconds)
    for size, unit, smaller, next_unit in ((86400, 'd', 3600, 'h'), (3600, 'h', 60, 'm'),
                                           (60, 'm', 1, 's')):
        if whole >= size:
            return f'{whole // size}{unit} {whole % size // smaller}{next_unit}'
    return f'{whole}s'


def setup(level: str, logfile: str | None, role: str, secrets: Iterable[str] = ()) -> None:
    """Send log lines to ``logfile`` (or stderr); ``role`` tags each line, e.g. ``slot 1``;
    every one of ``secrets`` is written as ``***``."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    try:
        handler = _LogFile(logfile) if logfile else logging.StreamHandler(sys.stderr)
    except OSError as exc:
        raise CannotCreate(f'cannot open log file {logfile}: {exc.strerror}') from None
    handler.setFormatter(_RedactingFormatter(secrets))
    handler.addFilter(_RoleFilter(role))
    handler.addFilter(_stop_noise)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger('kafka').setLevel('DEBUG' if level == 'debug' else 'WARNING')
    faulthandler.enable(file=handler.stream, all_threads=True)


def retag(role: str) -> None:
    """Change the role tag of every line logged from now on (after a fork)."""
    for handler in logging.getLogger().handlers:
        for log_filter in handler.filters:
            if isinstance(log_filter, _RoleFilter):
                log_filter.role = role
