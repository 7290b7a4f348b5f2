"""The slot's HTTP server: health, readiness, state and table queries as JSON, on its own threads.

It never touches the Kafka consumer, so it keeps answering while the group rebalances.
Its resources are bounded whoever connects: at most ``MAX_CONNECTIONS`` are
served at once, each request (its head, and a body, which no route reads and
which is skipped up to ``MAX_BODY`` bytes) must arrive whole within
``IDLE_TIMEOUT`` seconds of the server waiting for it (the connection is closed
otherwise, however slowly its bytes trickle in), and the listen backlog holds
``platform.LISTEN_BACKLOG`` connections.  When every connection is taken, a new one
makes the oldest connection that is still waiting for its request head give way:
slow or idle clients cannot keep a liveness probe out.  Only when every
connection is inside a request is a new one answered 503 and closed.

With a token, every path but ``/health`` answers only requests that carry it
(``Authorization: Bearer TOKEN``); the others get 401.  A route with a page
(``GET /``: :mod:`runner.runtime.page`) answers a client whose ``Accept`` asks for
``text/html`` with its JSON rendered as HTML, and one without the token with a
page that holds no data and asks for it.  Only GET and HEAD are
served (405 otherwise), but for ``POST /skip`` (see ``runner skip``), which answers
only POST, and a route takes only the query parameters it names (400 otherwise):
nothing a client sends makes a 500.
"""

import contextlib
import hmac
import http.client
import io
import ipaddress
import json
import logging
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, Protocol

from .. import platform
from ..config import join_host_port, split_host_port
from ..errors import DiskError
from .status import SlotStatus

log = logging.getLogger(__name__)

#: Connections served at once; more are answered 503 and closed.
MAX_CONNECTIONS = 64
#: Seconds a request's head (its line and headers) may take to arrive, counted from the
#: moment the server waits for it (after connecting, or after the previous answer).
IDLE_TIMEOUT = 10.0
#: Seconds a slot handing over to its successor gives the requests it is answering.
FINISH_GRACE = 1.0
#: A connection accepted (or answered) this many seconds ago may be sending a request.
JUST_OPENED = 0.1
#: The largest request body skipped; a larger one is answered 413.
MAX_BODY = 64 * 1024
_BUSY_BODY = b'{"error": "too many connections, try again"}\n'
BUSY = (b'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n'
        b'Retry-After: 1\r\nConnection: close\r\n'
        + f'Content-Length: {len(_BUSY_BODY)}\r\n\r\n'.encode() + _BUSY_BODY)

class Text(NamedTuple):
    """A body sent as it is (not as JSON), with its content type."""

    content_type: str
    payload: bytes


class Page(Protocol):
    """A route's answer as HTML, for browsers (see :class:`runner.runtime.page.StatusPage`)."""

    #: Headers sent with the page.
    headers: dict[str, str]

    def render(self, body: Any) -> Text:
        """The page showing ``body``, the route's JSON answer."""

    def locked(self) -> Text:
        """The page for a client without the token: it holds no data."""


Response = tuple[int, Any]
#: ``handler(match, query_parameters) -> (status, JSON body or Text)``
Handler = Callable[[re.Match, dict[str, str]], Response]
#: A path pattern, its handler, the query parameters it takes, its method, and its page.
Route = tuple[re.Pattern, Handler, frozenset[str], str, Page | None]
#: The path served without a token: liveness probes carry none.
OPEN_PATH = '/health'


def route(pattern: str, handler: Handler, params: Sequence[str] = (),
          method: str = 'GET', page: Page | None = None) -> Route:
    """A route for paths matching ``pattern`` entirely (named groups are URL-decoded) that
    takes the query parameters ``params`` (any other is answered 400), answering ``method``
    (GET routes answer HEAD too); with a ``page``, as HTML to clients asking for it."""
    return re.compile(pattern), handler, frozenset(params), method, page


def wants_html(accept: str) -> bool:
    """Whether an ``Accept`` header names ``text/html``, and prefers it to JSON (a browser:
    ``*/*``, as curl and scripts send, is not asking for HTML)."""
    weights = {}
    for item in accept.split(','):
        media, *parameters = (part.strip() for part in item.split(';'))
        quality = next((value for name, _, value in (p.partition('=') for p in parameters)
                        if name.strip() == 'q'), '1')
        try:
            weights[media.lower()] = float(quality)
        except ValueError:
            continue
    html = weights.get('text/html', 0.0)
    return html > 0 and html >= weights.get('application/json', 0.0)


def status_routes(status: SlotStatus, page: Page | None = None) -> list[Route]:
    """``GET /health``, ``GET /ready`` and ``GET /`` (with ``page``, as HTML to browsers)
    for one slot."""
    def health(_match: re.Match, _params: dict[str, str]) -> Response:
        live, reason = status.live()
        return (200 if live else 503), {'live': live, 'reason': reason}

    def ready(_match: re.Match, _params: dict[str, str]) -> Response:
        is_ready, reason = status.ready()
        return (200 if is_ready else 503), {'ready': is_ready, 'reason': reason}

    return [route('/health', health), route('/ready', ready),
            route('/', lambda _match, _params: (200, status.describe()), page=page)]


def metrics_route(scrape: Callable[[], tuple[str, bytes]]) -> Route:
    """``GET /metrics``: what ``scrape()`` gives (a content type and a body)."""
    return route('/metrics', lambda _match, _params: (200, Text(*scrape())))


def skip_route(skip: Callable[[str, int, int], Response]) -> Route:
    """``POST /skip?topic=T&partition=P&offset=N``: ``skip(T, P, N)`` answers (see
    ``runner skip``)."""
    def handler(_match: re.Match, params: dict[str, str]) -> Response:
        if not (params.keys() == {'topic', 'partition', 'offset'}
                and params['partition'].isdigit() and params['offset'].isdigit()):
            return 400, {'error': 'POST /skip takes topic, partition and offset (numbers)'}
        return skip(params['topic'], int(params['partition']), int(params['offset']))
    return route('/skip', handler, ('topic', 'partition', 'offset'), method='POST')


def get_json(url: str, timeout: float, token: str | None = None,
             method: str = 'GET') -> tuple[int, Any]:
    """``GET url`` (or another ``method``, without a body) from another slot (or anywhere),
    with the bearer ``token`` if given: (status, JSON body); (0, None) if unreachable."""
    headers = {'Authorization': f'Bearer {token}'} if token else {}
    try:
        request = urllib.request.Request(url, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.load(exc)
        except (http.client.HTTPException, OSError, ValueError):
            return 0, None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return 0, None


def advertised(bound: tuple[str, int], advertise: str | None, brokers: list[str]) -> str:
    """The address other members use to reach this server: ``advertise`` when given
    (``HOST`` or ``HOST:PORT``); else the bound address; for a wildcard bind, the
    address this host reaches the broker from (its name may not resolve elsewhere)."""
    host, port = bound[:2]
    if advertise:
        name, given = split_host_port(advertise)
        return join_host_port(name, given or port)
    if host in ('', '0.0.0.0', '::'):
        family = socket.AF_INET if host == '0.0.0.0' else socket.AF_UNSPEC
        host = _local_address(brokers, family) or socket.getfqdn()
    return join_host_port(host, port)


def _local_address(brokers: list[str], family: int) -> str | None:
    """The local address of a route to the first broker that resolves (no packet is sent)."""
    for server in brokers:
        try:
            name, port = split_host_port(server)
            kind, socktype, proto, _, address = socket.getaddrinfo(
                name, port, family, socket.SOCK_DGRAM)[0]
            with socket.socket(kind, socktype, proto) as probe:
                probe.connect(address)
                return probe.getsockname()[0]
        except (OSError, ValueError, IndexError):
            continue
    return None


class _DeadlineReader(io.RawIOBase):
    """A connection's incoming bytes, each read bounded by the deadline of the request being
    read (a client trickling a byte at a time cannot stretch it)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline = time.monotonic() + IDLE_TIMEOUT

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError('the request did not arrive in time')
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server: '_Server'
    protocol_version = 'HTTP/1.1'
    #: A request line without a version gets a full HTTP/1.1 answer, never HTTP/0.9's bare body.
    default_request_version = 'HTTP/1.1'
    error_content_type = 'application/json'
    error_message_format = '{"error": "%(code)d %(message)s"}\n'
    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self._incoming = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._incoming)

    def handle_one_request(self) -> None:
        """Wait for the next request (its head due within ``IDLE_TIMEOUT``) and answer it."""
        self._incoming.deadline = time.monotonic() + self.timeout
        self.server.waiting(self.connection, True)
        super().handle_one_request()

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self.server.waiting(self.connection, False)     # its head is in: inside a request
        self.connection.settimeout(self.timeout)        # for the body and the answer
        return parsed

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_POST(self) -> None:
        self._answer(send_body=True)

    def __getattr__(self, name: str) -> Any:
        """``do_PUT``, ``do_DELETE``, ...: every other method is answered 405."""
        if name.startswith('do_'):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        if self._skip_body():
            self._refuse_method('GET, HEAD')

    def _refuse_method(self, allow: str) -> None:
        self._send(405, {'error': f'method {self.command} not allowed: only {allow}'},
                   True, {'Allow': allow})

    def _answer(self, send_body: bool) -> None:
        if not self._skip_body():
            return
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip('/') or '/'
        page = self._page(path)
        if path != OPEN_PATH and not self._authorized():
            self._warn_if_from_a_slot(url.query)
            body = page.locked() if page else {
                'error': 'this path needs the bearer token (Authorization: Bearer TOKEN)'}
            self._send(401, body, send_body,
                       {'WWW-Authenticate': 'Bearer', **(page.headers if page else {})})
            return
        answer = self._dispatch(path, url.query)
        if answer is None:
            self._refuse_method('POST' if self.command in ('GET', 'HEAD') else 'GET, HEAD')
        elif page and answer[0] == 200:
            self._send(*self._rendered(page, answer[1], path), send_body, page.headers)
        else:
            self._send(*answer, send_body)

    @staticmethod
    def _rendered(page: Page, body: Any, path: str) -> Response:
        try:
            return 200, page.render(body)
        except Exception as exc:
            log.exception('page %s failed', path)
            return 500, {'error': str(exc)}

    def _page(self, path: str) -> Page | None:
        """The page of the GET route of ``path``, if it has one and the client asks for
        HTML."""
        if self.command not in ('GET', 'HEAD') or not wants_html(self.headers.get('Accept', '')):
            return None
        return next((page for pattern, _, _, method, page in self.server.routes
                     if method == 'GET' and pattern.fullmatch(path)), None)

    def _warn_if_from_a_slot(self, query: str) -> None:
        """A refused request that another slot sent (it asks with ``forwarded`` or ``search``)
        means the workers were given different tokens: said once per address."""
        names = {name for name, _ in urllib.parse.parse_qsl(query)}
        host = self.client_address[0]
        warned = self.server.warned
        if names & {'forwarded', 'search'} and host not in warned and len(warned) < 100:
            warned.add(host)
            log.warning('a slot at %s asked with another web token than this one: every '
                        'worker of the app must be given the same web_token', host)

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        scheme, _, given = self.headers.get('Authorization', '').partition(' ')
        return scheme.lower() == 'bearer' and hmac.compare_digest(
            given.strip().encode(errors='surrogateescape'), token.encode())

    def _send(self, code: int, body: Any, send_body: bool,
              headers: dict[str, str] | None = None) -> None:
        if isinstance(body, Text):
            content_type, payload = body
        else:
            content_type = 'application/json'
            payload = json.dumps(body, indent=1, sort_keys=True).encode() + b'\n'
        self.send_response(code)
        self.send_header('Content-Type', content_type)
        if code == 503:                   # not known yet, or not ready: ask again soon
            self.send_header('Retry-After', '1')
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        if send_body:
            self.wfile.write(payload)

    def _skip_body(self) -> bool:
        """Read past a request body, so it is not taken for the next request; False (and
        answered) if it is too large or its length unreadable."""
        length = self.headers.get('Content-Length', '0')
        if not length.isdigit() or int(length) > MAX_BODY:
            self.close_connection = True
            self.send_error(413 if length.isdigit() else 400, 'request body not accepted')
            return False
        self.rfile.read(int(length))
        return True

    def _dispatch(self, path: str, query: str) -> Response | None:
        """The answer of the route ``path`` matches; None if it takes another method."""
        for pattern, handler, known, method, _page in self.server.routes:
            match = pattern.fullmatch(path)
            if match:
                if method != ('GET' if self.command == 'HEAD' else self.command):
                    return None
                params = urllib.parse.parse_qsl(query, keep_blank_values=True)
                names = [name for name, _ in params]
                unknown = sorted(set(names) - known)
                if unknown or len(names) != len(set(names)):
                    takes = ', '.join(sorted(known)) or 'none'
                    return 400, {'error': f'bad query parameters {sorted(names)} for {path} '
                                          f'(it takes: {takes}, each once)'}
                try:
                    return handler(match, dict(params))
                except DiskError as exc:            # a table store that cannot be read
                    return 503, {'error': str(exc)}
                except Exception as exc:
                    log.exception('web view %s failed', path)
                    return 500, {'error': str(exc)}
        return 404, {'error': f'no such path: {path}'}

    def log_message(self, format: str, *args: Any) -> None:
        log.debug('%s %s', self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """Serves each connection on a thread of its own, at most MAX_CONNECTIONS at once (see
    the module docstring for who gives way when they are all taken)."""

    daemon_threads = True
    block_on_close = False
    routes: Sequence[Route]
    token: str | None = None

    def __init__(self, listener: socket.socket, handler: type) -> None:
        super().__init__(listener.getsockname(), handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.server_name, self.server_port = self.server_address[:2]
        self._lock = threading.Lock()
        #: Addresses of slots warned about for asking with another token.
        self.warned: set[str] = set()
        #: Connection → since when it waits for a request head (None: inside a request).
        self._open: dict[socket.socket, float | None] = {}
        #: Connections told to give way whose threads have not finished yet.
        self._leaving: set[socket.socket] = set()

    def answering(self) -> bool:
        """Whether a connection is inside a request, or was accepted (or answered) so
        recently that its next request may already be on its way."""
        recent = time.monotonic() - JUST_OPENED
        with self._lock:
            return any(since is None or since > recent for since in self._open.values())

    @property
    def served(self) -> int:
        """Connections being served (those giving way included)."""
        with self._lock:
            return len(self._open)

    def waiting(self, connection: socket.socket, waiting: bool) -> None:
        """A connection starts waiting for a request head, or has read one."""
        with self._lock:
            if connection in self._open and connection not in self._leaving:
                self._open[connection] = time.monotonic() if waiting else None

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self._admit(request):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def _admit(self, request: socket.socket) -> bool:
        """Count ``request`` in, making the longest-waiting idle connection give way if
        every place is taken; False if none can."""
        with self._lock:
            if len(self._open) - len(self._leaving) >= MAX_CONNECTIONS:
                idle = [(since, conn) for conn, since in self._open.items()
                        if since is not None and conn not in self._leaving]
                if not idle:
                    return False
                oldest = min(idle, key=lambda pair: pair[0])[1]
                self._leaving.add(oldest)
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)     # its thread reads EOF and ends
            self._open[request] = time.monotonic()
            return True

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._lock:
            self._open.pop(request, None)
            self._leaving.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (or was too slow) is no error of the server's."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug('client %s went away: %s', client_address, exc)
        else:
            log.error('web server failed on a request from %s', client_address, exc_info=exc)

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.settimeout(1.0)
            request.sendall(BUSY)
        except OSError:
            pass
        self.shutdown_request(request)


class WebServer:
    """Binds at construction (so a taken port fails early), or serves ``listener``, a
    socket already listening (inherited from the main process, which keeps it open
    across the slot's handovers); serves on a thread once started; with a ``token``,
    every path but ``/health`` asks for it."""

    def __init__(self, host: str, port: int, token: str | None = None,
                 listener: socket.socket | None = None) -> None:
        self._server = _Server(listener or platform.listen(host, port), _Handler)
        self._server.token = token
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.2,),
                                        name='web', daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    @property
    def loopback(self) -> bool:
        """Whether only this host can reach the server (it is bound to a loopback address)."""
        return ipaddress.ip_address(self.address[0].partition('%')[0]).is_loopback

    def start(self, routes: Sequence[Route]) -> None:
        """Serve ``routes`` (the first whose pattern matches a path answers it)."""
        self._server.routes = list(routes)
        self._thread.start()
        log.info('web server listening on http://%s:%d/', *self.address)

    def stop(self, finish: bool = False) -> None:
        """Stop accepting and close this process's copy of the listening socket:
        connections not accepted yet wait for whoever else listens on it (a successor)
        rather than being refused.  ``finish``: let the requests being answered finish
        first, for at most ``FINISH_GRACE`` seconds."""
        if self._thread.is_alive():
            self._server.shutdown()
            deadline = time.monotonic() + (FINISH_GRACE if finish else 0.0)
            while self._server.answering() and time.monotonic() < deadline:
                time.sleep(0.01)
        self._server.server_close()
