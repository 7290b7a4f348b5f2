"""The slot's HTTP server: health, readiness and state as JSON, on its own threads.

It never touches Kafka, so it keeps answering while the consumer rebalances.
"""

import errno
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import ResourceBusy
from .status import SlotStatus

log = logging.getLogger(__name__)

Response = tuple[int, Any]


def status_routes(status: SlotStatus) -> dict[str, Callable[[], Response]]:
    """``GET /health``, ``GET /ready`` and ``GET /`` for one slot."""
    def health() -> Response:
        live, reason = status.live()
        return (200 if live else 503), {'live': live, 'reason': reason}

    def ready() -> Response:
        is_ready, reason = status.ready()
        return (200 if is_ready else 503), {'ready': is_ready, 'reason': reason}

    return {'/health': health, '/ready': ready, '/': lambda: (200, status.describe())}


class _Handler(BaseHTTPRequestHandler):
    server: '_Server'
    protocol_version = 'HTTP/1.1'

    def do_GET(self) -> None:
        path = self.path.split('?', 1)[0]
        view = self.server.routes.get(path.rstrip('/') or '/')
        try:
            code, body = view() if view else (404, {'error': f'no such path: {path}'})
        except Exception as exc:
            log.exception('web view %s failed', path)
            code, body = 500, {'error': str(exc)}
        payload = json.dumps(body, indent=1, sort_keys=True).encode() + b'\n'
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug('%s %s', self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Callable[[], Response]]


class WebServer:
    """Binds at construction (so a taken port fails early) and serves on a thread."""

    def __init__(self, host: str, port: int, routes: dict[str, Callable[[], Response]]) -> None:
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ResourceBusy(f'web port {host}:{port} is already in use') from None
            raise ResourceBusy(f'cannot listen on {host}:{port}: {exc.strerror}') from None
        self._server.routes = routes
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.2,),
                                        name='web', daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()
        log.info('web server listening on http://%s:%d/', *self.address)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
