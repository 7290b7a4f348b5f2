"""Table queries asked of other slots: bounded, cancelled when late, and honest about a
token the other workers refuse; keys must be percent-encoded UTF-8."""

import socket
import threading
from types import SimpleNamespace

import pytest
from harness import wait_for

import runner
from runner.runtime import queries, web
from runner.runtime.queries import BadPath, TableQueries, unquoted

APP = runner.App('queries-unit')
TABLE = APP.Table('counts', default=int)


@pytest.fixture
def silent_peer():
    """An address that accepts connections (in its backlog) and never answers."""
    with socket.create_server(('127.0.0.1', 0), backlog=64) as listener:
        host, port = listener.getsockname()
        yield f'{host}:{port}'


def table_queries(token=None):
    return TableQueries({'counts': TABLE}, SimpleNamespace(owners={}), 'me:1', token)


def test_asks_beyond_the_bound_are_refused_at_once(monkeypatch, silent_peer):
    monkeypatch.setattr(queries, 'MAX_ASKS', 2)
    monkeypatch.setattr(queries, 'SEARCH_TIMEOUT', 0.5)
    asking = table_queries()
    first = threading.Thread(target=asking._ask, args=([silent_peer] * 2, TABLE, 'k'))
    first.start()
    wait_for(lambda: asking._asks._value == 0, 5, 'the first lookup to take both places')
    assert asking._ask([silent_peer], TABLE, 'k') is None
    first.join(10)
    wait_for(lambda: asking._asks._value == 2, 5, 'the places given back')


def test_asks_not_started_by_the_timeout_are_cancelled(monkeypatch):
    monkeypatch.setattr(queries, 'SEARCH_THREADS', 1)
    monkeypatch.setattr(queries, 'SEARCH_TIMEOUT', 0.2)
    release, asked = threading.Event(), []

    def slow_peer(url, timeout, token):
        asked.append(url)
        release.wait(5)
        return 0, None
    monkeypatch.setattr(queries, 'get_json', slow_peer)
    asking = table_queries()
    assert asking._ask(['peer:1'] * 4, TABLE, 'k') == [(0, None)] * 4
    release.set()
    asking._asking.shutdown(wait=True)      # runs whatever is still queued
    assert len(asked) == 1                  # the three queued asks never ran


def test_a_peer_refusing_this_slot_s_token_is_a_502_naming_it(caplog):
    peer = web.WebServer('127.0.0.1', 0, token='theirs')
    peer.start([web.route('/tables/(?P<name>[^/]+)/(?P<key>.+)', lambda _m, _p: (200, {}))])
    try:
        address = '{}:{}'.format(*peer.address)
        status, body = table_queries(token='mine')._forward(address, '/tables/counts/k')
        assert status == 502 and address in body['error']
        assert any('refused this slot' in r.getMessage() for r in caplog.records)
        wait_for(lambda: any('another web token' in r.getMessage() for r in caplog.records),
                 5, 'the peer to warn too')
    finally:
        peer.stop()


@pytest.mark.parametrize('text', ['caf\u00c3\u00a9', '%FF', 'a%C3'])
def test_a_key_that_is_not_percent_encoded_utf8_is_a_bad_path(text):
    with pytest.raises(BadPath, match='percent-encode'):
        unquoted(text)


def test_a_percent_encoded_utf8_key_is_read_as_text():
    assert unquoted('caf%C3%A9') == 'café'
