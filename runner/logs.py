"""Logging for the main process and the slots: one format (text or JSON lines), each line
tagged with the process role and slot, secrets starred, files that follow logrotate."""

import faulthandler
import logging
import logging.handlers
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from . import platform
from .errors import CannotCreate, RunnerError

FORMAT = '[%(asctime)s] [%(process)d] [%(tag)s] %(levelname)s %(name)s: %(message)s'
#: The keys of a JSON log line, by the ``LogRecord`` attribute each comes from; ``time``
#: (ISO 8601, UTC) and ``exception`` (the traceback, or null) are added to them.
JSON_FIELDS = {'levelname': 'level', 'role': 'role', 'slot': 'slot', 'process': 'pid',
               'name': 'logger', 'message': 'message'}
#: What ``%i`` in ``--logfile`` stands for in the main process (in a slot: its number).
MAIN_LOGFILE_MARK = 'main'


def logfile_path(logfile: str, slot: int | None) -> str:
    """The log file of slot ``slot`` (None: the main process) for ``--logfile``: every
    ``%i`` in it replaced by the slot's number, or by :data:`MAIN_LOGFILE_MARK`."""
    return logfile.replace('%i', MAIN_LOGFILE_MARK if slot is None else str(slot))


class _RoleFilter(logging.Filter):
    """Tags each line with the process role (``main``, ``slot``, or a command such as
    ``send``) and the slot number (None outside a slot); ``tag`` is both, for the text."""

    def __init__(self, role: str, slot: int | None) -> None:
        super().__init__()
        self.set(role, slot)

    def set(self, role: str, slot: int | None) -> None:
        self.role, self.slot = role, slot
        self.tag = role if slot is None else f'{role} {slot}'

    def filter(self, record: logging.LogRecord) -> bool:
        record.role, record.slot, record.tag = self.role, self.slot, self.tag
        return True


#: What kafka-python logs as a warning or an error when its clients are closed while
#: requests are in flight: expected once the process is stopping.
STOP_NOISE = re.compile(r'Metadata refresh: failed Cancelled|left RUNNING after step'
                        r'|\[Cancelled\]')
#: What kafka-python warns about that no operator can act on: a step of its I/O loop that
#: took long (the runner's own blocking calls run in it).
SLOW_TASK_NOISE = re.compile(r'blocking the event loop')
#: kafka-python's line for each failed try to reach a broker: about 1,000 a minute per
#: slot while Kafka is away, and one (with a traceback) per connection a broker going
#: away resets.  The slot says once that Kafka is away, and when it is back for how long
#: and how many of these lines it kept at debug level.
CONNECTION_NOISE = re.compile(r'KafkaConnectionError|NodeNotReady|NoBrokersAvailable'
                              r'|Connection (failed|lost|refused)|socket disconnected'
                              r'|Error receiving network data|Error sending request data'
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


class _LogFile(logging.handlers.WatchedFileHandler):
    """The log file.  Follows logrotate without ``copytruncate``: before each line it checks
    whether the file at its path is still the one it writes, and opens it anew when it was
    moved or removed (:class:`logging.handlers.WatchedFileHandler`).  Never opens it
    through a symbolic link, also when it opens it anew.  A line it cannot write (a full
    disk, a link in its place) is lost, and said so once on stderr until a line gets
    through again; never a traceback per line."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)     # as given, for an error message
        self.fault_log = False      # whether faulthandler writes to this file too
        super().__init__(path, encoding='utf-8')
        self._failing = False
        self._failed_now = False

    def _open(self) -> TextIO:
        """The log file, opened for appending, never through a symbolic link."""
        fd = platform.open_own(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 'log file')
        return open(fd, 'a', encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        if self._reopened():
            logging.StreamHandler.emit(self, record)
        if self._failing and not self._failed_now:
            self._failing = False
            sys.stderr.write(f'runner: writing log file {self._path} again\n')

    def _reopened(self) -> bool:
        """Whether the file at the path is open, opened anew if it was moved or removed."""
        stream = self.stream
        try:
            self.reopenIfNeeded()
            if self.stream is None:
                self.stream = self._open()
                self._statstream()
        except (OSError, RunnerError) as exc:
            self._lost(exc)
            return False
        if self.stream is not stream and self.fault_log:
            faulthandler.enable(file=self.stream, all_threads=True)
        return True

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

    def _lost(self, error: OSError | RunnerError) -> None:
        self._failed_now = True
        if not self._failing:
            self._failing = True
            what = (f'cannot write log file {self._path}: {error.strerror or error}'
                    if isinstance(error, OSError) else str(error))
            sys.stderr.write(f'runner: {what}; log lines are lost until it can\n')


class _Redactor:
    """Writes ``***`` for every secret in a text, as it is and as ``repr`` quotes it (of
    the text and of its UTF-8 bytes): kafka-python logs its whole configuration and SASL
    exchange at debug level."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets if secret
                 for form in (secret, repr(secret)[1:-1], repr(secret.encode())[2:-1])}
        self._secrets = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, '***')
        return text


class _RedactingFormatter(logging.Formatter):
    """The text format, :data:`FORMAT`, with every secret starred, tracebacks included."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(FORMAT)
        self._redact = _Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class _RedactingJsonFormatter(JsonFormatter):
    """One JSON object per line (:data:`JSON_FIELDS`, ``time``, ``exception``, and any
    ``extra`` a caller gave), with every secret starred in every text of it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(list(JSON_FIELDS), rename_fields={**JSON_FIELDS, 'exc_info': 'exception'},
                         rename_fields_keep_missing=True, timestamp='time',
                         reserved_attrs=[*RESERVED_ATTRS, 'tag'], json_ensure_ascii=False)
        self._redact = _Redactor(secrets)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        ordered = {key: log_data.pop(key) for key in _JSON_ORDER if key in log_data}
        return {key: self._redact(value) if isinstance(value, str) else value
                for key, value in {**ordered, **log_data}.items()}


#: The keys of a JSON log line in the order they are written.
_JSON_ORDER = ('time', *JSON_FIELDS.values(), 'exception')


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


def setup(level: str, logfile: str | None, role: str, secrets: Iterable[str] = (),
          log_format: str = 'text', slot: int | None = None) -> None:
    """Send log lines to ``logfile`` (or stderr), ``%i`` in it standing for the slot (see
    :func:`logfile_path`), in ``log_format``: ``text`` (:data:`FORMAT`) or ``json`` (one
    object per line, :data:`JSON_FIELDS`).  ``role`` and ``slot`` tag each line (``slot``
    and 1, ``main`` and None); every one of ``secrets`` is written as ``***``."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    path = logfile_path(logfile, slot) if logfile else None
    try:
        handler = _LogFile(path) if path else logging.StreamHandler(sys.stderr)
    except OSError as exc:
        raise CannotCreate(f'cannot open log file {path}: {exc.strerror}') from None
    handler.setFormatter(_RedactingJsonFormatter(secrets) if log_format == 'json'
                         else _RedactingFormatter(secrets))
    handler.addFilter(_RoleFilter(role, slot))
    handler.addFilter(_stop_noise)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger('kafka').setLevel('DEBUG' if level == 'debug' else 'WARNING')
    faulthandler.enable(file=handler.stream, all_threads=True)
    if isinstance(handler, _LogFile):
        handler.fault_log = True


def retag(role: str, slot: int | None = None) -> None:
    """Change the role and slot every line logged from now on is tagged with (after a fork)."""
    for handler in logging.getLogger().handlers:
        for log_filter in handler.filters:
            if isinstance(log_filter, _RoleFilter):
                log_filter.set(role, slot)
