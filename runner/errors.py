"""Errors a user or operator can cause, each with its documented exit code.

The exit codes follow BSD ``sysexits.h`` so that scripts, systemd and cron
can tell the kinds of failure apart.  Messages quote what the user gave through
:func:`shown` and :func:`shown_name`: one line, cut short, no password.
"""

import re
from typing import Any

EX_OK = 0
EX_NOT_FINISHED = 1  # stop or restart did not get done (timed out, refused, failed)
EX_DEGRADED = 2     # status: running, but a slot is not (or a partition stopped at a record)
EX_NOT_RUNNING = 3   # nothing holds the pidfile (as LSB init scripts' "status" says)
EX_NOT_ANSWERING = 4  # status: the main process holds its pidfile but stopped updating its status
EX_USAGE = 64        # bad command line
EX_DATAERR = 65      # send: VALUE is not what the topic's serializer takes
EX_UNAVAILABLE = 69  # the broker could not be reached in time
EX_SOFTWARE = 70     # a thread of the slot failed; the slot stops and is restarted
EX_OSERR = 71        # no process could be forked (no memory, too many processes)
EX_NOPERM = 77       # the broker answered but did not let this client in (SASL, TLS)
EX_CANTCREAT = 73    # data directory or port already in use
EX_IOERR = 74        # a file or table store could not be written or read: disk full, I/O error
EX_CONFIG = 78       # the app or the config file cannot be loaded
EX_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EX_PIPE = 141        # whoever read the output went away (128 + SIGPIPE, as if killed by it)


class RunnerError(Exception):
    """An expected failure: reported as one line, never as a traceback."""

    exit_code = EX_SOFTWARE


class UsageError(RunnerError):
    exit_code = EX_USAGE


class DataError(RunnerError):
    """Input data that is not what it must be, such as broken JSON for a JSON topic."""

    exit_code = EX_DATAERR


class ConfigError(RunnerError):
    exit_code = EX_CONFIG


class SerializationError(ValueError):
    """Bytes a serializer cannot decode, or a value it cannot encode (see
    :class:`runner.app.codecs.Codec`); a ValueError, so it is caught as one."""


class BrokerUnavailable(RunnerError):
    exit_code = EX_UNAVAILABLE


class AuthenticationFailed(RunnerError):
    """A broker listens, but the client could not authenticate (or finish TLS) with it."""

    exit_code = EX_NOPERM


class ResourceBusy(RunnerError):
    exit_code = EX_CANTCREAT


class CannotFork(RunnerError):
    """No process could be forked: no memory, or too many processes (``EAGAIN``)."""

    exit_code = EX_OSERR


class CannotCreate(RunnerError):
    """A file the worker writes (its log file, its pidfile) cannot be opened."""

    exit_code = EX_CANTCREAT


class DiskError(RunnerError):
    """A file the runner writes, or a table's local store, cannot be written or read: the
    disk is full, or failed."""

    exit_code = EX_IOERR


class NotRunning(RunnerError):
    exit_code = EX_NOT_RUNNING


class NotFinished(RunnerError):
    """``stop`` or ``restart`` did not get done: it timed out, or the restart failed."""

    exit_code = EX_NOT_FINISHED


def error_with_code(message: str, exit_code: int) -> RunnerError:
    """A RunnerError that exits with ``exit_code`` (an error reported by another process)."""
    error = RunnerError(message)
    error.exit_code = exit_code
    return error


def shown(value: Any, limit: int = 60) -> str:
    """A value as an error message quotes it: its repr, cut short, with any user name and
    password before an ``@`` (a broker URL's) masked."""
    text = re.sub(r'[^/;,@\s\'"]*@', '***@', repr(value))
    return text if len(text) <= limit else f'{text[:limit]}...'


def shown_name(text: str, limit: int = 160) -> str:
    """A file or option name as an error message gives it: as it is when short, printable
    and free of ``@``, else quoted by :func:`shown`."""
    plain = len(text) <= limit and text.isprintable() and '@' not in text
    return text if plain else shown(text, limit)


class OutputRefused(Exception):
    """The producer refused a record an agent sent (too large for ``max_request_size``).

    Raised by sends inside an agent; unless the agent catches it, its error
    policy takes the input record (see :class:`runner.app.agents.Agent`).
    """
