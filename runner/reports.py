"""Slot → main process reports: one JSON object per datagram over a ``SOCK_SEQPACKET``
socket pair, one report per status change or quarter second.

A datagram arrives whole or not at all, so no report can be split, merged or cut,
whatever its size.  The slot never blocks on the socket: when it is full, the
report is dropped (the next one carries the same state).  The main process reads
without blocking and skips, with a warning, anything that is not a whole JSON
object, so no report can stop it.
"""

import errno
import json
import logging
import socket
from typing import Any

log = logging.getLogger(__name__)

#: The largest report sent whole; a larger one goes without its partition list.
MAX_REPORT = 1 << 20
#: The fields of a slot's status report and their types; an error report (a slot that
#: could not start) is ``{'error': str, 'code': int}``, and ``{'loaded': True}`` says
#: that the slot has loaded the app (its first report).
STATUS_FIELDS = {'phase': str, 'live': bool, 'ready': bool, 'reason': str, 'web': (str, type(None)),
                 'graceful_timeout': (int, float), 'heartbeat_timeout': (int, float),
                 'assignment': list}
ERROR_FIELDS = {'error': str, 'code': int}
LOADED_FIELDS = {'loaded': bool}
#: The other way, in the environment of a slot the main process starts: how many times it
#: restarted this slot number after an unexpected exit, and the exit code of the last
#: process of that number (negative: the signal that killed it), if any.
RESTARTS_ENV = 'RUNNER_SLOT_RESTARTS'
LAST_EXIT_ENV = 'RUNNER_SLOT_LAST_EXIT_CODE'


def channel() -> tuple[socket.socket, socket.socket]:
    """A connected pair of sockets: (the main process's end, the slot's end)."""
    main_end, slot_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    slot_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_REPORT)   # the kernel may cap it
    return main_end, slot_end


class Reporter:
    """The writing end, in the slot."""

    def __init__(self, fd: int) -> None:
        self._socket = socket.socket(fileno=fd)
        self._socket.setblocking(False)

    def send(self, report: dict[str, Any]) -> None:
        """Send ``report``, or drop it if the socket is full or the main process gone.

        A report too large for one datagram (the kernel caps it, at about 400 KB by
        default) is sent with its ``assignment`` list replaced by a count.
        """
        data = json.dumps(report, separators=(',', ':')).encode()
        if len(data) > MAX_REPORT or not self._send(data):
            shortened = {**report, 'assignment': [
                f'{len(report.get("assignment", []))} partitions (too many to report)']}
            self._send(json.dumps(shortened, separators=(',', ':')).encode())

    def _send(self, data: bytes) -> bool:
        """False only if ``data`` is too large for one datagram."""
        try:
            self._socket.send(data)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                return False
        return True


class ReportReader:
    """The reading end, in the main process; ``source`` names the slot in warnings."""

    def __init__(self, sock: socket.socket, source: str) -> None:
        sock.setblocking(False)
        self._socket = sock
        self._buffer = bytearray(MAX_REPORT)
        self.source = source
        self.fd = sock.fileno()
        #: True once the slot's end is closed (the slot has exited).
        self.closed = False

    def read(self) -> list[dict[str, Any]]:
        """Every report that has arrived, in order; malformed ones skipped with a warning."""
        reports = []
        while not self.closed:
            try:
                size, _, flags, _ = self._socket.recvmsg_into([self._buffer])
            except BlockingIOError:
                break
            except OSError:
                size, flags = 0, 0
            if flags & socket.MSG_TRUNC:
                log.warning('skipped a report from %s: larger than %d bytes', self.source,
                            MAX_REPORT)
            elif size == 0:
                self.closed = True
            else:
                report = self._decode(bytes(self._buffer[:size]))
                if report is not None:
                    reports.append(report)
        return reports

    def _decode(self, data: bytes) -> dict[str, Any] | None:
        try:
            report = json.loads(data)
        except ValueError:
            report = None
        if not any(_matches(report, fields)
                   for fields in (STATUS_FIELDS, ERROR_FIELDS, LOADED_FIELDS)):
            log.warning('skipped a malformed report from %s: %r', self.source, data[:80])
            return None
        return report

    def close(self) -> None:
        self._socket.close()


def _matches(report: Any, fields: dict[str, Any]) -> bool:
    """Whether ``report`` is a dict holding each of ``fields`` with its type."""
    return isinstance(report, dict) and all(isinstance(report.get(name, ...), kind)
                                            for name, kind in fields.items())
