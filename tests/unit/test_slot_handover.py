"""A slot's side of a rolling restart: a successor told to stop never takes the data
directory, and a stop for good during a handover leaves the group."""

import threading

import pytest

import runner
from runner import logs, platform
from runner.config import Settings
from runner.runtime.slot import Slot

app = runner.App('handover')


@pytest.fixture
def settings(tmp_path):
    return Settings(datadir=str(tmp_path), graceful_timeout=1.0)


def test_a_successor_told_to_stop_does_not_take_the_free_directory(settings):
    successor = Slot(app, settings, 0, successor=True)
    successor._events.put('warm')                   # TERM: dismissed as its slot exits
    assert not successor._take_over(platform.DirLock(successor.datadir))
    other = platform.DirLock(successor.datadir)
    assert other.acquire(raise_if_held=False)
    other.release()


def test_a_successor_takes_over_once_the_slot_it_replaces_lets_go(settings):
    held = platform.DirLock(Slot(app, settings, 0).datadir)
    held.acquire()
    waiting, took_over = threading.Event(), []
    successor = Slot(app, settings, 0, report=lambda report: waiting.set(), successor=True)
    thread = threading.Thread(
        target=lambda: took_over.append(successor._take_over(platform.DirLock(successor.datadir))))
    thread.start()
    assert waiting.wait(10)
    held.release()
    thread.join(10)
    assert took_over == [True]


class FakeConsumer:
    """Its thread runs until it is asked to leave the group."""

    def __init__(self):
        self.stops: list[tuple[bool, bool]] = []
        self._left = threading.Event()
        self.thread = threading.Thread(target=self._left.wait, args=(10,), daemon=True)
        self.thread.start()

    def stop(self, drain, deadline, leave):
        self.stops.append((drain, leave))
        if leave:
            self._left.set()


def test_a_stop_for_good_during_a_handover_leaves_the_group(settings, monkeypatch):
    monkeypatch.setattr(logs, 'stopping', lambda: None)
    slot = Slot(app, settings, 0)
    consumer = slot._consumer = FakeConsumer()
    slot._events.put('warm')                        # TERM after USR2
    slot._stop('warm', leave=False)
    assert consumer.stops == [(True, False), (True, True)]
