"""What the user declares: the App, its topics, agents and tables.

Declarations hold no runtime state (no threads, queues, stores or sockets) and
import nothing from the runtime: a slot (:mod:`runner.runtime`) reads them and
runs them, and tables and sends reach it through :mod:`runner.app.context`.
"""

from .agents import Agent
from .app import App
from .codecs import Codec
from .context import Event
from .globals import GlobalTable
from .tables import Table
from .topics import Topic
from .windows import WindowedTable

__all__ = ['Agent', 'App', 'Codec', 'Event', 'GlobalTable', 'Table', 'Topic', 'WindowedTable']
