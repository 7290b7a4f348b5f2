"""Exactly-once checkpoints: one Kafka transaction per commit.

Under ``processing_guarantee: exactly_once`` the slot's producer is
transactional and a transaction is always open while the slot processes.
Everything an agent sends and every changelog record goes into it.  A
checkpoint that has cut every task (after its cut, what a task's agents
send waits for the next transaction, see :mod:`runner.state.checkpoint`)
ends it:

1. the changelog records of the cut writes are sent;
2. the producer is sealed and waits for sends under way (``idle``);
3. the source offsets are added to the transaction, with the consumer's
   group metadata, so a member the group has moved on from is refused
   (KIP-447);
4. the transaction is committed;
5. a new transaction begins (sends waiting for it go on), and then the
   writes are stored in LevelDB (before the next checkpoint, which runs on
   the same thread).

Two invariants make every output commit exactly once with its input's
offset.  Every task of the slot is cut by the checkpoint that commits the
transaction (a task created while a checkpoint is pending joins it), so no
output enters a transaction whose commit does not carry its offsets.  And
when a transaction is aborted, every task the checkpoint asked is finished
(fenced) before the next transaction begins, so no output of a record that
is processed again enters it from a send that was waiting for it.

If step 3 or 4 fails, or the checkpoint cannot be committed at all (a task
stayed busy through a revocation, the member left its generation), the
transaction is aborted instead: its writes are thrown away, never stored,
the caller fences the tasks and reads their partitions again from their
last commit, and only then does the next transaction begin.
So is a transaction the broker aborted because it outlived its timeout (see
:mod:`runner.kafka.producer`).
A producer fenced by a newer incarnation of the slot, or a transaction that
does not end within the time allowed, stops the slot.  A fence is taken for
the broker's abort of a transaction that outlived its timeout when the
transaction was that old and the process was never frozen meanwhile (see
:func:`fenced_or_timed_out`): the slot then stops to be started again, rather
than for good; after Kafka was out of reach, a new producer takes over instead
(:func:`start_over`), without a restart.

The steps are generators that yield what to wait for, so the same steps run
on the consumer thread (blocking) and in the rebalance listener (awaited on
kafka-python's IO loop, which must never block).
"""

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NamedTuple

from kafka.errors import InvalidProducerEpochError, KafkaError, ProducerFencedError

from ..errors import EX_CANTCREAT, RunnerError
from ..kafka.producer import TRANSACTION_TIMEOUT_MS, Producer
from ..state.checkpoint import Checkpoint

log = logging.getLogger(__name__)

#: The errors of a producer whose transactional id a newer incarnation has taken.
FENCED = (ProducerFencedError, InvalidProducerEpochError)
#: How often the consumer thread looks again while it waits for a step.
STEP_TICK = 0.001
#: How often a blocked wait looks again at whether Kafka can be reached.
WAITING_TICK = 0.1


class Wait(NamedTuple):
    """Wait until ``done()`` before the next step; ``what`` names it in errors.  A thread
    that may block sleeps in ``block(seconds)`` meanwhile, if given.  A wait that never
    ends ``uncommitted`` leaves the transaction surely not committed (unlike the commit's,
    whose request may have reached the broker)."""

    done: Callable[[], bool]
    what: str
    block: Callable[[float], Any] | None = None
    uncommitted: bool = True


def _request(result: Any, what: str, uncommitted: bool = True) -> Wait:
    """Wait for a transactional request's result (its failure is looked at afterwards)."""
    def block(seconds: float) -> None:
        with contextlib.suppress(Exception):        # the caller checks result.failed
            result.wait(timeout_ms=seconds * 1000)
    return Wait(lambda: result.is_done, what, block, uncommitted)


class TransactionAborted(Exception):
    """The transaction cannot be committed; it is to be aborted."""


class ProducerFenced(RunnerError):
    """A newer incarnation of this slot took over its transactional id."""

    exit_code = EX_CANTCREAT


class TransactionTimedOut(RunnerError):
    """The broker aborted the open transaction, which outlived its timeout while this slot
    ran; the slot starts again from its last commit."""


class TransactionStuck(RunnerError):
    """A transaction did not end in time: the slot restarts (its successor aborts it).
    ``uncommitted``: it is surely not committed (see :class:`Wait`)."""

    def __init__(self, message: str, uncommitted: bool = False) -> None:
        super().__init__(message)
        self.uncommitted = uncommitted


Steps = Iterator[Wait]


def commit(checkpoint: Checkpoint, producer: Producer, offsets: dict,
           group_metadata: Callable[[], Any]) -> Steps:
    """Steps 1 to 5 (see the module docstring); raises TransactionAborted."""
    try:
        checkpoint.send_changelogs(producer)
    except KafkaError as exc:        # the transaction is already in an abortable state
        raise TransactionAborted(f'sending changelog records failed: {exc}') from None
    producer.seal()
    yield Wait(producer.idle, 'sends under way')
    if offsets:
        what = 'adding the offsets to the transaction'
        result = _start(lambda: producer.send_offsets(offsets, group_metadata()), producer, what)
        yield _request(result, what)
        _check(result, what)
    what = 'the commit of the transaction'
    result = _start(lambda: producer.end(commit=True), producer, what)
    yield _request(result, what, uncommitted=False)
    _check(result, what)
    checkpoint.committed()
    producer.begin()
    checkpoint.store()


def abort(checkpoint: Checkpoint, producer: Producer, fence: Callable[[], Any]) -> Steps:
    """Abort the open transaction and forget the writes cut for it; ``fence()`` finishes
    the checkpoint's tasks before the next transaction begins (see the module).  One the
    broker has aborted already (it outlived its timeout) only waits for the producer's
    new epoch."""
    producer.seal()
    yield Wait(producer.idle, 'sends under way')
    if producer.aborted_by_broker():
        log.warning('the broker aborted the open transaction: it was open longer than its '
                    'timeout')
        yield Wait(producer.ready, "the producer's new epoch")
    else:
        what = 'the abort of the transaction'
        try:
            result = producer.end(commit=False)
        except KafkaError as exc:       # the producer is in a state it cannot abort from
            _raise_fatal(producer.transaction_error or exc, what)
        yield _request(result, what)
        if result.failed:
            _raise_fatal(result.exception, what)
    checkpoint.discard()
    _fence_and_begin(checkpoint, producer, fence)


def start_over(checkpoint: Checkpoint, producer: Producer, fence: Callable[[], Any]) -> None:
    """A transaction that cannot end after Kafka came back (a request lost with the
    outage): a new producer aborts it, and the records since the last commit are processed
    again, as after an abort (``fence()`` as for :func:`abort`)."""
    producer.replace()
    checkpoint.discard()
    _fence_and_begin(checkpoint, producer, fence)


def _fence_and_begin(checkpoint: Checkpoint, producer: Producer,
                     fence: Callable[[], Any]) -> None:
    """The transaction was aborted: finish its tasks, then begin the next one."""
    fence()
    unfenced = checkpoint.unfinished()
    assert not unfenced, f'{unfenced} could send into the transaction after an abort'
    producer.begin()


def _start(call: Callable[[], Any], producer: Producer, what: str) -> Any:
    """Start a transactional request; kafka-python refuses at once when an earlier send
    or request failed (the transaction is then to be aborted) or the producer is fenced."""
    try:
        return call()
    except KafkaError as exc:
        cause = producer.transaction_error or exc
        if isinstance(cause, FENCED):
            _raise_fatal(cause, what)
        raise TransactionAborted(f'{what} failed: {cause}') from None


def _check(result: Any, what: str) -> None:
    if result.failed:
        error = result.exception
        if isinstance(error, FENCED):
            _raise_fatal(error, what)
        raise TransactionAborted(f'{what} failed: {error}')


def _raise_fatal(error: BaseException, what: str) -> None:
    if isinstance(error, FENCED):
        raise ProducerFenced('a newer incarnation of this slot took over its transactional id '
                             '(it was restarted, or its data directory runs elsewhere); this '
                             'one stops without committing')
    raise TransactionStuck(f'{what} failed: {error}')


def fenced_or_timed_out(fence: ProducerFenced, producer: Producer,
                        awake_since: float) -> RunnerError:
    """What a fence means.  Both a newer incarnation of the slot and the broker's abort of a
    transaction older than its timeout fence the producer.  It was the abort when the open
    transaction is that old and this process has been awake (never frozen, see
    :attr:`runner.runtime.status.SlotStatus.awake_since`) for all of it: a newer incarnation
    can only run on another copy of the data directory, whose fence comes while this one's
    transaction is young (commits come every ``commit_interval``)."""
    age = producer.transaction_age()
    if age * 1000 <= TRANSACTION_TIMEOUT_MS or awake_since > time.monotonic() - age:
        return fence
    return TransactionTimedOut(
        f'the broker aborted the open transaction: it had been open for {age:.0f}s, longer '
        f'than its timeout ({TRANSACTION_TIMEOUT_MS / 1000:g}s), as an agent was slow inside '
        'a record or Kafka was out of reach; the slot starts again from its last commit')


def run(steps: Steps, timeout: float, waiting: Callable[[], bool] = lambda: False) -> None:
    """Drive ``steps`` on the calling thread, each wait bounded by ``timeout`` seconds of
    Kafka answering (see :func:`block_until`)."""
    for wait in steps:
        if not block_until(wait.done, timeout, waiting, wait.block):
            raise TransactionStuck(f'{wait.what} did not finish within {timeout:g}s',
                                   wait.uncommitted)


def block_until(done: Callable[[], bool], timeout: float, waiting: Callable[[], bool],
                block: Callable[[float], Any] | None = None) -> bool:
    """Block until ``done()``; False once ``timeout`` seconds pass without it.  The time
    starts again while ``waiting()`` says Kafka cannot be reached (it raises itself when
    that has lasted too long).  ``block(seconds)`` sleeps until something may have
    changed, if given."""
    deadline = time.monotonic() + timeout
    while not done():
        now = time.monotonic()
        if waiting():
            deadline = now + timeout
        elif now >= deadline:
            return False
        if block is not None:
            block(min(deadline - now, WAITING_TICK))
        else:
            time.sleep(STEP_TICK)
    return True


async def run_awaited(steps: Steps, timeout: float,
                      awaited: Callable[[Callable[[], bool], float], Awaitable[bool]]) -> None:
    """Drive ``steps`` in the rebalance listener: ``awaited(condition, timeout)`` yields to
    kafka-python's IO loop until the condition holds (True) or the time is up (False)."""
    for wait in steps:
        if not await awaited(wait.done, timeout):
            raise TransactionStuck(f'{wait.what} did not finish within {timeout:g}s')
