"""Sending from plain code outside any slot (a script, a web handler, ``runner send``).

Each process gets one producer per app, created on first use and flushed at
exit.  Tables are not available outside a slot.
"""

import atexit
import os
import threading
from collections.abc import Iterator
from typing import Any

from ..app import context
from ..app.globals import GlobalTable
from ..app.tables import Table
from ..app.topics import Topic
from ..config import build, secrets_from_environment
from ..kafka.producer import Producer
from .context import placed


class OutsideContext:
    """The context of code that runs outside any slot: it can send, nothing else."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._producers: dict[str, Producer] = {}
        self._pid = os.getpid()

    def use(self, app_name: str, producer: Producer) -> None:
        """Send the records of ``app_name`` through ``producer`` (``runner send``)."""
        with self._lock:
            self._producers[app_name] = producer

    def _producer(self, topic: Topic) -> Producer:
        with self._lock:
            if self._pid != os.getpid():          # a forked child starts afresh
                self._producers, self._pid = {}, os.getpid()
            producer = self._producers.get(topic.app.name)
            if producer is None:
                settings = build(topic.app.settings, {}, secrets_from_environment())
                producer = self._producers[topic.app.name] = Producer(
                    settings, f'{topic.app.name}-client')
                atexit.register(producer.close, 30)
            return producer

    def event_time(self) -> float | None:
        return None

    def read(self, table: Table, key: Any) -> Any:
        raise RuntimeError(f'table {table.name!r} lives in the worker slots; ask one over '
                           'HTTP (GET /tables/NAME/KEY)')

    def write(self, table: Table, key: Any, value: Any) -> None:
        self.read(table, key)

    def items(self, table: Table) -> Iterator[tuple[Any, Any]]:
        return self.read(table, None)

    def windows(self, table: Table, key: Any) -> list[tuple[float, Any]]:
        return self.read(table, key)

    def read_global(self, table: GlobalTable, key: Any) -> Any:
        raise RuntimeError(f'global table {table.name!r} lives in the worker slots; ask one '
                           'over HTTP (GET /tables/NAME/KEY), or produce to its changelog '
                           f'{table.changelog.name!r} to change it')

    def write_global(self, table: GlobalTable, key: Any, value: Any) -> None:
        self.read_global(table, key)

    def items_global(self, table: GlobalTable) -> Iterator[tuple[Any, Any]]:
        return self.read_global(table, None)

    def send(self, topic: Topic, key: bytes | None, value: bytes | None,
             headers: list | None = None, partition: int | None = None) -> Any:
        producer = self._producer(topic)
        return producer.send(topic.name, key, value, headers,
                             placed(topic, key, partition, producer))

    def flush(self, timeout: float) -> None:
        with self._lock:
            producers = list(self._producers.values()) if self._pid == os.getpid() else []
        for producer in producers:
            producer.flush(timeout)


OUTSIDE = OutsideContext()


def install() -> None:
    """Make plain code of this process send through :data:`OUTSIDE`."""
    context.set_outside(lambda: OUTSIDE)
