"""Rolling restarts: one half of the slots at a time, each slot replaced by a successor
prepared beside it before it stops.  The main process's part is driven with slot
processes that are never forked: the test reports and exits for them."""

import itertools
import json
import os
import signal
import socket
from types import SimpleNamespace

import pytest

from runner import platform
from runner.main.rolling import PendingCheck, RollingRestart
from runner.main.slots import Deploy
from runner.main.supervisor import Supervisor

USR2, TERM = signal.SIGUSR2, signal.SIGTERM


class Steps:
    """Records what a restart asks of the main process; slots in ``down`` get no successor."""

    def __init__(self, down=()):
        self.done: list[tuple[str, int]] = []
        self.down = set(down)

    def prepare(self, index):
        if index in self.down:
            return False
        self.done.append(('prepare', index))
        return True

    def hand_over(self, index):
        self.done.append(('hand over', index))


def test_halves_are_prepared_handed_over_and_waited_for_in_turn():
    restart, steps = RollingRestart(range(4)), Steps()
    assert restart.groups == [[0, 1], [2, 3]]

    def step(prepared=(), ready=(), workers=4):
        return restart.advance(set(prepared), set(ready), workers, steps.prepare,
                               steps.hand_over)
    assert not step()
    assert steps.done == [('prepare', 0), ('prepare', 1)]
    assert not step(prepared={0})                     # slot 1's successor not yet prepared
    assert not step(prepared={0, 1})
    assert steps.done[2:] == [('hand over', 0), ('hand over', 1)]
    assert not step(ready={2, 3})                      # the first group is not ready yet
    assert not step(ready={0, 1, 2, 3})
    assert not step()
    assert steps.done[4:] == [('prepare', 2), ('prepare', 3)]
    assert not step(prepared={2, 3})
    assert step(ready={0, 1, 2, 3})


def test_an_odd_count_restarts_the_smaller_half_first():
    assert RollingRestart(range(5)).groups == [[0, 1], [2, 3, 4]]
    assert RollingRestart([0]).groups == [[0]] and RollingRestart([0]).describe() == 'slots 0'


def test_slots_removed_meanwhile_are_not_waited_for():
    restart, steps = RollingRestart(range(2)), Steps()
    restart.advance(set(), set(), 2, steps.prepare, steps.hand_over)
    restart.advance({0}, set(), 2, steps.prepare, steps.hand_over)
    restart.advance(set(), {0, 1}, 2, steps.prepare, steps.hand_over)
    assert not restart.advance(set(), {0}, 1, steps.prepare, steps.hand_over)   # TTOU: 1 gone
    assert not restart.advance(set(), {0}, 1, steps.prepare, steps.hand_over)
    assert restart.advance(set(), {0}, 1, steps.prepare, steps.hand_over)
    assert steps.done == [('prepare', 0), ('hand over', 0)]


def test_slots_without_a_successor_are_neither_waited_for_nor_handed_over():
    restart, steps = RollingRestart(range(4)), Steps(down={1})
    restart.advance(set(), set(), 4, steps.prepare, steps.hand_over)
    restart.advance({0}, set(), 4, steps.prepare, steps.hand_over)       # 1 is not prepared
    assert steps.done == [('prepare', 0), ('hand over', 0)]
    assert not restart.advance(set(), {0}, 4, steps.prepare, steps.hand_over)
    assert not restart.advance(set(), {0, 1}, 4, steps.prepare, steps.hand_over)  # 1 started anew
    restart.advance(set(), set(), 4, steps.prepare, steps.hand_over)
    restart.forget(3)                                  # its successor was dismissed
    restart.advance({2}, set(), 4, steps.prepare, steps.hand_over)
    assert steps.done[2:] == [('prepare', 2), ('prepare', 3), ('hand over', 2)]
    assert restart.advance(set(), {0, 1, 2, 3}, 4, steps.prepare, steps.hand_over)


# -- the main process's part ------------------------------------------------------


#: Slots that never run, each on a port of its own (the main process binds them).
DEPLOY = Deploy(None, lambda index: ('127.0.0.1', 0))


class FakeProcess:
    """What the main process forks, never forked; ``report()`` writes to its report socket."""

    pids = itertools.count(1000)

    def __init__(self, target, args, name):
        self.index, self._report_fd, _, self.successor, self.web_fd = args
        self.pid = next(self.pids)
        self.exitcode = None
        self.end: socket.socket | None = None

    def start(self):
        self.end = socket.socket(fileno=os.dup(self._report_fd))

    def report(self, phase, ready):
        self.end.send(b'{"loaded": true}')
        self.end.send(json.dumps({
            'phase': phase, 'live': True, 'ready': ready, 'reason': 'joining', 'web': None,
            'graceful_timeout': 30.0, 'heartbeat_timeout': 60.0, 'assignment': []}).encode())


class Main:
    """A Supervisor of ``workers`` fake slots, its loop stepped by the test; the signals it
    sends are recorded, not sent."""

    def __init__(self, monkeypatch, workers):
        self.sent: list[tuple[int, int]] = []
        self.forked: list[FakeProcess] = []
        monkeypatch.delenv('NOTIFY_SOCKET', raising=False)
        monkeypatch.setattr(platform, 'kill_quietly', self._record_signal)
        monkeypatch.setattr(platform, 'kill_group', lambda pgid, signum=None: None)
        monkeypatch.setattr(platform, 'children', lambda parent: {})
        self.supervisor = Supervisor('app', workers, DEPLOY, None, check_timeout=10.0,
                                     ready_timeout=60.0)
        self.supervisor._context = SimpleNamespace(Process=self._fork)

    def _record_signal(self, pid, signum=signal.SIGKILL):
        self.sent.append((pid, signum))

    def _fork(self, **kwargs):
        process = FakeProcess(**kwargs)
        self.forked.append(process)
        return process

    def step(self, times=1):
        """What one round of the main loop does, but for signals and sleeping."""
        main = self.supervisor
        for _ in range(times):
            for slot in main._processes():
                main._read_reports(slot)
            main._reap()
            main._advance_restart()
            main._spawn_missing()
            main._check_liveness()
            main._publish()

    def start(self):
        """Every slot started and ready."""
        self.step()
        for slot in self.supervisor.slots.values():
            self.report(slot)
        self.step()
        assert self.supervisor.publisher.was_ready

    def hup(self):
        """As if HUP came and the app check passed."""
        self.supervisor.restarts.check = PendingCheck(SimpleNamespace(result=lambda: None),
                                                      lambda _checked: DEPLOY)
        self.supervisor.restarts.finish_check()

    def report(self, slot, phase='running', ready=True):
        slot.process.report(phase, ready)

    def exit(self, slot, code):
        slot.process.exitcode = code
        self.step()

    def backoff_over(self, index):
        self.supervisor._record(index).retry_at = 0.0

    def signals_to(self, slot):
        return [signum for pid, signum in self.sent if pid == slot.pid]

    def replace(self, *indexes):
        """Take the slots ``indexes``, whose successors run, through their handover."""
        main = self.supervisor
        successors = [main.restarts.successors[index] for index in indexes]
        old = [main.slots[index] for index in indexes]
        for successor in successors:
            self.report(successor, 'prepared', ready=False)
        self.step()
        for slot in old:
            assert self.signals_to(slot) == [USR2]
            self.exit(slot, 0)
        assert [main.slots[index] for index in indexes] == successors
        for successor in successors:
            self.report(successor)
        self.step()

    def close(self):
        for process in self.forked:
            process.end.close()
        for slot in self.supervisor._processes():
            slot.reader.close()
        self.supervisor._listeners.close_all()


@pytest.fixture
def make_main(monkeypatch):
    made = []

    def make(workers):
        made.append(Main(monkeypatch, workers))
        made[-1].start()
        return made[-1]
    yield make
    for main in made:
        main.close()


def test_a_slot_down_when_its_turn_comes_is_started_anew_and_the_restart_goes_on(make_main):
    main = make_main(2)
    crashed = main.supervisor.slots[0]
    main.exit(crashed, 1)                           # waits for its restart (backoff)
    main.hup()
    main.backoff_over(0)
    main.step()                                     # slot 0 gets no successor: started anew
    anew = main.supervisor.slots[0]
    assert anew.pid != crashed.pid and main.supervisor.restarts.successors == {}
    main.report(anew)
    main.step(3)
    assert main.signals_to(anew) == []
    main.replace(1)                                 # slot 1 is replaced hot, as usual
    assert main.supervisor.restarts.plan is None and main.supervisor.restarts.done == 1


def test_a_failed_restart_stops_the_successors_that_did_not_take_over(make_main):
    main = make_main(4)
    main.hup()
    main.step()
    first, second = main.supervisor.restarts.successors[0], main.supervisor.restarts.successors[1]
    main.report(first, 'prepared', ready=False)
    main.exit(second, 1)                            # the new slot 1 cannot start
    assert 'the new slot 1 could not start' in main.supervisor.restarts.error
    assert main.signals_to(first) == [TERM] and main.supervisor.restarts.successors == {}
    old = main.supervisor.slots[0]
    main.exit(old, 1)                               # slot 0 crashes: no stale successor
    main.backoff_over(0)
    main.step()
    assert 0 not in main.supervisor.slots           # not while the dismissed one may take over
    main.exit(first, 0)
    assert main.supervisor.slots[0].pid not in (old.pid, first.pid)
    main.hup()
    main.step()
    assert sorted(main.supervisor.restarts.successors) == [0, 1]
    assert main.supervisor.restarts.successors[0].pid not in (first.pid, second.pid)


def test_a_slot_removed_while_handing_over_leaves_and_is_not_replaced(make_main):
    main = make_main(3)
    main.hup()
    main.step()
    main.replace(0)
    main.step(2)                                    # the next group: slots 1 and 2
    old, successor = main.supervisor.slots[2], main.supervisor.restarts.successors[2]
    for index in (1, 2):
        main.report(main.supervisor.restarts.successors[index], 'prepared', ready=False)
    main.step()
    assert main.signals_to(old) == [USR2]
    main.supervisor._on_ttou()                      # slot 2 goes, for good
    assert main.signals_to(old) == [USR2, TERM]
    assert main.signals_to(successor) == [TERM]
    main.exit(old, 0)
    main.exit(successor, 0)
    assert sorted(main.supervisor.slots) == [0, 1]
    main.exit(main.supervisor.slots[1], 0)
    main.report(main.supervisor.slots[1])
    main.step()
    assert main.supervisor.restarts.plan is None and main.supervisor.restarts.done == 1
    assert sorted(main.supervisor.slots) == [0, 1]


def test_a_slot_fenced_before_handing_over_is_not_taken_over(make_main):
    main = make_main(2)
    main.hup()
    main.step()
    old, successor = main.supervisor.slots[0], main.supervisor.restarts.successors[0]
    main.report(successor, 'prepared', ready=False)
    main.exit(old, 73)                              # another member took its identity
    assert main.signals_to(successor) == [TERM]
    assert 0 not in main.supervisor.slots and main.supervisor._record(0).failed
    assert 'rolling restart stopped: slot 0' in main.supervisor.restarts.error


def test_a_slot_that_crashes_before_handing_over_is_started_anew(make_main):
    main = make_main(2)
    main.hup()
    main.step()
    old, successor = main.supervisor.slots[0], main.supervisor.restarts.successors[0]
    main.exit(old, 1)
    assert main.signals_to(successor) == [TERM] and main.supervisor.restarts.successors == {}
    successor.stop_by = 0.0                         # it does not stop in time
    main.step()
    assert main.signals_to(successor) == [TERM, signal.SIGKILL]
    main.exit(successor, -9)
    main.backoff_over(0)
    main.step()
    anew = main.supervisor.slots[0]
    assert anew.pid not in (old.pid, successor.pid)
    main.report(anew)
    main.step(3)
    main.replace(1)
    assert main.supervisor.restarts.plan is None and main.supervisor.restarts.done == 1


def listening_port(fd):
    """The port the listening socket ``fd`` (as the main process holds it) is bound to."""
    with socket.socket(fileno=os.dup(fd)) as copy:
        return copy.getsockname()[1]


def connects(port):
    """Whether a connection to ``port`` is taken (into the backlog, if nobody accepts)."""
    try:
        socket.create_connection(('127.0.0.1', port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def test_a_successor_serves_the_very_socket_of_the_slot_it_replaces(make_main):
    main = make_main(2)
    old = main.supervisor.slots[0]
    port = listening_port(old.process.web_fd)
    main.hup()
    main.step()
    successor = main.supervisor.restarts.successors[0]
    assert successor.process.web_fd == old.process.web_fd
    main.replace(0)                                 # the old slot has exited
    assert main.supervisor.slots[0] is successor and connects(port)
    assert listening_port(successor.process.web_fd) == port


def test_a_slot_that_exits_unasked_leaves_its_port_closed_until_it_starts_again(make_main):
    main = make_main(2)
    crashed = main.supervisor.slots[1]
    port = listening_port(crashed.process.web_fd)
    main.exit(crashed, 1)
    assert not connects(port)
    main.backoff_over(1)
    main.step()
    anew = main.supervisor.slots[1]
    assert anew.pid != crashed.pid and connects(listening_port(anew.process.web_fd))


def test_a_web_port_in_use_at_start_stops_the_worker_with_73(monkeypatch):
    taken = socket.create_server(('127.0.0.1', 0))
    port = taken.getsockname()[1]
    deploy = Deploy(None, lambda index: ('127.0.0.1', port))
    monkeypatch.setattr(platform, 'children', lambda parent: {})
    supervisor = Supervisor('app', 1, deploy, None, check_timeout=10.0, ready_timeout=60.0)
    try:
        supervisor._spawn_missing()
    finally:
        taken.close()
    assert supervisor.exit_code == 73 and supervisor.slots == {}
    assert supervisor.fatal_message == (f'slot 0 could not start: web port 127.0.0.1:{port} '
                                        'is already in use')
