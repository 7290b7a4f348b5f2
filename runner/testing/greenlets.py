"""The agent threads, replaced: each agent instance runs as a greenlet of the test's thread.

:class:`runner.runtime.agents.AgentThreads` makes its threads through a
``threads`` namespace; :class:`Greenlets` is one whose ``Thread`` runs the
instance as a greenlet.  An instance runs until it asks its inbox for records
and none are ready: then it switches back to the test (:class:`SteppedInbox`),
which goes on once every instance waits so.  Nothing runs beside the test, so a
test never waits for anything, and the order records are processed in is the
same on every run.
"""

import sys
from collections.abc import Callable, Sequence

import greenlet

from ..runtime.queues import Inbox, PartitionQueue, Stopped


class NoWait:
    """The event an agent's retry backoff waits on: the wait returns at once (a test does
    not sleep through backoffs), True once the run stops."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        return self._set


class Greenlets:
    """A stand-in for the :mod:`threading` module, as :class:`AgentThreads` uses it."""

    def __init__(self) -> None:
        self.instances: list[GreenletThread] = []
        #: Batches taken so far by every instance: a round that takes none is the last.
        self.batches = 0
        self._first = 0          # the instance the last round started with

    def Thread(self, target: Callable, args: tuple = (), daemon: bool | None = None,
               name: str | None = None) -> 'GreenletThread':
        thread = GreenletThread(target, args, name)
        self.instances.append(thread)
        return thread

    Event = NoWait

    def run_until_idle(self) -> None:
        """Let the instances process until none of them has records ready to take.  Each
        round starts with the instance after the one the last round started with, so the
        instances of an agent share its records, as its threads do."""
        while True:
            before = self.batches
            self._first = (self._first + 1) % max(1, len(self.instances))
            for instance in self.instances[self._first:] + self.instances[:self._first]:
                instance.resume()
            if self.batches == before:
                return


class GreenletThread:
    """An agent instance, shaped as a :class:`threading.Thread`, run as a greenlet whose
    parent is the test's."""

    def __init__(self, target: Callable, args: tuple, name: str | None) -> None:
        self.name = name
        self._greenlet = greenlet.greenlet(lambda: target(*args))

    def start(self) -> None:
        """Run until the instance first waits for records."""
        self.resume()

    def resume(self) -> None:
        """Run until it waits for records again (or returns)."""
        if not self._greenlet.dead:
            self._greenlet.switch()

    def is_alive(self) -> bool:
        return not self._greenlet.dead

    def join(self, timeout: float | None = None) -> None:
        """Let a stopping instance finish (its inbox is closed: it takes nothing more)."""
        self.resume()


class SteppedInbox(Inbox):
    """An inbox whose taker switches back to the test when no records are ready, and
    which tells the run of every partition its agent stops at a record."""

    def __init__(self, greenlets: Greenlets,
                 on_stop: Callable[[Stopped, BaseException | None], None]) -> None:
        super().__init__()
        self._greenlets = greenlets
        self._on_stop = on_stop

    def take(self) -> tuple[PartitionQueue, Sequence] | None:
        while (taken := self.take_ready()) is False:
            greenlet.getcurrent().parent.switch()
        if taken is not None:
            self._greenlets.batches += 1
        return taken

    def stop(self, queue: PartitionQueue, records: Sequence, stopped: Stopped) -> None:
        """The agent stops ``queue`` at a record, inside the ``except`` block that caught
        what the agent raised on it: that exception goes to the run with the record."""
        super().stop(queue, records, stopped)
        self._on_stop(stopped, sys.exception())

