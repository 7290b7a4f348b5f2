"""A headless Chromium driven through the DevTools protocol (over ``websocket-client``), for
the tests of the status page: open a page, run JavaScript in it, take a screenshot."""

import base64
import itertools
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import websocket
from harness import wait_for

#: Seconds one DevTools command may take.
COMMAND_TIMEOUT = 30


class DevToolsError(AssertionError):
    """Chromium refused a DevTools command."""


class Browser:
    """Debian's ``chromium`` (at ``binary``), headless, with its profile in ``directory``;
    :meth:`close` it (it is killed if it does not go)."""

    def __init__(self, binary: str, directory: Path) -> None:
        self._profile = directory / 'profile'
        self.log_path = directory / 'chromium.log'
        with open(self.log_path, 'w') as log:
            self.proc = subprocess.Popen(
                [binary, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                 '--no-first-run', '--remote-debugging-port=0', '--window-size=1280,1000',
                 f'--user-data-dir={self._profile}', 'about:blank'],
                stdout=log, stderr=subprocess.STDOUT)
        self._ids = itertools.count(1)
        try:
            self._socket = self._connect(wait_for(self._debugging_port, 60,
                                                  'Chromium to listen for DevTools'))
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    @staticmethod
    def _connect(port: int) -> websocket.WebSocket:
        """A DevTools connection to the browser's page."""
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=10) as answer:
            page = next(t for t in json.load(answer) if t['type'] == 'page')
        return websocket.create_connection(page['webSocketDebuggerUrl'], timeout=COMMAND_TIMEOUT,
                                           suppress_origin=True)

    def _debugging_port(self) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f'Chromium exited: {self.log_path.read_text()[-2000:]}')
        try:
            return int((self._profile / 'DevToolsActivePort').read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (the events sent meanwhile are passed over)."""
        number = next(self._ids)
        self._socket.send(json.dumps({'id': number, 'method': method, 'params': params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get('id') == number:
                if 'error' in message:
                    raise DevToolsError(f'{method} failed: {message["error"]}')
                return message['result']

    def open(self, url: str) -> None:
        """Load ``url`` and wait until it has loaded."""
        self.call('Page.navigate', url=url)
        wait_for(lambda: self.evaluate('document.readyState') == 'complete'
                 and self.evaluate('location.href').split('#')[0] == url.split('#')[0], 30,
                 f'{url} to load')

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (returned as JSON); None while
        the page is between two documents (it has no context to run it in)."""
        try:
            result = self.call('Runtime.evaluate', expression=expression, returnByValue=True)
        except DevToolsError as exc:
            if 'context' in str(exc):
                return None
            raise
        if 'exceptionDetails' in result:
            raise AssertionError(f'{expression} raised: {result["exceptionDetails"]}')
        return result['result'].get('value')

    def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG file at ``path``."""
        data = self.call('Page.captureScreenshot', format='png', captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data['data']))
        return path

    def close(self) -> None:
        try:
            self._socket.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
