"""The processing context: how declarations reach the slot that runs them.

Declarations never import the runtime.  The runtime installs a :class:`Context`
instead: each agent thread binds one that follows the record being processed
(table keys live in that record's partition); the rest of a slot (the web
server, threads an app starts) shares one that finds a key's partition by
hashing it; and outside any slot (a script calling ``app.send``) a context that
only sends is used.  Tables, windowed tables, global tables and ``app.send`` call
:func:`current`.
"""

import contextvars
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from .globals import GlobalTable
    from .tables import Table
    from .topics import Topic

#: A key with no value (a read found nothing).
MISSING: Any = object()
#: A deleted key (written by ``del table[key]`` and by window expiry).
DELETED: Any = object()


class Event(NamedTuple):
    """One record as an agent sees it, key and value decoded."""

    key: Any
    value: Any
    headers: list
    topic: str
    partition: int
    offset: int
    timestamp: int


class Context(Protocol):
    """What declarations ask of the process running them."""

    def event_time(self) -> float | None:
        """Seconds since the epoch of the record being processed (None outside agents)."""

    def read(self, table: 'Table', key: Any) -> Any:
        """The value of ``key`` (a stored key: ``(key, start)`` for windows), or MISSING."""

    def write(self, table: 'Table', key: Any, value: Any) -> None:
        """Set ``key`` (DELETED deletes) in the partition of the record being processed."""

    def items(self, table: 'Table') -> Iterator[tuple[Any, Any]]:
        """Every stored (key, value) of the table's partitions in this slot."""

    def windows(self, table: 'Table', key: Any) -> list[tuple[float, Any]]:
        """(window start, value) of every live window of ``key``, oldest first."""

    def read_global(self, table: 'GlobalTable', key: Any) -> Any:
        """The value of ``key`` in a global table, from any partition, or MISSING."""

    def write_global(self, table: 'GlobalTable', key: Any, value: Any) -> None:
        """Send ``key`` (DELETED deletes) to a global table's changelog, on behalf of the
        record being processed by the agent of the table's source topic."""

    def items_global(self, table: 'GlobalTable') -> Iterator[tuple[Any, Any]]:
        """Every (key, value) of a global table."""

    def send(self, topic: 'Topic', key: bytes | None, value: bytes | None,
             headers: list | None, partition: int | None) -> Any:
        """Send one encoded record to ``topic``; returns kafka-python's future."""

    def flush(self, timeout: float) -> None:
        """Wait until every record sent from here is written."""


_bound: contextvars.ContextVar[Context] = contextvars.ContextVar('runner.context')
_installed: list[Context] = []
_outside: list[Callable[[], Context]] = []


def current() -> Context:
    """The context of the calling thread: its own, else the slot's, else outside any slot."""
    context = _bound.get(None)
    if context is not None:
        return context
    if _installed:
        return _installed[-1]
    if _outside:
        return _outside[-1]()
    raise RuntimeError('runner is not set up here: import App from the runner package')


def bind(context: Context) -> None:
    """Give the calling thread a context of its own (an agent thread)."""
    _bound.set(context)


def install(context: Context) -> None:
    """Make ``context`` the one every thread of this process uses by default (a slot)."""
    _installed[:] = [context]


def uninstall(context: Context) -> None:
    """Stop making ``context`` the default (a test run that ends, see :mod:`runner.testing`)."""
    if context in _installed:
        _installed.remove(context)


def set_outside(factory: Callable[[], Context]) -> None:
    """How to make the context used outside any slot (sending from a script)."""
    _outside[:] = [factory]
