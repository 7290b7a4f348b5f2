"""A fenced producer: a newer incarnation of the slot (it stops for good), or the broker's
abort of a transaction that outlived its timeout while the slot ran (it starts again)."""

import time
from types import SimpleNamespace

from runner.errors import EX_CANTCREAT, EX_SOFTWARE
from runner.runtime.status import SlotStatus
from runner.runtime.transactions import ProducerFenced, fenced_or_timed_out

FENCE = ProducerFenced('a newer incarnation of this slot took over')


def producer_open_for(seconds):
    return SimpleNamespace(transaction_age=lambda: seconds)


def test_a_fence_of_a_young_transaction_is_a_newer_incarnation():
    assert fenced_or_timed_out(FENCE, producer_open_for(3), awake_since=0.0) is FENCE


def test_a_fence_of_a_transaction_older_than_its_timeout_while_awake_is_the_brokers_abort():
    timed_out = fenced_or_timed_out(FENCE, producer_open_for(30), awake_since=0.0)
    assert timed_out.exit_code == EX_SOFTWARE != FENCE.exit_code == EX_CANTCREAT
    assert str(timed_out).startswith('the broker aborted the open transaction: it had been '
                                     'open for 30s, longer than its timeout (10s)')


def test_a_process_frozen_while_its_transaction_was_open_takes_the_fence_as_one():
    frozen_until = time.monotonic() - 5             # woke up 5 s ago, 30 s into it
    assert fenced_or_timed_out(FENCE, producer_open_for(30), frozen_until) is FENCE


def test_the_slot_status_notices_its_main_thread_was_frozen(monkeypatch):
    status = SlotStatus('app', 0, stall_timeout=150)
    now = [status.awake_since]
    monkeypatch.setattr(time, 'monotonic', lambda: now[0])
    for _ in range(8):
        now[0] += 0.25
        status.tick()
    assert status.awake_since < now[0] - 1.9
    now[0] += 30                                    # SIGSTOP, then SIGCONT
    status.tick()
    assert status.awake_since == now[0]
