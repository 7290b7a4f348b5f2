"""Signals reach the main loop as events, one per signal delivered."""

import os
import signal

from runner.platform import SignalQueue


def test_each_signal_written_to_the_wakeup_pipe_is_one_event():
    read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = signal.getsignal(signal.SIGUSR2)
    queue = SignalQueue()
    try:
        queue.install({signal.SIGUSR2: 'usr2'}, write)
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGUSR2)
        queue.feed(os.read(read, 64))
        queue.feed(bytes([signal.SIGTTIN]))           # not installed: no event
        assert [queue.get(0) for _ in range(4)] == ['usr2', 'usr2', 'usr2', None]
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGUSR2, previous)
        os.close(read)
        os.close(write)
