"""Errors a user or operator can cause, each with its documented exit code.

The exit codes follow BSD ``sysexits.h`` so that scripts, systemd and cron
can tell the kinds of failure apart; :data:`EXIT_CODES` says what each means (the
manual's table and ``runner --help`` give it).  Messages quote what the user gave through
:func:`shown` and :func:`shown_name`: one line, cut short, no password.
"""

import re
from typing import Any, NamedTuple

EX_OK = 0
EX_NOT_FINISHED = 1
EX_DEGRADED = 2
EX_NOT_RUNNING = 3
EX_NOT_ANSWERING = 4
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_OSERR = 71
EX_CANTCREAT = 73
EX_IOERR = 74
EX_NOPERM = 77
EX_CONFIG = 78
EX_INTERRUPTED = 130  # 128 + SIGINT
EX_PIPE = 141         # 128 + SIGPIPE


class ExitCode(NamedTuple):
    """What an exit code means, as the manual's table of exit codes says it."""

    meaning: str                 #: reStructuredText, one paragraph
    see: tuple[str, ...] = ()    #: labels of the manual's sections that say more


#: Every exit code of the runner and its commands: the manual's table is made from this.
EXIT_CODES = {
    EX_OK: ExitCode('success; a worker stopped by a signal'),
    EX_NOT_FINISHED: ExitCode(
        '``stop`` or ``restart`` did not finish within ``--timeout``; a rolling restart '
        'refused or failed; ``skip``: the partition is not stopped at that offset',
        ('operating-commands',)),
    EX_DEGRADED: ExitCode(
        '``status``: running but ``degraded`` (a slot is not running, or a partition is '
        'stopped at a record that failed)', ('operating-commands',)),
    EX_NOT_RUNNING: ExitCode(
        '``status`` or ``restart``: not running (nothing holds the pidfile, as LSB init '
        "scripts' ``status`` says); ``skip``: no running slot has the partition",
        ('operating-commands',)),
    EX_NOT_ANSWERING: ExitCode(
        '``status``: the main process holds its pidfile but stopped answering (its status '
        'is over 10 s old)', ('operating-commands',)),
    EX_USAGE: ExitCode(
        'bad usage (unknown option, invalid value, no app given, more ``--workers`` than '
        '``--workers-max``, ...)'),
    EX_DATAERR: ExitCode(
        "``send``: a ``VALUE`` the topic's serializer does not take (text that begins as "
        'JSON, ``{``, ``[`` or ``"``, but does not parse, for a JSON topic); nothing is '
        'sent'),
    EX_UNAVAILABLE: ExitCode(
        'no broker answered within ``broker_timeout`` when a slot started, or for ``send`` '
        'or ``dlq``; a slot that could not reach Kafka for ``broker_outage_limit``',
        ('broker-outages',)),
    EX_SOFTWARE: ExitCode(
        'a slot failed before it ever ran, or no slot is left running; for a slot: a '
        'thread of it failed (it stops and is started again)', ('crash-restarts',)),
    EX_OSERR: ExitCode(
        'no process could be forked to check the app (at start) or to ``--detach``: no '
        'memory, or the limit on processes reached (a slot that cannot be forked waits '
        'with its backoff instead)', ('crash-restarts',)),
    EX_CANTCREAT: ExitCode(
        'data directory, web port or pidfile in use, or the log file or pidfile cannot be '
        'opened (also: it is a symbolic link); for a slot, also: another member joined '
        'its group under its identity, or under exactly-once a newer incarnation took '
        'over its transactional id', ('rebalancing',)),
    EX_IOERR: ExitCode(
        'a file or a table store could not be written or read: the disk is full or '
        'failed', ('full-disks',)),
    EX_NOPERM: ExitCode(
        'a secured broker did not let the client in: wrong SASL credentials or a failed '
        'TLS handshake', ('security',)),
    EX_CONFIG: ExitCode(
        'the app or the config file cannot be loaded, a topic\'s partition count differs '
        'from its declaration, a table has another partition count than the topic whose '
        'agent updates it, or the installed kafka-python is not the version runner\'s '
        'workarounds were verified on (3.0.12); for a slot, also: an agent read or wrote a '
        "table key of another partition than its record's", ('tables',)),
    EX_INTERRUPTED: ExitCode(
        'interrupted (Ctrl-C) before the worker started, or while a command was waiting, '
        'e.g. ``stop``'),
    EX_PIPE: ExitCode(
        "the output's reader went away (``runner status | head -1``), as if killed by "
        '``SIGPIPE``, without a traceback'),
}


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
