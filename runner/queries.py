"""Table queries over HTTP; a key whose partition lives in another slot is forwarded there.

Every slot learns, at each rebalance, which member owns each partition number
and that member's web address (see runner.assignor), so any slot on any host
can answer any key with one hop.  While a partition is recovering or moving,
answers come from local or standby state and say ``"stale": true``.
"""

import json
import logging
import re
import urllib.parse
from typing import Any

from .state import StateManager
from .status import SlotStatus
from .store import PartitionStore
from .tables import MISSING, Table, TablePartition
from .web import Handler, Response, Route, get_json, route
from .windows import key_windows

log = logging.getLogger(__name__)

FORWARD_TIMEOUT = 5.0
PAGE = 100
MAX_PAGE = 1000


class TableQueries:
    """``GET /tables``, ``GET /tables/{name}`` and ``GET /tables/{name}/{key}``."""

    def __init__(self, state: StateManager, status: SlotStatus, web: str) -> None:
        self._tables = {table.name: table for table in state.tables.values()}
        self._state = state
        self._status = status
        self._web = web

    def routes(self) -> list[Route]:
        return [route('/tables', self.list_tables),
                route('/tables/(?P<name>[^/]+)', _moving_is_503(self.describe)),
                route('/tables/(?P<name>[^/]+)/(?P<key>.+)', _moving_is_503(self.lookup))]

    def list_tables(self, _match: re.Match, _params: dict[str, str]) -> Response:
        return 200, {'tables': [self._summary(table) for table in self._tables.values()]}

    def describe(self, match: re.Match, params: dict[str, str]) -> Response:
        """This slot's partitions of a table, and a page of its keys."""
        table = self._tables.get(urllib.parse.unquote(match['name']))
        if table is None:
            return 404, {'error': f'no table {match["name"]!r}'}
        limit = min(int(params.get('limit', PAGE)), MAX_PAGE)
        after = params.get('after')
        keys = sorted(str(key) for key, _ in table.items())
        if after is not None:
            keys = [key for key in keys if key > after]
        page = keys[:limit]
        return 200, {**self._summary(table), 'keys': page,
                     'next': page[-1] if len(keys) > limit else None}

    def lookup(self, match: re.Match, params: dict[str, str]) -> Response:
        table = self._tables.get(urllib.parse.unquote(match['name']))
        if table is None:
            return 404, {'error': f'no table {match["name"]!r}'}
        text = urllib.parse.unquote(match['key'])
        key = _key_from_text(table, text)
        number = table.partition_of(key)
        partition = table.active.get(number)
        if partition is not None:
            return self._answer(table, key, number, _value(table, partition, key), stale=False)
        owner = self._status.owners.get(number)
        if owner and owner != self._web and not params.get('forwarded'):
            return self._forward(owner, match.string)
        store = self._state.peek((table.changelog.name, number))
        if store is not None:
            return self._answer(table, key, number, _stored(table, store, key), stale=True)
        return 503, {'error': f'partition {number} of {table.name!r} has no owner right now '
                              '(rebalancing); try again', 'partition': number, 'stale': True}

    def _answer(self, table: Table, key: Any, number: int, value: Any,
                stale: bool) -> Response:
        body = {'table': table.name, 'key': key, 'partition': number,
                'slot': self._status.slot, 'served_by': self._web, 'stale': stale}
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
        recovering, _ = self._state.recovering()
        return {'name': table.name, 'partitions': table.partitions,
                'changelog': table.changelog.name, 'active': sorted(table.active),
                'recovering': sorted(n for n in recovering if n < table.partitions),
                'standby': {str(n): offset for n, offset in self._state.standbys_of(table).items()}}


def _moving_is_503(view: Handler) -> Handler:
    """A partition closed under a reader (it moved away meanwhile) answers 503, not 500."""
    def guarded(match: re.Match, params: dict[str, str]) -> Response:
        try:
            return view(match, params)
        except RuntimeError as exc:     # plyvel: the database was closed meanwhile
            return 503, {'error': f'the partition moved while reading: {exc}', 'stale': True}
    return guarded


def _value(table: Table, partition: TablePartition, key: Any) -> Any:
    """A key's value; for a windowed table, its live windows."""
    if table.windowing is None:
        return partition.get(key)
    size = table.windowing.size
    windows = [{'start': start, 'end': start + size, 'value': value}
               for start, value in key_windows(partition, key)]
    return windows or MISSING


def _key_from_text(table: Table, text: str) -> Any:
    """A key as typed in a URL, turned into the table's key type."""
    if table.user_key_codec.name == 'json':
        try:
            return json.loads(text)
        except ValueError:
            return text
    if table.user_key_codec.name == 'raw':
        return text.encode()
    return text


def _stored(table: Table, store: PartitionStore, key: Any) -> Any:
    raw = store.get(table.key_codec.dumps(key))
    return MISSING if raw is None else table.value_codec.loads(raw)

