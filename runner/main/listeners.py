"""The slots' listening web sockets, held by the main process.

Each slot's web server listens on a socket the main process binds and the slot
inherits when it is forked (a listening socket is a file descriptor: no thread
or client state comes with it).  A successor in a rolling restart inherits the
same socket as the slot it replaces, so the port never closes through a
handover: the connections that arrive between the old slot's last accept and the
successor's first wait in the socket's backlog instead of being refused.  A
socket is closed once no process of its slot uses it (a slot that exits
unasked leaves its port closed until it is started again), or when a deploy
moves the slot to another address and the old slot has gone.

``SO_REUSEPORT`` (the successor binding the port beside the old slot) was not
chosen: Linux resets the connections waiting in a reuseport socket's backlog
when that socket closes, and it would let a second worker of the same user
bind a port in use without a word, where the runner refuses it (exit 73).
"""

import socket
from typing import NamedTuple

from .. import platform


class Listener(NamedTuple):
    """Which slot a listening socket serves, and where."""

    index: int
    host: str
    port: int


class Listeners:
    """Listening sockets by slot and address, each with the count of slot processes
    that use it."""

    def __init__(self) -> None:
        self._held: dict[Listener, tuple[socket.socket, int]] = {}

    def acquire(self, index: int, address: tuple[str, int]) -> tuple[Listener, int]:
        """The socket of slot ``index`` at ``address`` (bound now if no process of the slot
        listens there yet: ResourceBusy if it cannot be), and its file descriptor."""
        listener = Listener(index, *address)
        held, users = self._held.get(listener) or (platform.listen(*address), 0)
        self._held[listener] = held, users + 1
        return listener, held.fileno()

    def release(self, listener: Listener | None) -> None:
        """A process of the slot stopped using ``listener``: closed once none uses it."""
        if listener is None:
            return
        held, users = self._held[listener]
        if users > 1:
            self._held[listener] = held, users - 1
        else:
            del self._held[listener]
            held.close()

    def fds(self) -> list[int]:
        """Every socket's file descriptor (a forked child closes those it does not serve)."""
        return [held.fileno() for held, _ in self._held.values()]

    def close_all(self) -> None:
        for held, _ in self._held.values():
            held.close()
        self._held.clear()
