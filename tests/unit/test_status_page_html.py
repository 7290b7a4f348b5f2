"""The status page: ``GET /`` as HTML for browsers, JSON for everyone else; every value
escaped, whatever names, keys and errors hold; without the token, a page holding no data."""

import base64
import hashlib
import json
import re
import urllib.request
from html.parser import HTMLParser

import pytest
from kafka import TopicPartition

from runner.logs import duration
from runner.runtime import web
from runner.runtime.page import StatusPage
from runner.runtime.status import SlotStatus

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
TOPIC = f'in{HOSTILE}'
TOKEN = 's3cret'
BROWSER = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'


class Elements(HTMLParser):
    """Every element of a page: (tag, attributes), and its text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def tags(self, name):
        return [attrs for tag, attrs in self.elements if tag == name]


def hostile_status() -> SlotStatus:
    """A slot whose topic, agent, table, key, error, rebalance cause and member address
    all try to inject markup."""
    status = SlotStatus(f'app{HOSTILE}', 0, 60.0)
    tp = TopicPartition(TOPIC, 0)
    name = f'{TOPIC}:0'
    status.assignment = frozenset([tp])
    status.web = '127.0.0.1:6066'
    status.members = lambda: ['127.0.0.1:6066', f'127.0.0.1:6067/{HOSTILE}']
    status.offsets = lambda: {'processed': {name: 5}, 'committed': {name: 4}, 'rebalances': 1,
                              'paused': [], 'queued': {name: 1}}
    status.stopped = lambda: {name: {'offset': 4, 'agent': f'agent{HOSTILE}',
                                     'error': f'ValueError: {HOSTILE}', 'key': HOSTILE}}
    status.agents = lambda: {f'agent{HOSTILE}': {'failed': 1, 'dead_lettered': 1,
                                                 'skipped': 0, 'retried': 0}}
    status.lag = lambda: {tp: 7}
    status.rates = lambda: {tp: 2.5, TopicPartition('gone', 0): 1.5}
    status.tables = lambda: [{'name': f'table{HOSTILE}', 'partitions': 1, 'changelog': 'c',
                              'active': [0], 'recovering': [], 'standby': {'0': 3}}]
    status.recovery = lambda: ([f'table{HOSTILE}[0]'], 12)
    status.global_tables = lambda: [
        {'name': f'global{HOSTILE}', 'global': True, 'changelog': f'c{HOSTILE}',
         'partitions': 3, 'offsets': {'0': 40}, 'loaded': False, 'read_since_start': 42},
        {'name': 'rates', 'global': True, 'changelog': 'rates-changelog', 'partitions': 1,
         'offsets': {'0': 7}, 'loaded': True, 'read_since_start': 7}]
    status.rebalances = lambda: [{'at': 1.0e9, 'generation': 3, 'cause': f'joined: {HOSTILE}',
                                  'assigned': [name], 'revoked': []}]
    status.errors = lambda: [{'at': 1.0e9, 'agent': f'agent{HOSTILE}', 'record': f'{TOPIC}[0]@3',
                              'action': 'dead_lettered', 'error': f'raised: {HOSTILE}'}]
    return status


def test_hostile_names_keys_and_errors_cannot_inject_markup():
    page = StatusPage().render(hostile_status().describe()).payload.decode()
    elements = Elements(page)
    assert len(elements.tags('script')) == 1          # the page's own, nothing injected
    assert elements.tags('img') == []
    assert not any(name.startswith('on') for _, attrs in elements.elements for name in attrs)
    text = ''.join(elements.text)
    assert text.count(HOSTILE) >= 9         # shown as text: app, topic, agent, table, key...
    [member] = elements.tags('a')
    assert member['class'] == 'member' and member['href'] == f'http://127.0.0.1:6067/{HOSTILE}/'


def test_the_page_shows_partitions_agents_tables_rebalances_errors_and_links():
    page = StatusPage().render(hostile_status().describe()).payload.decode()
    rows = re.findall(r'<tr data-partition="([^"]*)"><td>[^<]*</td>\s*<td class="n">(\d+)</td>\s*'
                      r'<td class="n">([\d.]+)</td>', page)
    assert rows == [(f'{TOPIC}:0'.replace('<', '&lt;').replace('>', '&gt;')
                     .replace('"', '&#34;'), '7', '2.5')]
    for section in ('id="agents"', 'id="tables"', 'id="rebalances"', 'id="errors"',
                    'id="members"', '12 changelog records remaining', '2001-09-09 01:46:40 UTC',
                    'dead-lettered', '4.0 records/s over the last minute'):
        assert section in page
    assert '<strong>127.0.0.1:6066</strong> (this slot)' in page


def test_the_page_shows_global_tables_loading_or_loaded_with_the_records_read():
    page = StatusPage().render(hostile_status().describe()).payload.decode()
    body = page.split('id="global-tables"')[1].split('<tbody>')[1].split('</tbody>')[0]
    rows = [' '.join(re.sub('<[^>]*>', '', cell)
                     for cell in re.findall(r'<td[^>]*>(.*?)</td>', row, re.DOTALL))
            for row in re.findall(r'<tr>(.*?)</tr>', body, re.DOTALL)]
    escaped = HOSTILE.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;').replace(
        '"', '&#34;')
    assert rows == [f'global{escaped} 3 loading 42', 'rates 1 loaded 7']
    assert f'global{HOSTILE}' in ''.join(Elements(page).text)


def test_a_slot_that_is_starting_has_a_page_too():
    page = StatusPage().render(SlotStatus('wc', 1, 60.0).describe()).payload.decode()
    assert 'wc: slot 1' in page and 'no partitions assigned' in page and 'none yet' in page


def test_the_page_allows_only_its_own_inline_script_and_style():
    page = StatusPage()
    text = page.render(hostile_status().describe()).payload.decode()
    policy = page.headers['Content-Security-Policy']
    for tag in ('script', 'style'):
        inline = re.search(f'<{tag}>(.*?)</{tag}>', text, re.DOTALL)[1]
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and 'unsafe' not in policy


@pytest.mark.parametrize(('accept', 'html'), [
    (BROWSER, True), ('text/html', True), ('*/*', False), ('', False),
    ('application/json', False), ('application/json, text/html;q=0.5', False),
    ('text/html;q=0', False), ('text/html;q=zz, application/json', False),
    ('TEXT/HTML; charset=utf-8', True)])
def test_html_is_for_clients_whose_accept_asks_for_it(accept, html):
    assert web.wants_html(accept) is html


@pytest.fixture
def slot_server():
    server = web.WebServer('127.0.0.1', 0, token=TOKEN)
    server.start([*web.status_routes(hostile_status(), StatusPage())])
    yield f'http://127.0.0.1:{server.address[1]}'
    server.stop()


def fetch(url, accept, token=None):
    headers = {'Accept': accept, **({'Authorization': f'Bearer {token}'} if token else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def test_without_the_token_the_page_holds_no_data_and_asks_for_it(slot_server):
    status, headers, page = fetch(f'{slot_server}/', BROWSER)
    assert status == 401 and headers['Content-Type'].startswith('text/html')
    assert 'id="token-form"' in page and 'data-locked="yes"' in page
    assert 'app' not in ''.join(Elements(page).text).lower().replace('runner', '')
    assert TOPIC not in page and 'alert' not in page and '6067' not in page
    assert fetch(f'{slot_server}/', BROWSER, 'wrong')[0] == 401


def test_with_the_token_a_browser_gets_the_page_and_others_the_json(slot_server):
    status, headers, page = fetch(f'{slot_server}/', BROWSER, TOKEN)
    assert status == 200 and headers['Content-Type'] == 'text/html; charset=utf-8'
    assert headers['Cache-Control'] == 'no-store' and 'data-locked="no"' in page
    status, headers, body = fetch(f'{slot_server}/', '*/*', TOKEN)
    assert status == 200 and headers['Content-Type'] == 'application/json'
    state = json.loads(body)
    assert state['lag'] == {f'{TOPIC}:0': 7} and state['rates'] == {f'{TOPIC}:0': 2.5}
    assert state['rate'] == 4.0         # a partition moved away counts in the minute's total
    assert state['members'][1].endswith(HOSTILE) and state['recovery']['remaining'] == 12
    assert fetch(f'{slot_server}/ready', BROWSER, TOKEN)[1]['Content-Type'] == 'application/json'


def test_durations_read_in_their_two_largest_units():
    assert [duration(s) for s in (5, 200, 7500, 360000)] == ['5s', '3m 20s', '2h 5m', '4d 4h']
