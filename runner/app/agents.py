"""Agent declarations: a function applied to the stream of one topic."""

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .partitioners import murmur2_partition
from .tables import code_names, tables_used_by
from .topics import Topic

if TYPE_CHECKING:
    from .app import App


#: What an agent does with a record it raised on (once its retries are spent).
ON_ERROR = ('stop', 'dead_letter', 'skip')
#: The name whose use in an agent's function (``stream.group_by(key_fn)``) declares that
#: the agent re-keys its stream, so its repartition topic is created and read.
REKEYS = 'group_by'


class Agent:
    """A declared agent: ``fn(stream)`` over one topic, on ``concurrency`` threads per slot.

    If ``fn`` is a generator function, every value it yields is sent to each
    sink with the key of the input record being processed.  A sink is a
    Topic, another Agent (its topic) or a callable.

    Errors: when ``fn`` raises on a record, the record is tried again up to
    ``retries`` times (waiting ``retry_backoff`` seconds, doubled each time),
    then ``on_error`` decides: ``stop`` the record's partition at it (the
    slot goes on with its other partitions; the record is processed again
    after a restart, or dead-lettered by ``runner skip``), send the record
    to the agent's ``dead_letter_topic`` and go on, or ``skip`` it and go
    on.  Records that
    cannot be decoded, or whose output the producer refuses (too large), are
    never retried: they go to the dead-letter topic unless ``on_error`` is
    ``skip``.

    Re-keying: an agent whose function calls ``stream.group_by(key_fn)`` has a
    repartition topic (see :attr:`repartition`); the records of its topic are
    sent there under their new key, and read back from there into the agent.
    """

    def __init__(self, app: 'App', fn: Callable, topic: Topic, sinks: Iterable[Any] = (),
                 concurrency: int = 1, name: str | None = None, on_error: str = 'stop',
                 retries: int = 0, retry_backoff: float = 0.5) -> None:
        check_takes_a_stream(fn)
        self.app = app
        self.fn = fn
        self.topic = topic
        self.sinks = list(sinks)
        self.concurrency = _count('concurrency', concurrency, 1)
        self.name = name or f'{fn.__module__}.{fn.__qualname__}'
        if on_error not in ON_ERROR:
            raise ConfigError(f'agent {self.name}: on_error must be one of {", ".join(ON_ERROR)}')
        self.on_error = on_error
        self.retries = _count('retries', retries, 0)
        if isinstance(retry_backoff, bool) or not isinstance(retry_backoff, (int, float)) \
                or not 0 <= retry_backoff <= 3600:
            raise ConfigError(f'agent {self.name}: retry_backoff must be 0 to 3600 seconds')
        self.retry_backoff = float(retry_backoff)
        self.dead_letter_topic = Topic(app, dead_letter_topic_name(app.name, self.name),
                                       key_serializer='raw', value_serializer='raw')

    @functools.cached_property
    def repartition(self) -> Topic | None:
        """The internal topic ``{app}-{agent}-repartition`` if the agent's function names
        ``group_by`` (None otherwise): its partition count is the tables' (see
        :class:`runner.app.layout.Layout`), its keys are encoded and placed as the tables the
        agent uses encode and place theirs, its values are the agent's topic's, unchanged."""
        if REKEYS not in code_names(self.fn):
            return None
        tables = tables_used_by(self.fn)
        key_codecs = {table.key_codec for table in tables} or {self.topic.key_codec}
        partitioners = {table.partitioner for table in tables
                        if table.partitioner is not None} or {murmur2_partition}
        if len(key_codecs) > 1 or len(partitioners) > 1:
            names = ', '.join(sorted(repr(table.name) for table in tables))
            raise ConfigError(f'agent {self.name} re-keys its stream for tables {names}, which '
                              'encode or place their keys differently; declare them alike')
        return Topic(self.app, internal_topic_name(self.app.name, self.name, 'repartition'),
                     key_serializer=key_codecs.pop(), value_serializer=self.topic.value_codec,
                     partitioner=partitioners.pop())

    @property
    def table_topic(self) -> Topic:
        """The topic whose partitions the agent's table access follows: its repartition
        topic if it re-keys its stream, else its own."""
        return self.repartition or self.topic

    def send(self, key: Any = None, value: Any = None, headers: list | None = None) -> Any:
        """Send a record to the agent's topic."""
        return self.topic.send(key=key, value=value, headers=headers)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f'<Agent {self.name} topic={self.topic.name} concurrency={self.concurrency}>'


def dead_letter_topic_name(app: str, agent: str) -> str:
    """``{app}-{agent}-dlq``, the agent's name made a legal topic name."""
    return internal_topic_name(app, agent, 'dlq')


def internal_topic_name(app: str, agent: str, suffix: str) -> str:
    """``{app}-{agent}-{suffix}``, the agent's name made a legal topic name (cut short
    before the suffix when too long)."""
    stem = f'{app}-{re.sub(r"[^A-Za-z0-9._-]+", "_", agent)}'
    return f'{stem[:248 - len(suffix)]}-{suffix}'


def _count(what: str, value: Any, least: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(f'{what} must be a whole number of at least {least}')
    return value


def check_takes_a_stream(fn: Callable) -> None:
    """An agent is called as ``fn(stream)``: say so at import rather than crash in a slot."""
    if not callable(fn):
        raise ConfigError(f'@app.agent decorates a function, not {fn!r}')
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        raise ConfigError(f'agent {fn.__qualname__} must take exactly one argument, the '
                          'stream') from None
    except ValueError:
        pass            # no signature to inspect (a builtin): let it be
