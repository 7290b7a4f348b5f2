"""The IO loop registers a socket it waits for without a failed look-up that formats the
socket's repr (runner/kafka/fixes.py, fix 4), and registers it as kafka-python would."""

import selectors
import socket

from kafka.net.selector import NetworkSelector, Task

from runner.kafka import fixes


class Unprintable(socket.socket):
    """A socket whose repr must not be asked for."""

    def __repr__(self) -> str:
        raise AssertionError('the socket was formatted to be registered')


async def waiting() -> None:
    return None


def test_a_socket_is_registered_without_formatting_it():
    fixes.install()
    net = NetworkSelector()
    left, right = socket.socketpair()
    sock = Unprintable(fileno=left.detach())
    try:
        reader, writer = Task(waiting()), Task(waiting())
        net.register_event(sock, selectors.EVENT_READ, reader)
        net.register_event(sock, selectors.EVENT_WRITE, writer)     # kafka-python's path
        key = net._selector.get_key(sock)
        assert key.events == selectors.EVENT_READ | selectors.EVENT_WRITE
        assert key.data == (reader, writer)
        net.unregister_event(sock, selectors.EVENT_READ)
        net.unregister_event(sock, selectors.EVENT_WRITE)
        assert fixes._registered(net._selector, sock) is False
    finally:
        sock.close()
        right.close()
        net.close()
