"""systemd's notify protocol (``Type=notify``): a datagram to ``$NOTIFY_SOCKET``."""

import os
import socket
import time


class Notifier:
    """Sends ``KEY=value`` lines to systemd; does nothing when not run by systemd."""

    def __init__(self) -> None:
        address = os.environ.get('NOTIFY_SOCKET', '')
        if address.startswith('@'):
            address = '\0' + address[1:]
        self._address = address or None
        usec = os.environ.get('WATCHDOG_USEC', '')
        watchdog_pid = os.environ.get('WATCHDOG_PID', '')
        owned = not watchdog_pid or watchdog_pid == str(os.getpid())
        #: Seconds between WATCHDOG=1 pings (half of systemd's timeout), or None.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and owned else None

    def notify(self, **fields: str) -> None:
        if not self._address:
            return
        message = '\n'.join(f'{key.upper()}={value}' for key, value in fields.items())
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.connect(self._address)
                sock.sendall(message.encode())
            except OSError:
                pass

    def reloading(self) -> None:
        self.notify(reloading='1', monotonic_usec=str(time.clock_gettime_ns(
            time.CLOCK_MONOTONIC) // 1000))
