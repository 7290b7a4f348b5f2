"""The address a slot advertises to the other members, and how the web server bounds what
any client can make it hold."""

import contextlib
import socket
import threading
from types import SimpleNamespace

import pytest
from harness import wait_for

from runner.config import Options, check_settings
from runner.errors import UsageError
from runner.runtime import web
from runner.runtime.web import advertised


def test_a_slot_advertises_its_bind_address_or_what_it_is_told():
    assert advertised(('127.0.0.2', 80), None, ['127.0.0.1:9092']) == '127.0.0.2:80'
    assert advertised(('0.0.0.0', 80), 'web1.example', []) == 'web1.example:80'
    assert advertised(('0.0.0.0', 80), 'web1.example:9000', []) == 'web1.example:9000'


def test_a_wildcard_bind_advertises_the_address_it_reaches_the_broker_from():
    assert advertised(('0.0.0.0', 80), None, ['127.0.0.1:9092']) == '127.0.0.1:80'
    assert advertised(('0.0.0.0', 80), None, ['no-such-host.invalid:9092',
                                               '127.0.0.1:9092']) == '127.0.0.1:80'


def test_each_slot_advertises_its_own_port():
    options = Options(app='a', workers=3, cli=check_settings(
        {'web_advertise': 'web1.example:7000', 'web_port': '6000'}, 'the command line'))
    assert [options.settings_for({}, i).web_advertise for i in range(3)] == [
        'web1.example:7000', 'web1.example:7001', 'web1.example:7002']


@pytest.mark.parametrize('value', ['', ':80', 'host:port', 'host:0', 'a b', 'http://h'])
def test_a_bad_advertised_address_is_bad_usage(value):
    with pytest.raises(UsageError, match='expected HOST or HOST:PORT'):
        check_settings({'web_advertise': value}, 'the command line', UsageError)


def test_ipv6_addresses_are_advertised_in_brackets():
    assert advertised(('::1', 80, 0, 0), None, []) == '[::1]:80'
    assert advertised(('0.0.0.0', 80), '[fd00::1]:9000', []) == '[fd00::1]:9000'
    options = Options(app='a', workers=2, cli=check_settings(
        {'web_advertise': '[fd00::1]:7000'}, 'the command line'))
    assert options.settings_for({}, 1).web_advertise == '[fd00::1]:7001'
    assert check_settings({'web_advertise': 'fd00::1'}, 'x') == {'web_advertise': 'fd00::1'}


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(web, 'MAX_CONNECTIONS', 3)
    monkeypatch.setattr(web._Handler, 'timeout', 0.5)
    made = web.WebServer('127.0.0.1', 0)
    made.start([web.route('/ok', lambda _m, _p: (200, {'ok': True}))])
    yield made
    made.stop()


def exchange(server, raw: bytes) -> bytes:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(raw)
        with contextlib.suppress(OSError):      # the server may have answered and closed
            sock.shutdown(socket.SHUT_WR)
        return b''.join(iter(lambda: sock.recv(65536), b''))


def test_head_answers_like_get_without_a_body(server):
    answer = exchange(server, b'HEAD /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    assert answer.startswith(b'HTTP/1.1 200') and answer.endswith(b'\r\n\r\n')


def test_a_request_body_is_skipped_not_taken_for_a_second_request(server):
    body = b'GET /nothing HTTP/1.1\r\n\r\n'
    answer = exchange(server, b'GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
                      + f'Content-Length: {len(body)}\r\n\r\n'.encode() + body)
    assert answer.count(b'HTTP/1.1') == 1 and b'"ok": true' in answer


def test_an_oversized_body_is_refused(server):
    answer = exchange(server, b'GET /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n')
    assert answer.startswith(b'HTTP/1.1 413')


def test_idle_connections_give_way_to_a_new_one_when_every_place_is_taken(server):
    idle = [socket.create_connection(server.address, timeout=5) for _ in range(3)]
    try:
        wait_for(lambda: server._server.served == 3, 5, 'three connections served')
        assert exchange(server, b'GET /ok HTTP/1.1\r\nHost: x\r\n\r\n').startswith(b'HTTP/1.1 200')
        assert idle[0].recv(1) == b''       # the oldest gave way
        for sock in idle[1:]:               # closed by the server after its idle timeout
            assert sock.recv(1) == b''
        wait_for(lambda: server._server.served == 0, 5, 'the connections released')
    finally:
        for sock in idle:
            sock.close()


def test_connections_beyond_the_cap_are_answered_503_while_all_are_inside_requests(
        monkeypatch):
    monkeypatch.setattr(web, 'MAX_CONNECTIONS', 3)
    release = threading.Event()
    made = web.WebServer('127.0.0.1', 0)
    made.start([web.route('/block', lambda _m, _p: (200, {'done': release.wait(10)})),
                web.route('/ok', lambda _m, _p: (200, {'ok': True}))])
    busy = [socket.create_connection(made.address, timeout=5) for _ in range(3)]
    try:
        for sock in busy:
            sock.sendall(b'GET /block HTTP/1.1\r\nHost: x\r\n\r\n')
        wait_for(lambda: all(since is None for since in made._server._open.values())
                 and made._server.served == 3, 5, 'three requests inside the server')
        assert exchange(made, b'GET /ok HTTP/1.1\r\nHost: x\r\n\r\n').startswith(b'HTTP/1.1 503')
        release.set()
        for sock in busy:
            assert sock.recv(100).startswith(b'HTTP/1.1 200')
    finally:
        release.set()
        for sock in busy:
            sock.close()
        made.stop()


def trickle(sock: socket.socket) -> bool:
    """Send one more byte of a request head that never ends; False once the server closed."""
    try:
        sock.sendall(b'X')
        sock.settimeout(0.1)
        return sock.recv(1) != b''
    except TimeoutError:
        return True
    except OSError:
        return False


def test_a_request_head_trickled_in_a_byte_at_a_time_is_cut_off_at_its_deadline(server):
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b'GET /ok HTTP/1.1\r\n')
        wait_for(lambda: not trickle(sock), 10, 'the server to close the trickling connection')


def test_slow_clients_holding_every_connection_never_fail_the_liveness_probe():
    """The issue's attack: 64 clients each sending a byte of a request head now and then."""
    made = web.WebServer('127.0.0.1', 0)
    made.start(web.status_routes(SimpleNamespace(live=lambda: (True, None))))
    slow = [socket.create_connection(made.address, timeout=5) for _ in range(web.MAX_CONNECTIONS)]
    try:
        for sock in slow:
            sock.sendall(b'GET /health HTTP/1.1\r\nX: ')
        wait_for(lambda: made._server.served == web.MAX_CONNECTIONS, 10, 'every place taken')
        for _ in range(20):
            for sock in slow[:8]:
                trickle(sock)
            assert exchange(made, b'GET /health HTTP/1.1\r\nHost: x\r\n\r\n').startswith(
                b'HTTP/1.1 200')
    finally:
        for sock in slow:
            sock.close()
        made.stop()


def test_a_client_that_leaves_before_reading_its_answer_leaves_no_traceback(capfd, caplog):
    made = web.WebServer('127.0.0.1', 0)
    answered = threading.Event()

    def large(_m, _p):
        answered.set()
        return 200, {'data': 'x' * 4_000_000}
    made.start([web.route('/large', large)])
    try:
        for _ in range(3):
            answered.clear()
            with socket.create_connection(made.address, timeout=5) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
                sock.sendall(b'GET /large HTTP/1.1\r\nHost: x\r\n\r\n')
                answered.wait(5)
        wait_for(lambda: made._server.served == 0, 10, 'the connections released')
    finally:
        made.stop()
    assert 'Traceback' not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelname in ('ERROR', 'CRITICAL')]


@pytest.mark.parametrize('line', [b'garbage', b'\x16\x03\x01\x02\x00', b'PUT /ok'])
def test_a_bad_request_line_gets_an_http_answer(server, line):
    answer = exchange(server, line + b'\r\n\r\n')
    assert answer.startswith((b'HTTP/1.1 4', b'HTTP/1.1 501')), answer
    assert b'application/json' in answer


TOKEN = 'tok-3f9a'


@pytest.fixture
def guarded():
    made = web.WebServer('127.0.0.1', 0, token=TOKEN)
    made.start([web.route('/ok', lambda _m, _p: (200, {'ok': True})),
                web.route('/health', lambda _m, _p: (200, {'live': True})),
                web.route('/page', lambda _m, p: (200, p), ('limit', 'after')),
                web.route('/boom', lambda _m, p: 1 / 0)])
    yield made
    made.stop()


def url(server, path):
    return f'http://127.0.0.1:{server.address[1]}{path}'


def test_with_a_token_every_path_but_health_asks_for_it(guarded):
    assert web.get_json(url(guarded, '/health'), 5) == (200, {'live': True})
    for path in ('/ok', '/nothing', '/'):
        status, body = web.get_json(url(guarded, path), 5)
        assert status == 401 and 'bearer token' in body['error']
        assert web.get_json(url(guarded, path), 5, 'wrong')[0] == 401
    assert web.get_json(url(guarded, '/ok'), 5, TOKEN) == (200, {'ok': True})
    assert web.get_json(url(guarded, '/nothing'), 5, TOKEN)[0] == 404
    answer = exchange(guarded, b'GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
                      b'Authorization: Basic dTpw\r\n\r\n')
    assert answer.startswith(b'HTTP/1.1 401') and b'WWW-Authenticate: Bearer\r\n' in answer


def test_a_token_with_bytes_beyond_ascii_is_refused_not_a_500(guarded):
    answer = exchange(guarded, b'GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
                      b'Authorization: Bearer \xff\xfe\r\n\r\n')
    assert answer.startswith(b'HTTP/1.1 401')


@pytest.mark.parametrize('method', [b'POST', b'PUT', b'DELETE', b'PATCH', b'OPTIONS', b'BREW'])
def test_methods_other_than_get_and_head_are_not_allowed(server, method):
    answer = exchange(server, method + b' /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
                      b'Content-Length: 2\r\n\r\n{}')
    assert answer.startswith(b'HTTP/1.1 405') and b'Allow: GET, HEAD\r\n' in answer
    assert b'application/json' in answer and answer.count(b'HTTP/1.1') == 1


def test_unknown_or_repeated_query_parameters_are_bad_requests(guarded):
    assert web.get_json(url(guarded, '/page?limit=2&after=a'), 5, TOKEN) == (
        200, {'limit': '2', 'after': 'a'})
    for query in ('?bogus=1', '?limit=1&limit=2', '?limit=1&x'):
        status, body = web.get_json(url(guarded, f'/page{query}'), 5, TOKEN)
        assert status == 400 and 'it takes: after, limit' in body['error']
    assert web.get_json(url(guarded, '/ok?x=%zz'), 5, TOKEN)[0] == 400


def test_unknown_paths_are_404_with_a_json_error(server):
    assert web.get_json(url(server, '/no/such%00path'), 5) == (
        404, {'error': 'no such path: /no/such%00path'})


def test_a_failing_view_is_a_500_only_for_a_real_bug(guarded):
    assert web.get_json(url(guarded, '/boom'), 5, TOKEN)[0] == 500


@pytest.mark.parametrize(('host', 'loopback'), [('127.0.0.1', True), ('127.0.0.2', True),
                                                ('localhost', True), ('0.0.0.0', False)])
def test_the_server_knows_whether_it_is_bound_to_loopback_only(host, loopback):
    made = web.WebServer(host, 0)
    try:
        assert made.loopback is loopback
    finally:
        made.stop()


def test_the_skip_route_answers_post_only_with_the_token_and_checks_its_parameters():
    asked = []
    made = web.WebServer('127.0.0.1', 0, token=TOKEN)
    made.start([web.skip_route(lambda *request: asked.append(request) or (200, {'ok': 1}))])
    try:
        skip = url(made, '/skip?topic=t&partition=1&offset=52')
        assert web.get_json(skip, 5, method='POST')[0] == 401
        assert web.get_json(skip, 5, TOKEN, method='POST') == (200, {'ok': 1})
        assert asked == [('t', 1, 52)]
        answer = exchange(made, b'GET /skip?topic=t&partition=1&offset=52 HTTP/1.1\r\n'
                          b'Host: x\r\nConnection: close\r\n'
                          + f'Authorization: Bearer {TOKEN}\r\n\r\n'.encode())
        assert answer.startswith(b'HTTP/1.1 405') and b'Allow: POST\r\n' in answer
        for query in ('topic=t&partition=x&offset=1', 'topic=t&offset=1'):
            status, body = web.get_json(url(made, f'/skip?{query}'), 5, TOKEN, method='POST')
            assert status == 400 and 'topic, partition and offset' in body['error']
        assert asked == [('t', 1, 52)]
    finally:
        made.stop()
