"""Table queries over HTTP: any slot on any host answers any key.

At every rebalance each slot learns, per changelog partition, the web address
of the member that owns it (see :mod:`runner.kafka.assignor`).  A key is
looked up in the partition its table's partitioner places it in, on its
owner (one hop away at most).  If the owner does not hold it there, the owner
asks every other owner before answering 404 — a producer may have placed the
key with another partitioner — so a lookup never misses a key that exists.

Answers say what is known: 404 only when the owners, caught up, do not hold
the key; while a partition moves or recovers, a local copy's value is served
with ``"stale": true``, and without one the answer is 503 with
``Retry-After``.  Every read holds the store it reads open (see
:mod:`runner.state.stores`).
"""

import concurrent.futures
import contextlib
import heapq
import itertools
import json
import logging
import re
import threading
import urllib.parse
from typing import Any

from ..app.context import MISSING
from ..app.globals import GlobalTable
from ..app.tables import Table
from ..app.windows import WINDOW_KEYS
from ..state.stores import Key, PartitionStore
from .context import SlotContext
from .status import SlotStatus
from .web import Response, Route, get_json, route

log = logging.getLogger(__name__)

#: How long the owners asked for a key placed elsewhere may take, and a forwarded request
#: (which may include such a search).
SEARCH_TIMEOUT = 5.0
FORWARD_TIMEOUT = 2 * SEARCH_TIMEOUT
#: Requests to other owners in flight at once, over all the lookups of a slot.
SEARCH_THREADS = 16
#: Requests to other owners in flight or waiting for a thread; a lookup that would need
#: more is answered 503 at once (with Retry-After) rather than queued.
MAX_ASKS = 4 * SEARCH_THREADS
PAGE = 100
MAX_PAGE = 1000


class TableQueries:
    """``GET /tables``, ``GET /tables/{name}`` and ``GET /tables/{name}/{key}``
    (``GET /tables`` lists the global tables too, as the slot's status summarises them).

    The routes exist from the moment the web server starts; until the slot's
    tables are open (:meth:`open`) they answer 503.
    """

    def __init__(self, tables: dict[str, Table], status: SlotStatus, web: str,
                 token: str | None = None) -> None:
        """``web``: this slot's advertised address; ``token``: the bearer token the other
        slots ask for (the same as this one's)."""
        self._tables = tables
        self._status = status
        self._web = web
        self._token = token
        self._slot: SlotContext | None = None
        self._asking = concurrent.futures.ThreadPoolExecutor(SEARCH_THREADS, 'search')
        self._asks = threading.BoundedSemaphore(MAX_ASKS)
        self._misplaced_warned: set[str] = set()

    def open(self, slot: SlotContext) -> None:
        """The slot's tables are open: answer from them from now on."""
        self._slot = slot

    def routes(self) -> list[Route]:
        return [route('/tables', self._when_open(self.list_tables)),
                route('/tables/(?P<name>[^/]+)', self._when_open(self.describe),
                      ('limit', 'after')),
                route('/tables/(?P<name>[^/]+)/(?P<key>.+)', self._when_open(self.lookup),
                      ('search', 'forwarded'))]

    def _when_open(self, view: Any) -> Any:
        def answer(match: re.Match, params: dict[str, str]) -> Response:
            if self._slot is None:
                return 503, {'error': 'the slot is starting: its tables are not open yet'}
            table = None
            try:
                if 'name' in match.groupdict():
                    table = self._tables.get(unquoted(match['name']))
                    if table is None:
                        return 404, {'error': f'no table {match["name"]!r}'}
                return view(table, match, params)
            except BadPath as exc:
                return 400, {'error': str(exc)}
        return answer

    # -- views -----------------------------------------------------------------

    def list_tables(self, _table: None, _match: re.Match, _params: dict[str, str]) -> Response:
        return 200, {'tables': self.summaries(), 'global_tables': self._status.global_tables()}

    def summaries(self) -> list[dict[str, Any]]:
        """Every table: its partition count, changelog, and this slot's partitions of it
        (active, recovering, standby with their changelog offset); none before the tables
        are open."""
        if self._slot is None:
            return []
        return [self._summary(table) for table in self._tables.values()]

    def describe(self, table: Table, _match: re.Match, params: dict[str, str]) -> Response:
        """This slot's partitions of a table, and a page of its keys in key order."""
        limit = page_limit(params)
        if limit is None:
            return 400, {'error': f'limit must be a whole number from 1 to {MAX_PAGE}'}
        after = params.get('after')
        start = None if after is None else _cursor(table, key_from_text(table, after))
        keys = self._page(table, start, limit + 1)
        return 200, {**self._summary(table), 'keys': [key_text(key) for key in keys[:limit]],
                     'next': url_text(table, keys[limit - 1]) if len(keys) > limit else None}

    def lookup(self, table: Table, match: re.Match, params: dict[str, str]) -> Response:
        key = key_from_text(table, unquoted(match['key']))
        if params.get('search'):
            return self._search_here(table, key)
        changelog_key = self._slot.key_of(table, key)
        with self._slot.active_partition(changelog_key) as partition:
            if partition is not None:
                value = _value(table, partition, key)
                if value is not MISSING:
                    return self._answer(table, key, changelog_key[1], value, stale=False)
        if partition is not None:
            return self._search_everywhere(table, key, changelog_key)
        owner = self._owner(changelog_key)
        if owner and owner != self._web and not params.get('forwarded'):
            return self._forward(owner, match.string)
        return self._from_copy(table, key, changelog_key)

    # -- steps of a lookup -------------------------------------------------------

    def _search_here(self, table: Table, key: Any) -> Response:
        """The key in any partition of ``table`` this slot owns (asked by another owner):
        200, 404 when every one of them is caught up, 503 while one is recovering."""
        for changelog_key in self._own(table):
            with self._slot.active_partition(changelog_key) as partition:
                value = MISSING if partition is None else _value(table, partition, key)
            if value is not MISSING:
                return self._answer(table, key, changelog_key[1], value, stale=False)
        owned = [n for n, web in enumerate(self._status.owners.get(table.changelog.name, []))
                 if web == self._web]
        if any((table.changelog.name, n) not in self._slot.active for n in owned):
            return 503, {'error': 'a partition of this table is still recovering here',
                         'stale': True}
        return 404, {'error': 'no such key here', 'stale': False}

    def _search_everywhere(self, table: Table, key: Any, placed: Key) -> Response:
        """The owner of a key's partition does not hold it: look in every other partition,
        here and at every other owner (in parallel, bounded), before saying 404."""
        answers = [self._search_here(table, key)]
        owners = self._status.owners.get(table.changelog.name, [])
        others = sorted({web for web in owners if web != self._web} - {None})
        asked = self._ask(others, table, key)
        if asked is None:
            return 503, {'error': 'too many lookups are asking the other owners; try again',
                         'stale': True}
        refused = [web for web, (status, _) in zip(others, asked, strict=True) if status == 401]
        if refused:
            return self._token_refused(refused)
        answers += asked
        found = [body for status, body in answers if status == 200]
        if found:
            self._warn_misplaced(table, found[0]['partition'], placed[1])
            return 200, {**found[0], 'misplaced': True}
        if None in owners or any(status != 404 for status, _ in answers):
            return 503, {'error': 'not every owner of this table could say whether it holds '
                                  'the key; try again', 'stale': True}
        return 404, {**self._body(table, key, placed[1], stale=False), 'error': 'no such key'}

    def _warn_misplaced(self, table: Table, found: int, placed: int) -> None:
        if table.name not in self._misplaced_warned:
            self._misplaced_warned.add(table.name)
            log.warning('table %s holds a key in partition %d where its partitioner gives %d: '
                        'its producers place keys with another partitioner (declare it on the '
                        'topic, e.g. partitioner=\'crc32\'); lookups ask every owner meanwhile',
                        table.name, found, placed)

    def _ask(self, webs: list[str], table: Table, key: Any) -> list[tuple[int, Any]] | None:
        """``GET ...?search=1`` at every one of ``webs``, in parallel, within the search
        timeout: (status, body) of each (status 0 when one did not answer); None, asking
        nobody, when that would pass :data:`MAX_ASKS`.  What has not started by the
        timeout is cancelled, so no ask outlives its lookup in the queue."""
        if not self._reserve(len(webs)):
            return None
        path = (f'/tables/{urllib.parse.quote(table.name, safe="")}/'
                f'{urllib.parse.quote(url_text(table, key), safe="")}?search=1')
        asked = []
        for web in webs:
            future = self._asking.submit(get_json, f'http://{web}{path}', SEARCH_TIMEOUT,
                                         self._token)
            future.add_done_callback(lambda _future: self._asks.release())
            asked.append(future)
        done, late = concurrent.futures.wait(asked, SEARCH_TIMEOUT + 1)
        for future in late:
            future.cancel()
        return [future.result() if future in done else (0, None) for future in asked]

    def _reserve(self, count: int) -> bool:
        """Take ``count`` places among the asks in flight, all or none."""
        taken = 0
        while taken < count and self._asks.acquire(blocking=False):
            taken += 1
        if taken < count:
            for _ in range(taken):
                self._asks.release()
            return False
        return True

    def _token_refused(self, webs: list[str]) -> Response:
        """Other slots refused this slot's token: the workers were given different ones."""
        names = ', '.join(webs)
        log.warning('the slot(s) at %s refused this slot\'s web token: every worker of the app '
                    'must be given the same web_token', names)
        return 502, {'error': f'the slot(s) at {names} refused this slot\'s token (the workers '
                              'have different web tokens)'}

    def _from_copy(self, table: Table, key: Any, changelog_key: Key) -> Response:
        """No owner can answer now: a local standby or recovering copy's value, stale."""
        with self._slot.state.stores.reading(changelog_key) as store:
            value = MISSING if store is None else _stored(table, store, key)
        if value is not MISSING:
            return self._answer(table, key, changelog_key[1], value, stale=True)
        return 503, {'error': f'partition {changelog_key[1]} of {table.name!r} is moving or '
                              'recovering; try again', 'partition': changelog_key[1],
                     'stale': True}

    def _forward(self, owner: str, path: str) -> Response:
        """Ask the owner, with the path exactly as it came (its key still percent-encoded)."""
        status, body = get_json(f'http://{owner}{path}?forwarded=1', FORWARD_TIMEOUT,
                                self._token)
        if status == 0:
            return 503, {'error': f'the owner at {owner} did not answer; try again',
                         'stale': True}
        if status == 401:
            return self._token_refused([owner])
        return status, body

    # -- helpers ---------------------------------------------------------------

    def _own(self, table: Table) -> list[Key]:
        return sorted(key for key in list(self._slot.active) if key[0] == table.changelog.name)

    def _owner(self, changelog_key: Key) -> str | None:
        changelog, number = changelog_key
        owners = self._status.owners.get(changelog, [])
        return owners[number] if number < len(owners) else None

    def _page(self, table: Table, start: bytes | None, count: int) -> list[Any]:
        """Up to ``count`` keys after ``start`` over this slot's partitions, in key order."""
        with contextlib.ExitStack() as stack:
            partitions = [stack.enter_context(self._slot.active_partition(key))
                          for key in self._own(table)]
            walks = [stack.enter_context(contextlib.closing(p.ordered(after=start)))
                     for p in partitions if p is not None]    # closed before their stores
            merged = heapq.merge(*walks, key=lambda item: item[0])
            keys = (table.routing_key(key) for _, key, _ in merged)
            if table.windowing is not None:       # one entry per key, not per window
                keys = (key for key, _ in itertools.groupby(keys))
            return list(itertools.islice(keys, count))

    def _body(self, table: Table, key: Any, number: int, stale: bool) -> dict[str, Any]:
        return {'table': table.name, 'key': key, 'partition': number,
                'slot': self._status.slot, 'served_by': self._web, 'stale': stale}

    def _answer(self, table: Table, key: Any, number: int, value: Any, stale: bool) -> Response:
        if table.windowing is not None:
            size = table.windowing.size
            value = [{'start': start, 'end': start + size, 'value': window}
                     for start, window in value] or MISSING
        body = self._body(table, key, number, stale)
        if value is MISSING:
            return 404, {**body, 'error': 'no such key'}
        return 200, {**body, 'value': value}

    def _summary(self, table: Table) -> dict[str, Any]:
        state, changelog = self._slot.state, table.changelog.name
        recovering, _ = state.recovering()
        return {'name': table.name, 'partitions': self._slot.layout.partitions(table),
                'changelog': changelog,
                'active': [number for _, number in self._own(table)],
                'recovering': sorted(n for c, n in recovering if c == changelog),
                'standby': {str(n): offset for n, offset in state.standbys(table).items()}}


def _value(table: Table, partition: Any, key: Any) -> Any:
    """A key's value in a live partition; for a windowed table, its windows (or MISSING)."""
    if table.windowing is None:
        return partition.get(key)
    return partition.windows(key) or MISSING


def _stored(table: Table, store: PartitionStore, key: Any) -> Any:
    """What a store (a standby or recovering copy) holds for ``key``."""
    if table.windowing is not None:
        windows = sorted((start, table.value_codec.loads(raw))
                         for (k, start), raw in ((WINDOW_KEYS.loads(raw_key), raw)
                                                 for raw_key, raw in store.items(
                                                     WINDOW_KEYS.prefix(key))) if k == key)
        return windows or MISSING
    raw = store.get(table.stored_key_codec.dumps(key))
    return MISSING if raw is None else table.value_codec.loads(raw)


def _cursor(table: Table, key: Any) -> bytes:
    """Where a page after ``key`` starts in stored-key order (past every window of it)."""
    if table.windowing is not None:
        return WINDOW_KEYS.prefix(key) + b'\xff'
    return table.stored_key_codec.dumps(key)


def page_limit(params: dict[str, str]) -> int | None:
    """The ``limit`` of a page of keys asked for (PAGE by default); None if it is not a
    whole number from 1 to MAX_PAGE."""
    try:
        limit = int(params.get('limit', PAGE))
    except ValueError:
        return None
    return limit if 1 <= limit <= MAX_PAGE else None


class BadPath(ValueError):
    """A path whose percent-encoding is not of UTF-8 text."""


def unquoted(text: str) -> str:
    """A path segment's text: it must be percent-encoded UTF-8 (raw bytes beyond ASCII come
    through http.server as Latin-1, which would name another key)."""
    try:
        if not text.isascii():
            raise UnicodeError
        return urllib.parse.unquote(text, errors='strict')
    except UnicodeError:
        raise BadPath('percent-encode the key (and table name) as UTF-8, such as %C3%A9 for '
                      'é') from None


def key_from_text(table: Table | GlobalTable, text: str) -> Any:
    """A key as typed in a URL, turned into the table's key type."""
    if table.key_codec.name == 'json':
        try:
            return json.loads(text)
        except ValueError:
            return text
    if table.key_codec.name == 'raw':
        return text.encode()
    return text


def url_text(table: Table | GlobalTable, key: Any) -> str:
    """A key as a URL carries it (the inverse of :func:`_key_from_text`)."""
    if table.key_codec.name == 'json':
        return json.dumps(key)
    return key_text(key)


def key_text(key: Any) -> Any:
    """A key as JSON can carry it: bytes as text, the rest as it is."""
    return key.decode(errors='backslashreplace') if isinstance(key, bytes) else key
