"""What the main process publishes never says more than it knows: a slot that hangs
loading the app, a refused deploy and a frozen main process all show, and STATUS=
does not flap while slots settle."""

import json
import signal

import pytest
from test_rolling import Main

from runner.errors import EX_DEGRADED, EX_NOT_ANSWERING, EX_OK, RunnerError
from runner.main import control, publisher


@pytest.fixture
def main(monkeypatch, tmp_path):
    made = Main(monkeypatch, 2)
    made.supervisor.publisher.path = tmp_path / 'r.pid.json'
    made.heard = []
    monkeypatch.setattr(made.supervisor.publisher.notifier, 'notify',
                        lambda **fields: made.heard.append(fields))
    yield made
    made.close()


def status_file(main):
    return json.loads(main.supervisor.publisher.path.read_text())


def statuses(main):
    return [fields['status'] for fields in main.heard if 'status' in fields]


def test_a_slot_that_never_loads_the_app_says_so_and_is_killed_at_the_import_timeout(main):
    main.step()
    slot = main.supervisor.slots[0]
    row = status_file(main)['slots'][0]
    assert row['state'] == 'starting'
    assert row['reason'] == 'loading the app (killed if not loaded within 10s: import_timeout)'
    slot.started -= 11                              # its import hangs past the timeout
    main.step()
    assert main.signals_to(slot) == [signal.SIGKILL]
    assert slot.killed == 'did not load the app within 10s (import_timeout)'
    assert main.signals_to(main.supervisor.slots[1]) == []


def test_a_successor_that_never_loads_the_app_is_killed_at_the_import_timeout(main):
    main.start()
    main.hup()
    main.step()
    successor = main.supervisor.restarts.successors[0]
    successor.started -= 11
    main.step()
    assert main.signals_to(successor) == [signal.SIGKILL]
    main.exit(successor, -9)
    assert main.supervisor.restarts.error == ('rolling restart stopped: the new slot 0 could '
                                              'not start: did not load the app within 10s '
                                              '(import_timeout)')


def refuse_deploy(main):
    def broken():
        raise RunnerError('invalid workers in r.yaml')
    main.supervisor.restarts.reload = broken
    main.supervisor._on_hup()
    main.step()


def test_a_refused_deploy_shows_in_status_and_status_line_until_a_restart_succeeds(main):
    main.start()
    refuse_deploy(main)
    refusal = 'rolling restart refused, slots keep running: invalid workers in r.yaml'
    lines = control.format_status(status_file(main)).splitlines()
    head = f'app: main pid {main.supervisor._main_pid}, running, 2 of 2 slots ready'
    assert lines[:2] == [head, f'last deploy: {refusal}']
    assert statuses(main)[-1] == f'running, 2 of 2 slots ready; {refusal}'
    main.supervisor.publisher.reloading()           # as the next HUP's restart begins
    main.hup()
    main.step()
    main.replace(0)
    main.step(2)
    main.replace(1)
    assert main.supervisor.restarts.done == 1
    assert 'last deploy' not in control.format_status(status_file(main))
    assert statuses(main)[-1] == 'running, 2 of 2 slots ready'


def test_status_lines_are_sent_once_they_have_held_and_say_the_state_first(main, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(publisher.time, 'monotonic', lambda: clock[0])
    main.step()
    first, second = main.supervisor.slots[0], main.supervisor.slots[1]
    for ready in ([first], [first, second], [second], [first, second]):   # slots settle
        for slot in (first, second):
            main.report(slot, ready=slot in ready)
        main.step()
        clock[0] += 0.2
    clock[0] += publisher.STATUS_SETTLE
    main.step(2)
    assert statuses(main) == ['starting, 0 of 2 slots ready', 'running, 2 of 2 slots ready']
    assert next(fields for fields in main.heard if 'ready' in fields)['ready'] == '1'


def test_the_status_file_is_rewritten_while_nothing_changes(main, monkeypatch):
    now = [5000.0]
    monkeypatch.setattr(publisher.time, 'time', lambda: now[0])
    main.step()
    assert status_file(main)['written_at'] == 5000.0
    now[0] += publisher.STATUS_REFRESH
    main.step()
    assert status_file(main)['written_at'] == 5000.0 + publisher.STATUS_REFRESH


STATUS = {'app': 'wc', 'pid': 10, 'state': 'running', 'workers': 1, 'written_at': 100.0,
          'slots': [{'slot': 0, 'pid': 11, 'web': None, 'state': 'ready', 'ready': True,
                     'assignment': ['in:0'], 'reason': None}]}


def test_a_main_process_that_stopped_writing_its_status_is_said_to_have_stopped_answering():
    fresh = control.format_status(STATUS, now=100.0 + control.STALE_AFTER)
    assert fresh.splitlines()[0] == 'wc: main pid 10, running, 1 of 1 slot ready'
    assert control.exit_code(STATUS, now=100.0 + control.STALE_AFTER) == EX_OK
    stale = control.format_status(STATUS, now=130.0).splitlines()
    assert stale[0] == ('wc: main pid 10 stopped answering: its status was last written 30s '
                        'ago, and said:')
    assert stale[1] == '  running, 1 of 1 slot ready'
    assert control.exit_code(STATUS, now=130.0) == EX_NOT_ANSWERING
    assert control.exit_code({**STATUS, 'state': 'degraded'}, now=100.0) == EX_DEGRADED
