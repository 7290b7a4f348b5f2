"""Queries of global tables over HTTP: every slot answers every key from its own copy.

A global table is held whole by every slot (see :mod:`runner.state.globals`),
so ``GET /tables/NAME/KEY`` is answered locally and never forwarded: no
owner is asked, whatever partition the key's producer put it in.  Until the
slot has loaded its global tables, a key found is served with
``"stale": true`` and a key not found is 503 (it may not have been read yet).
"""

import re
from typing import Any

from ..app.context import MISSING
from ..app.globals import GlobalTable
from ..state.globals import GlobalReader
from .queries import MAX_PAGE, BadPath, key_from_text, key_text, page_limit, unquoted, url_text
from .status import SlotStatus
from .web import Response, Route, route


class GlobalQueries:
    """``GET /tables/{name}`` and ``GET /tables/{name}/{key}`` of the app's global tables
    (their routes come before those of the partitioned tables)."""

    def __init__(self, tables: dict[str, GlobalTable], status: SlotStatus, web: str) -> None:
        self._tables = tables
        self._status = status
        self._web = web
        self._reader: GlobalReader | None = None

    def open(self, reader: GlobalReader) -> None:
        """The slot's global tables are open: answer from them from now on."""
        self._reader = reader

    def routes(self) -> list[Route]:
        if not self._tables:
            return []
        names = '|'.join(re.escape(name) for name in sorted(self._tables))
        return [route(f'/tables/(?P<name>{names})', self._when_open(self.describe),
                      ('limit', 'after')),
                route(f'/tables/(?P<name>{names})/(?P<key>.+)', self._when_open(self.lookup))]

    def summaries(self) -> list[dict[str, Any]]:
        """Every global table: its changelog offsets here, whether it is loaded and the
        records read since the start; none before the tables are open."""
        reader = self._reader
        if reader is None:
            return []
        return [reader.describe(table) for _, table in sorted(self._tables.items())]

    def _when_open(self, view: Any) -> Any:
        def answer(match: re.Match, params: dict[str, str]) -> Response:
            if self._reader is None:
                return 503, {'error': 'the slot is starting: its global tables are not open yet'}
            try:
                return view(self._tables[match['name']], match, params)
            except BadPath as exc:
                return 400, {'error': str(exc)}
        return answer

    def describe(self, table: GlobalTable, _match: re.Match, params: dict[str, str]) -> Response:
        """The table's changelog offsets here, and a page of its keys in stored-key order."""
        limit = page_limit(params)
        if limit is None:
            return 400, {'error': f'limit must be a whole number from 1 to {MAX_PAGE}'}
        after = params.get('after')
        start = None if after is None else table.key_codec.dumps(key_from_text(table, after))
        keys = []
        for _, key, _ in self._reader.stores[table.name].decoded(table, start):
            keys.append(key)
            if len(keys) > limit:
                break
        return 200, {**self._reader.describe(table),
                     'keys': [key_text(key) for key in keys[:limit]],
                     'next': url_text(table, keys[limit - 1]) if len(keys) > limit else None}

    def lookup(self, table: GlobalTable, match: re.Match, _params: dict[str, str]) -> Response:
        key = key_from_text(table, unquoted(match['key']))
        value = self._reader.get(table, key)
        loaded = self._reader.loaded.is_set()
        body = {'table': table.name, 'key': key, 'global': True, 'slot': self._status.slot,
                'served_by': self._web, 'stale': not loaded}
        if value is not MISSING:
            return 200, {**body, 'value': value}
        if not loaded:
            return 503, {**body, 'error': f'global table {table.name!r} is still loading here; '
                                          'try again'}
        return 404, {**body, 'error': 'no such key'}
