"""Timer declarations: functions a worker runs on a schedule (``@app.timer``, ``@app.crontab``).

A timer is a declaration, as an agent is: the slot runs it (see
:mod:`runner.runtime.timers`).  Its schedule says when its ticks are due:
every ``interval`` seconds, or at the times a cron expression names, in a
time zone.  A schedule is a pure function of the time it is given, so a
test (or :mod:`runner.testing`) may drive it with a clock of its own.
"""

import datetime
import inspect
import math
import zoneinfo
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from croniter import croniter

from ..errors import ConfigError

if TYPE_CHECKING:
    from .app import App

#: What a timer does when its function raises: log it (with the traceback), count it and
#: run again at the next tick, or stop the slot (which the main process starts again).
ON_ERROR = ('log', 'stop')
#: The most due times a schedule counts as skipped at once (a clock that jumped far).
MAX_COUNTED = 10_000


class NotOwned(RuntimeError):
    """A timer read or wrote a table key whose partition this slot does not own (now)."""


class Interval:
    """Due every ``seconds``, counted from the slot's start (on the monotonic clock)."""

    monotonic = True

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not 0 < seconds <= 31536000 or math.isnan(seconds):
            raise ConfigError(f'timer interval {seconds!r}: it must be a number of seconds, '
                              'more than 0 and at most a year (31536000)')
        self.seconds = float(seconds)

    def first(self, now: float) -> float:
        """The first due time of a timer started at ``now``."""
        return now + self.seconds

    def next(self, due: float, now: float) -> tuple[float, int]:
        """The first due time after ``now`` of a tick that was due at ``due``, and how many
        due times fell between them (ticks skipped: the tick ran, or the clock jumped)."""
        if now < due:                     # the clock went back: start again from now
            return now + self.seconds, 0
        passed = int((now - due) // self.seconds)
        return due + (passed + 1) * self.seconds, passed

    def __str__(self) -> str:
        return f'every {self.seconds:g}s'


class Cron:
    """Due at the times a cron expression names, in ``timezone`` (UTC if None, so every
    host of an app agrees whatever its local zone), on the wall clock."""

    monotonic = False

    def __init__(self, expression: str, timezone: str | datetime.tzinfo | None = None) -> None:
        if not isinstance(expression, str) or not croniter.is_valid(expression):
            raise ConfigError(f'crontab {expression!r}: not a valid cron expression (such as '
                              "'*/5 * * * *': minute hour day-of-month month day-of-week)")
        self.expression = expression
        self.timezone = _zone(timezone)

    def first(self, now: float) -> float:
        return self._after(now)

    def next(self, due: float, now: float) -> tuple[float, int]:
        """As :meth:`Interval.next`: the first due time after ``now``, and the due times
        between ``due`` and it that were skipped."""
        passed, when = 0, self._after(due)
        while when <= now and passed < MAX_COUNTED:
            passed, when = passed + 1, self._after(when)
        return (when if when > now else self._after(now)), passed

    def _after(self, when: float) -> float:
        start = datetime.datetime.fromtimestamp(when, self.timezone)
        return croniter(self.expression, start).get_next(float)

    def __str__(self) -> str:
        zone = getattr(self.timezone, 'key', None) or str(self.timezone)
        return f'crontab {self.expression!r} ({zone})'


class Timer:
    """A declared timer: ``fn()`` called on schedule on every slot, or, with ``on_leader``,
    on the one slot of the whole app (across hosts) that owns partition 0 of the app's
    leader topic (see :func:`leader_topic`).

    Each timer runs on its own thread with the processing context of an agent (see
    :class:`runner.runtime.timers.TimerContext`): it reads and writes the table keys of
    partitions its slot owns and sends to topics.  A tick still running when the next is
    due makes that one skipped (and counted), never run twice at once.  When ``fn``
    raises, ``on_error`` decides: ``log`` it with its traceback and run again at the next
    tick (the default), or ``stop`` the slot (the main process starts it again).
    """

    def __init__(self, app: 'App', fn: Callable[[], Any], schedule: Interval | Cron,
                 on_leader: bool = False, name: str | None = None,
                 on_error: str = 'log') -> None:
        check_takes_nothing(fn)
        self.app = app
        self.fn = fn
        self.schedule = schedule
        if not isinstance(on_leader, bool):
            raise ConfigError(f'timer {fn.__qualname__}: on_leader must be True or False')
        self.on_leader = on_leader
        self.name = name or f'{fn.__module__}.{fn.__qualname__}'
        if on_error not in ON_ERROR:
            raise ConfigError(f'timer {self.name}: on_error must be one of {", ".join(ON_ERROR)}')
        self.on_error = on_error

    def __call__(self) -> Any:
        return self.fn()

    def __repr__(self) -> str:
        leader = ' on_leader' if self.on_leader else ''
        return f'<Timer {self.name} {self.schedule}{leader}>'


def leader_topic(app: 'App') -> str | None:
    """The topic whose partition 0 makes its owner the leader: the first, by name, of the
    topics the app's agents read (the same on every host running the same app), or None
    when the app has no agent."""
    return min((agent.topic.name for agent in app.agents), default=None)


def check_takes_nothing(fn: Callable) -> None:
    """A timer is called as ``fn()``: say so at import rather than fail in a slot."""
    if not callable(fn):
        raise ConfigError(f'@app.timer and @app.crontab decorate a function, not {fn!r}')
    try:
        inspect.signature(fn).bind()
    except TypeError:
        raise ConfigError(f'timer {fn.__qualname__} must take no arguments') from None
    except ValueError:
        pass            # no signature to inspect (a builtin): let it be


def _zone(timezone: str | datetime.tzinfo | None) -> datetime.tzinfo:
    if timezone is None:
        return datetime.UTC
    if isinstance(timezone, datetime.tzinfo):
        return timezone
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(f'crontab timezone {timezone!r}: not a known time zone (such as '
                          "'Europe/Paris' or 'UTC')") from None
