"""Agent declarations: a function applied to the stream of one topic."""

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .topics import Topic

if TYPE_CHECKING:
    from .app import App


class Agent:
    """A declared agent: ``fn(stream)`` over one topic, on ``concurrency`` threads per slot.

    If ``fn`` is a generator function, every value it yields is sent to each
    sink with the key of the input record being processed.  A sink is a
    Topic, another Agent (its topic) or a callable.
    """

    def __init__(self, app: 'App', fn: Callable, topic: Topic, sinks: Iterable[Any] = (),
                 concurrency: int = 1, name: str | None = None) -> None:
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ConfigError('concurrency must be a positive integer')
        check_takes_a_stream(fn)
        self.app = app
        self.fn = fn
        self.topic = topic
        self.sinks = list(sinks)
        self.concurrency = concurrency
        self.name = name or f'{fn.__module__}.{fn.__qualname__}'

    def send(self, key: Any = None, value: Any = None, headers: list | None = None) -> Any:
        """Send a record to the agent's topic."""
        return self.topic.send(key=key, value=value, headers=headers)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f'<Agent {self.name} topic={self.topic.name} concurrency={self.concurrency}>'


def check_takes_a_stream(fn: Callable) -> None:
    """An agent is called as ``fn(stream)``: say so at import rather than crash in a slot."""
    if not callable(fn):
        raise ConfigError(f'@app.agent decorates a function, not {fn!r}')
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        raise ConfigError(f'agent {fn.__qualname__} must take exactly one argument, the '
                          'stream') from None
    except ValueError:
        pass            # no signature to inspect (a builtin): let it be
