"""Per-partition queues: one thread per partition at a time, order kept, progress tracked."""

import threading
from types import SimpleNamespace

from harness import wait_for
from kafka import TopicPartition

import runner
from runner.runtime.queues import Dispatcher, Inbox, Stopped, committable
from runner.runtime.tasks import Task

TP0 = TopicPartition('t', 0)
TP1 = TopicPartition('t', 1)
#: The task of every queue here: it only counts the threads inside it.
TASK = SimpleNamespace(enter=lambda: None, leave=lambda: None)


def records(tp, start, count):
    return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o)
            for o in range(start, start + count)]


def test_a_leased_partition_is_not_handed_to_a_second_thread():
    inbox = Inbox()
    inbox.assign(TP0, TASK, held=False)
    inbox.assign(TP1, TASK, held=False)
    inbox.put(TP0, records(TP0, 0, 2))
    inbox.put(TP0, records(TP0, 2, 2))
    inbox.put(TP1, records(TP1, 0, 1))
    first, batch = inbox.take()
    second, _ = inbox.take()
    assert (first.tp, second.tp) == (TP0, TP1)
    assert [r.offset for r in batch] == [0, 1]
    inbox.close(drain=True)
    assert inbox.take() is None            # TP0's next batch waits for the release
    inbox.release(first)
    again, batch = inbox.take()
    assert again is first and [r.offset for r in batch] == [2, 3]


def test_take_blocks_until_records_arrive():
    inbox = Inbox()
    inbox.assign(TP0, TASK, held=False)
    taken = []
    thread = threading.Thread(target=lambda: taken.append(inbox.take()))
    thread.start()
    wait_for(lambda: inbox._cond._waiters, 5, 'the thread to wait inside take()')
    assert taken == [] and thread.is_alive()
    inbox.put(TP0, records(TP0, 7, 1))
    thread.join(5)
    assert taken and taken[0][1][0].offset == 7


def test_revoke_drops_queued_records_and_flags_the_holder():
    inbox = Inbox()
    inbox.assign(TP0, TASK, held=False)
    inbox.put(TP0, records(TP0, 0, 3))
    inbox.put(TP0, records(TP0, 3, 3))
    queue, _ = inbox.take()
    [revoked] = inbox.revoke([TP0])
    assert revoked is queue and queue.revoked and queue.pending == 0 and not queue.batches


def test_a_partition_back_while_its_old_holder_is_inside_a_record_waits_for_it():
    inbox = Inbox()
    inbox.assign(TP0, TASK, held=False)
    inbox.put(TP0, records(TP0, 0, 3))
    old, _ = inbox.take()                  # a thread is inside a record of TP0
    inbox.revoke([TP0])
    new = inbox.assign(TP0, TASK, held=False)
    inbox.put(TP0, records(TP0, 0, 3))
    assert new.blocked
    inbox.close(drain=True)
    assert inbox.take() is None            # nobody may start TP0 again ...
    inbox.release(old)                     # ... until the old holder lets go
    again, batch = inbox.take()
    assert again is new and batch[0].offset == 0


def test_held_partitions_wait_until_their_tables_are_recovered():
    inbox = Inbox()
    queue = inbox.assign(TP0, TASK, held=True)
    inbox.put(TP0, records(TP0, 0, 1))
    inbox.close(drain=True)
    assert inbox.take() is None
    inbox.unhold([queue])
    assert inbox.take()[0] is queue


def test_a_failed_partition_is_never_handed_out_again():
    inbox = Inbox()
    inbox.assign(TP0, TASK, held=False)
    inbox.put(TP0, records(TP0, 0, 1))
    queue, _ = inbox.take()
    inbox.fail(queue)
    inbox.put(TP0, records(TP0, 1, 1))
    inbox.release(queue)
    inbox.close(drain=True)
    assert inbox.take() is None
    assert inbox.idle()


def test_records_for_unassigned_partitions_are_dropped():
    inbox = Inbox()
    inbox.put(TP0, records(TP0, 0, 1))
    assert inbox.queues() == [] and inbox.idle()


def test_the_commit_offset_waits_for_every_agent_of_the_topic():
    first, second = Inbox(), Inbox()
    dispatcher = Dispatcher({'t': [first, second]})
    queues = dispatcher.assign(TP0, TASK, held=False)
    dispatcher.dispatch(TP0, records(TP0, 10, 5))
    a, _ = first.take()
    b, _ = second.take()
    a.processed = 14
    assert dispatcher.processed() == {}
    b.processed = 11
    assert dispatcher.processed() == {TP0: 12} == committable(queues)
    assert dispatcher.backlog() == {TP0: 0}


def test_a_taken_batch_counts_as_inside_its_task_until_the_taker_leaves():
    table = runner.App('q').Table('t', default=int, partitions=2)
    task, gone = Task(2, 0, [table]), []
    inbox = Inbox()
    inbox.assign(TP0, task, held=False)
    inbox.put(TP0, records(TP0, 0, 1))
    inbox.take()                       # handed out; the agent has not started on it yet
    inbox.revoke([TP0])
    task.retire(lambda: gone.append('stores'))
    assert gone == []                  # its stores stay open for the agent
    task.leave()
    assert gone == ['stores']


def test_a_stopped_partition_keeps_its_record_and_waits_until_it_is_skipped():
    inbox = Inbox()
    inbox.assign(TP0, TASK, held=False)
    inbox.assign(TP1, TASK, held=False)
    inbox.put(TP0, records(TP0, 0, 4))
    queue, batch = inbox.take()
    queue.processed = 1                          # the agent raised on offset 2
    stopped = Stopped('agent', batch[2], 'ValueError: no')
    inbox.stop(queue, batch[2:], stopped)
    inbox.release(queue)
    inbox.put(TP0, records(TP0, 4, 2))
    inbox.put(TP1, records(TP1, 0, 1))
    other, _ = inbox.take()                      # the other partition goes on
    assert other.tp == TP1 and not inbox.waiting()
    inbox.release(other)
    assert inbox.idle() and committable([queue]) == {TP0: 2}
    assert inbox.skip(TP0, 3) is None and inbox.skip(TP1, 2) is None
    assert inbox.skip(TP0, 2) is stopped and queue.skipping is stopped
    again, batch = inbox.take()
    assert again is queue and [r.offset for r in batch] == [2, 3]   # the stopped record first
    assert inbox.skip(TP0, 2) is None                                 # no longer stopped
