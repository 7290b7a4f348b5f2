"""runner: a threaded, multiprocess Kafka stream-processing worker runner."""

__version__ = '0.1.0'

from .app import App
from .children import spawn
from .stream import Event, Stream

__all__ = ['App', 'Event', 'Stream', '__version__', 'spawn']
