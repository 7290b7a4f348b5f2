"""Table queries over HTTP; a key whose partition lives in another slot is forwarded there.

At every rebalance each slot learns, per changelog partition, the web address
of the member that owns it (see :mod:`runner.kafka.assignor`), so any slot on
any host answers any key with one hop.  While a partition is recovering or
moving, answers come from a local standby or recovering copy and say
``"stale": true``.  Every read holds the store it reads open (see
:mod:`runner.state.stores`), so a partition that moves away meanwhile is
closed only after the read.
"""

import json
import logging
import re
import urllib.parse
from typing import Any

from ..app.context import MISSING
from ..app.tables import Table
from ..app.windows import WINDOW_KEYS
from ..state.stores import Key, PartitionStore
from .context import SlotContext
from .status import SlotStatus
from .web import Response, Route, get_json, route

log = logging.getLogger(__name__)

FORWARD_TIMEOUT = 5.0
PAGE = 100
MAX_PAGE = 1000


class TableQueries:
    """``GET /tables``, ``GET /tables/{name}`` and ``GET /tables/{name}/{key}``."""

    def __init__(self, slot: SlotContext, status: SlotStatus, web: str) -> None:
        self._slot = slot
        self._state = slot.state
        self._tables = {table.name: table for table in slot.layout.app.tables.values()}
        self._status = status
        self._web = web

    def routes(self) -> list[Route]:
        return [route('/tables', self.list_tables),
                route('/tables/(?P<name>[^/]+)', self.describe),
                route('/tables/(?P<name>[^/]+)/(?P<key>.+)', self.lookup)]

    def list_tables(self, _match: re.Match, _params: dict[str, str]) -> Response:
        return 200, {'tables': [self._summary(table) for table in self._tables.values()]}

    def describe(self, match: re.Match, params: dict[str, str]) -> Response:
        """This slot's partitions of a table, and a page of its keys."""
        table = self._tables.get(urllib.parse.unquote(match['name']))
        if table is None:
            return 404, {'error': f'no table {match["name"]!r}'}
        limit = min(int(params.get('limit', PAGE)), MAX_PAGE)
        after = params.get('after')
        keys = sorted(str(key) for key, _ in self._slot.items(table))
        if after is not None:
            keys = [key for key in keys if key > after]
        page = keys[:limit]
        return 200, {**self._summary(table), 'keys': page,
                     'next': page[-1] if len(keys) > limit else None}

    def lookup(self, match: re.Match, params: dict[str, str]) -> Response:
        table = self._tables.get(urllib.parse.unquote(match['name']))
        if table is None:
            return 404, {'error': f'no table {match["name"]!r}'}
        key = _key_from_text(table, urllib.parse.unquote(match['key']))
        changelog_key = self._slot.key_of(table, key)
        with self._slot.active_partition(changelog_key) as partition:
            if partition is not None:
                value = (partition.get(key) if table.windowing is None
                         else partition.windows(key))
                return self._answer(table, key, changelog_key, value, stale=False)
        owner = self._owner(changelog_key)
        if owner and owner != self._web and not params.get('forwarded'):
            return self._forward(owner, match.string)
        with self._state.stores.reading(changelog_key) as store:
            if store is not None:
                return self._answer(table, key, changelog_key, _stored(table, store, key),
                                    stale=True)
        return 503, {'error': f'partition {changelog_key[1]} of {table.name!r} has no owner '
                              'right now (rebalancing); try again',
                     'partition': changelog_key[1], 'stale': True}

    def _owner(self, changelog_key: Key) -> str | None:
        changelog, number = changelog_key
        owners = self._status.owners.get(changelog, [])
        return owners[number] if number < len(owners) else None

    def _answer(self, table: Table, key: Any, changelog_key: Key, value: Any,
                stale: bool) -> Response:
        body = {'table': table.name, 'key': key, 'partition': changelog_key[1],
                'slot': self._status.slot, 'served_by': self._web, 'stale': stale}
        if table.windowing is not None:
            size = table.windowing.size
            value = [{'start': start, 'end': start + size, 'value': window}
                     for start, window in value] or MISSING
        if value is MISSING:
            return 404, {**body, 'error': 'no such key'}
        return 200, {**body, 'value': value}

    def _forward(self, owner: str, path: str) -> Response:
        status, body = get_json(f'http://{owner}{urllib.parse.quote(path)}?forwarded=1',
                                FORWARD_TIMEOUT)
        if status == 0:
            return 502, {'error': f'the owner at {owner} did not answer', 'stale': True}
        return status, body

    def _summary(self, table: Table) -> dict[str, Any]:
        changelog = table.changelog.name
        recovering, _ = self._state.recovering()
        return {'name': table.name, 'partitions': self._slot.layout.partitions(table),
                'changelog': changelog,
                'active': sorted(n for c, n in list(self._slot.active) if c == changelog),
                'recovering': sorted(n for c, n in recovering if c == changelog),
                'standby': {str(n): offset for n, offset in self._state.standbys(table).items()}}


def _key_from_text(table: Table, text: str) -> Any:
    """A key as typed in a URL, turned into the table's key type."""
    if table.key_codec.name == 'json':
        try:
            return json.loads(text)
        except ValueError:
            return text
    if table.key_codec.name == 'raw':
        return text.encode()
    return text


def _stored(table: Table, store: PartitionStore, key: Any) -> Any:
    """What a store (a standby or recovering copy) holds for ``key``."""
    if table.windowing is not None:
        pairs = store.items(WINDOW_KEYS.prefix(key))
        return sorted((start, table.value_codec.loads(raw)) for (k, start), raw in
                      ((WINDOW_KEYS.loads(raw_key), raw) for raw_key, raw in pairs) if k == key)
    raw = store.get(table.stored_key_codec.dumps(key))
    return MISSING if raw is None else table.value_codec.loads(raw)
