"""The status page: ``GET /`` as HTML for a browser (see the manual's "Observability: status
page", docs/ops/status-page.rst).

The server renders the page from the same state ``GET /`` gives as JSON
(:meth:`runner.runtime.status.SlotStatus.describe`), through a Jinja2 template
that escapes every value: topic, agent and table names, keys and error texts may
be anything.  A small inline script fetches the page again every two seconds and
swaps in its ``<main>``, so the page refreshes without a reload and the markup is
only ever made on the server.  Without the web token the page is a shell that
holds no data and asks for the token.  Its Content-Security-Policy lets only its
own script and style run, and it loads nothing from anywhere.
"""

import base64
import hashlib
import time
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from ..logs import clock, duration
from .web import Text

CONTENT_TYPE = 'text/html; charset=utf-8'


def _resource(name: str) -> str:
    return resources.files(__package__).joinpath('templates', name).read_text('utf-8')


def _digest(text: str) -> str:
    """A CSP source allowing the inline ``text``."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


class StatusPage:
    """Renders a slot's state (a :meth:`SlotStatus.describe` dict) as the status page."""

    def __init__(self) -> None:
        self._script = _resource('status.js')
        self._style = _resource('status.css')
        environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                         trim_blocks=True, lstrip_blocks=True)
        environment.filters.update(clock=clock, duration=duration)
        self._template = environment.from_string(_resource('status.html'))
        #: The page's headers: it runs its own script and style only, and is never cached.
        self.headers = {
            'Content-Security-Policy': (
                f"default-src 'none'; script-src {_digest(self._script)}; "
                f"style-src {_digest(self._style)}; connect-src 'self'; base-uri 'none'; "
                "form-action 'none'; frame-ancestors 'none'"),
            'Cache-Control': 'no-store', 'Vary': 'Accept, Authorization',
            'X-Content-Type-Options': 'nosniff'}

    def render(self, state: dict[str, Any]) -> Text:
        """The page showing ``state``."""
        return self._page(state)

    def locked(self) -> Text:
        """The page for a client without the token: no data, a form asking for the token."""
        return self._page(None)

    def _page(self, state: dict[str, Any] | None) -> Text:
        html = self._template.render(state=state, now=time.time(), script=Markup(self._script),
                                     style=Markup(self._style))
        return Text(CONTENT_TYPE, html.encode())
