"""The checkpoint: cooperative cuts under a task's guard, and the order of its steps."""

import threading
from types import SimpleNamespace

from harness import wait_for
from kafka import TopicPartition
from kafka.future import Future

import runner
from runner.state.checkpoint import Checkpoint, Cut, Guard
from runner.state.partitions import TablePartition, ValueCache
from runner.state.stores import PartitionStore

TP = TopicPartition('words', 0)


class Unit:
    """A task as the checkpoint sees it: a guard, and a cut of its progress so far."""

    def __init__(self) -> None:
        self.processed = None
        self.writes: dict = {}
        self.finished = False
        self.committed: dict = {}
        self.guard = Guard(self.cut)

    def cut(self) -> Cut:
        taken, self.writes = self.writes, {}
        offsets = {} if self.processed is None else {TP: self.processed + 1}
        return Cut(offsets, [('partition', taken)] if taken else [])


def cuts_of(checkpoint: Checkpoint) -> list[Cut]:
    return list(checkpoint._cuts.values())


def test_a_free_guard_is_cut_at_once_by_the_checkpoint():
    unit = Unit()
    unit.processed, unit.writes = 4, {'a': 1}
    checkpoint = Checkpoint(deadline=0)
    checkpoint.request([unit])
    assert checkpoint.complete()
    assert cuts_of(checkpoint) == [Cut({TP: 5}, [('partition', {'a': 1})])]


def test_a_held_guard_is_cut_by_its_holder_at_the_next_record_boundary():
    unit = Unit()
    unit.guard.take()                       # an agent is inside a batch
    unit.processed, unit.writes = 4, {'a': 1}
    checkpoint = Checkpoint(deadline=0)
    checkpoint.request([unit])
    assert not checkpoint.complete()        # mid-record: nothing is taken
    unit.writes['b'] = 2                    # the record finishes ...
    unit.processed = 5
    unit.guard.boundary()                   # ... and the agent reaches the boundary
    assert checkpoint.complete()
    assert cuts_of(checkpoint) == [Cut({TP: 6}, [('partition', {'a': 1, 'b': 2})])]
    unit.writes['c'] = 3                    # later writes wait for the next checkpoint
    unit.guard.release()
    assert unit.writes == {'c': 3}


def test_a_holder_that_lets_go_of_the_guard_serves_the_request():
    unit = Unit()
    unit.guard.take()
    checkpoint = Checkpoint(deadline=0)
    checkpoint.request([unit])
    unit.processed = 9
    unit.guard.release()                    # end of batch, no boundary seen in between
    assert cuts_of(checkpoint) == [Cut({TP: 10})]


def test_a_busy_agent_never_starves_the_checkpoints():
    unit, stop = Unit(), threading.Event()

    def agent():
        offset = 0
        while not stop.is_set():
            unit.guard.take()
            for _ in range(50):             # a batch, one record after the other
                unit.writes[offset % 7] = offset
                unit.processed = offset
                offset += 1
                unit.guard.boundary()
            unit.guard.release()
    thread = threading.Thread(target=agent)
    thread.start()
    try:
        for _ in range(100):
            checkpoint = Checkpoint(deadline=0)
            checkpoint.request([unit])
            wait_for(checkpoint.complete, 5, 'the busy agent to cut its task', interval=0.001)
            [cut] = cuts_of(checkpoint)
            assert not cut.changes or cut.changes[0][1]
    finally:
        stop.set()
        thread.join()


def test_a_stuck_holder_is_left_out_and_keeps_its_writes_for_later():
    unit = Unit()
    unit.guard.take()                       # stuck inside a record
    unit.processed, unit.writes = 3, {'a': 1}
    checkpoint = Checkpoint(deadline=0)
    checkpoint.request([unit], final=True)
    assert checkpoint.close() == [unit]     # the checkpoint goes on without it
    unit.guard.boundary()                   # the agent comes back: too late, nothing cut
    unit.guard.release()
    assert cuts_of(checkpoint) == [] and unit.writes == {'a': 1} and not unit.finished


def test_a_final_cut_finishes_its_unit_once():
    unit = Unit()
    checkpoint = Checkpoint(deadline=0)
    checkpoint.request([unit], final=True)
    checkpoint.request([unit], final=True)
    assert unit.finished and len(cuts_of(checkpoint)) == 1


class Producer:
    """Records the order of sends and barrier questions."""

    def __init__(self, events):
        self.events = events
        self.offsets = iter(range(41, 1000))

    def send(self, topic, key, value, partition=None):
        self.events.append(('send', topic, key, value, partition))
        return Future().success(SimpleNamespace(offset=next(self.offsets)))

    def send_batch(self, topic, partition, records):
        future = None
        for key, value in records:
            future = self.send(topic, key, value, partition=partition)
        return future

    def mark(self):
        self.events.append(('mark',))
        return 'epoch'


def table_unit(tmp_path):
    """A unit with one table partition, whose cut has processed up to offset 8."""
    app = runner.App('unit')
    table = app.Table('t', default=int, partitions=2)
    partition = TablePartition(table, 1, PartitionStore(tmp_path / 'p1'), 'id', ValueCache())
    unit = Unit()
    unit.cut = lambda: Cut({TP: 8}, [(partition, partition.cut())])
    unit.guard = Guard(unit.cut)
    return partition, unit


def test_changelogs_are_sent_before_the_barrier_and_stored_with_their_position(tmp_path):
    partition, unit = table_unit(tmp_path)
    partition.set('a', 1)
    partition.set('b', 2)
    partition.set('a', 3)
    events = []
    checkpoint = Checkpoint(deadline=0)
    checkpoint.request([unit])
    checkpoint.close()
    steps = checkpoint.steps(Producer(events))
    assert next(steps) == ('barrier', 'epoch')
    assert events == [('send', 'unit-t-changelog', b'a', b'3', 1),
                      ('send', 'unit-t-changelog', b'b', b'2', 1), ('mark',)]
    assert next(steps) == ('commit', {TP: 8})
    assert partition.store.get(b'a') is None and partition.get('a') == 3   # not stored yet
    checkpoint.committed()
    assert unit.committed == {TP: 8}
    assert list(steps) == []
    assert partition.store.get(b'a') == b'3' and partition.store.position() == ('id', 43)
    assert partition.flushing is None and partition.get('b') == 2
    partition.store.close()


def test_a_unit_cut_before_its_final_request_is_finished_at_once():
    unit = Unit()
    checkpoint = Checkpoint(deadline=0)
    checkpoint.request([unit])                  # the interval checkpoint cut it
    unit.processed = 7                          # then it went on
    checkpoint.request([unit], final=True)      # its partitions are taken away
    assert unit.finished and cuts_of(checkpoint) == [Cut({})]



def test_an_exactly_once_cut_notes_the_transaction_it_belongs_to():
    unit = Unit()
    unit.cut_in = -1
    checkpoint = Checkpoint(deadline=0, transaction=7)
    checkpoint.request([unit])
    assert checkpoint.complete() and unit.cut_in == 7


def test_writes_are_stored_only_after_their_offsets_were_committed_and_taken_again_if_not(
        tmp_path):
    partition, unit = table_unit(tmp_path)
    partition.set('a', 1)
    failed = Checkpoint(deadline=0)
    failed.request([unit])
    failed.close()
    producer = Producer([])
    assert [step for step, _ in failed.steps(producer)] == ['barrier', 'commit']
    assert partition.store.get(b'a') is None        # the commit failed: not stored
    partition.set('b', 2)
    retried = Checkpoint(deadline=0)
    retried.request([unit])
    retried.close()
    steps = retried.steps(producer)
    next(steps)
    assert next(steps) == ('commit', {TP: 8})
    retried.committed()
    assert list(steps) == []
    assert partition.store.get(b'a') == b'1' and partition.store.get(b'b') == b'2'
    partition.store.close()
