"""The main process never freezes and tells the truth: a hanging app check, frozen and
crash-looping slots, large reports, queued restarts, systemd's view."""

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from apps import forward_app, outputs
from harness import (
    RUNNER,
    alive,
    free_port,
    produce,
    run_cli,
    runner_env,
    wait_for,
    without_waiting,
    write_app,
)

from runner.platform import running_pid

#: Prepended to an app: while ``hang`` exists, importing the app outside a slot (the
#: main process's app check) hangs, as an import waiting on the network would.
HANGING_CHECK = '''import os, pathlib, time
while pathlib.Path({marker!r}).exists() and 'RUNNER_SLOT_PID' not in os.environ:
    time.sleep(0.05)
'''


def status(tmp_path, pidfile):
    result = run_cli(['status', '--json', '--pidfile', str(pidfile)], tmp_path)
    return json.loads(result.stdout) if result.returncode in (0, 2) else {}


def hanging_app(tmp_path, names):
    app = forward_app(tmp_path, names)
    source = (tmp_path / f'{app}.py').read_text()
    marker = tmp_path / 'hang'
    write_app(tmp_path, HANGING_CHECK.format(marker=str(marker)) + source)
    return app, marker


def check_pid(worker, nth):
    """The pid of the ``nth`` app check of a rolling restart (from the log)."""
    found = re.findall(r'checking that the app loads \(pid (\d+)\)', worker.log())
    return int(found[nth]) if len(found) > nth else None


def restart_in_background(tmp_path, pidfile, timeout=120):
    return subprocess.Popen([sys.executable, str(RUNNER), 'restart', '--pidfile', str(pidfile),
                             '--timeout', str(timeout)], cwd=tmp_path, env=runner_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_hanging_app_check_blocks_neither_restarts_of_crashed_slots_nor_term(
        tmp_path, names, workers):
    app, marker = hanging_app(tmp_path, names)
    pidfile = tmp_path / 'r.pid'
    (tmp_path / 'r.yaml').write_text('import_timeout: 30\n')
    worker = workers(app, extra=('-w', '2', '--pidfile', str(pidfile), '-c', 'r.yaml'))
    first, _ = worker.slot_pids(2)
    marker.touch()
    restart = restart_in_background(tmp_path, pidfile)
    checker = wait_for(lambda: check_pid(worker, 0), 30, 'the app check to start')
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: (worker.state(0) or {}).get('pid') not in (None, first), 60,
             'the killed slot to be restarted while the check hangs')
    assert alive(checker) and status(tmp_path, pidfile)['state'] == 'restarting'
    _, stderr = restart.communicate(timeout=60)
    assert restart.returncode == 1
    assert without_waiting(stderr) == ('runner: rolling restart refused, slots keep running: the app '
                              'check did not finish within 30s')
    wait_for(lambda: not alive(checker), 10, 'the check past its deadline to be killed')
    worker.signal(signal.SIGHUP)
    second = wait_for(lambda: check_pid(worker, 1), 30, 'a second app check to start')
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    assert not alive(second)


def test_a_main_process_killed_during_the_app_check_leaves_the_pidfile_free(
        tmp_path, names, workers):
    app, marker = hanging_app(tmp_path, names)
    pidfile = tmp_path / 'r.pid'
    worker = workers(app, extra=('--pidfile', str(pidfile)))
    [slot] = worker.slot_pids(1)
    marker.touch()
    worker.signal(signal.SIGHUP)
    checker = wait_for(lambda: check_pid(worker, 0), 30, 'the app check to start')
    worker.signal(signal.SIGKILL)
    wait_for(lambda: not alive(checker) and not alive(slot), 10,
             'the check and the slot to die with the main process')
    assert running_pid(pidfile) is None
    marker.unlink()
    again = workers(app, name='again', extra=('--pidfile', str(pidfile)))
    again.slot_pids(1)


def test_a_frozen_slot_is_killed_once_within_its_heartbeat_timeout(tmp_path, names, workers):
    (tmp_path / 'r.yaml').write_text('heartbeat_timeout: 1.5\n')
    worker = workers(forward_app(tmp_path, names), extra=('-w', '2', '-c', 'r.yaml'))
    _, frozen = worker.split_between(2)
    os.kill(frozen, signal.SIGSTOP)
    wait_for(lambda: 'killing it' in worker.log(), 30, 'the frozen slot to be noticed')
    wait_for(lambda: (worker.state(1) or {}).get('pid') not in (None, frozen), 60,
             'the frozen slot to be replaced')
    assert not alive(frozen)
    log = worker.log()
    assert log.count('killing it') == 1
    silent = re.search(rf'slot 1 \(pid {frozen}\) no heartbeat for (\d+\.\d)s; killing it', log)
    assert silent and float(silent[1]) >= 1.5          # the main loop's own measure
    assert log.count(f'slot 1 (pid {frozen}): no heartbeat') == 1


def test_a_report_far_larger_than_a_pipe_write_reaches_the_main_process_whole(
        tmp_path, names, workers, admin):
    topic = names['source'] + '-with-a-name-long-enough-to-make-the-report-large'
    admin.create_topics({topic: {'num_partitions': 400, 'replication_factor': 1}})
    write_app(tmp_path, f'''
import runner
app = runner.App({names['app']!r}, session_timeout=6)

@app.agent(app.topic({topic!r}, partitions=400))
def ignore(stream):
    for _ in stream:
        pass
''')
    pidfile = tmp_path / 'r.pid'
    worker = workers('testapp', extra=('--pidfile', str(pidfile)))
    worker.wait_ready(120)
    wait_for(lambda: len(status(tmp_path, pidfile)['slots'][0]['assignment']) == 400, 60,
             'the status to list all 400 partitions')
    assert len(json.dumps(status(tmp_path, pidfile)['slots'][0]['assignment'])) > 20000
    assert 'skipped' not in worker.log() and worker.proc.poll() is None


CRASHING_AGENT_APP = '''
import os, runner
app = runner.App({app!r}, session_timeout=6)

@app.agent(app.topic({source!r}, partitions=1))
def picky(stream):
    if os.path.exists({marker!r}):
        raise RuntimeError('poisoned')
    for _ in stream:
        pass
'''


class Systemd:
    """A ``NOTIFY_SOCKET`` that keeps every message the main process sends to it."""

    def __init__(self, path):
        self.path = str(path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.path)
        self._socket.settimeout(0.1)
        self.messages: list[list[str]] = []

    def receive(self):
        """Everything sent since the last call, as a list of messages."""
        new = []
        try:
            while True:
                new.append(self._socket.recv(4096).decode().splitlines())
        except TimeoutError:
            pass
        self.messages += new
        return new

    def heard(self, line):
        self.receive()
        return any(line in message for message in self.messages)

    def close(self):
        self._socket.close()


def test_a_crash_looping_slot_shows_as_backoff_and_stops_the_watchdog(tmp_path, names,
                                                                      kafka_bootstrap):
    marker = tmp_path / 'poison'
    write_app(tmp_path, CRASHING_AGENT_APP.format(marker=str(marker), **names))
    pidfile, logfile = tmp_path / 'r.pid', tmp_path / 'w.log'
    (tmp_path / 'r.yaml').write_text('ready_timeout: 3\n')
    systemd = Systemd(tmp_path / 'notify.sock')
    env = {**runner_env(), 'NOTIFY_SOCKET': systemd.path, 'WATCHDOG_USEC': '400000'}
    proc = subprocess.Popen([sys.executable, str(RUNNER), '-A', 'testapp', '-b', kafka_bootstrap,
                             '-p', str(free_port()), '-D', str(tmp_path / 'd'), '-c', 'r.yaml',
                             '--pidfile', str(pidfile), '-f', str(logfile)],
                            cwd=tmp_path, env=env)
    try:
        wait_for(lambda: systemd.heard('READY=1'), 60, 'READY=1')
        [slot] = [s['pid'] for s in status(tmp_path, pidfile)['slots']]
        marker.touch()
        os.kill(slot, signal.SIGKILL)
        wait_for(lambda: systemd.heard('STATUS=degraded, 0 of 1 slot ready'), 30,
                 'a degraded status')
        backoff = wait_for(lambda: [s for s in status(tmp_path, pidfile)['slots']
                                    if s['state'] == 'backoff' and s['exit_code'] == 70], 30,
                           'the slot in backoff after crashing')
        assert 'picky raised' in backoff[0]['reason'] and backoff[0]['retry_at']
        table = wait_for(lambda: (shown := run_cli(['status', '--pidfile', str(pidfile)],
                                                   tmp_path).stdout) and 'backoff' in shown and shown,
                         60, '`runner status` to show the slot in backoff (it crashes again and again)')
        assert 'next start in' in table and 'None' not in table
        wait_for(lambda: 'no longer pinging the systemd watchdog' in logfile.read_text(), 30,
                 'the watchdog to be held')
        systemd.receive()
        wait_for(lambda: 'exited with code 70' in logfile.read_text().split(
            'no longer pinging')[1], 60, 'one more crash while the watchdog is held')
        assert not any('WATCHDOG=1' in message for message in systemd.receive())
        marker.unlink()
        wait_for(lambda: systemd.heard('STATUS=running, 1 of 1 slot ready'), 90,
                 'the slot to recover')
        wait_for(lambda: systemd.heard('WATCHDOG=1'), 10, 'the watchdog pinged again')
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        systemd.close()
    lines = [line for message in systemd.messages for line in message]
    statuses = [line for line in lines if line.startswith('STATUS=')]
    assert all(a != b for a, b in itertools.pairwise(statuses))
    assert not any('READY=1' in message and any('starting' in line for line in message)
                   for message in systemd.messages)


def test_a_restart_asked_for_during_a_restart_gets_one_of_its_own(tmp_path, names, workers):
    pidfile = tmp_path / 'r.pid'
    worker = workers(forward_app(tmp_path, names), extra=('-w', '2', '--pidfile', str(pidfile)))
    worker.slot_pids(2)
    first = restart_in_background(tmp_path, pidfile)
    wait_for(lambda: status(tmp_path, pidfile).get('state') == 'restarting', 30,
             'the first restart to begin')
    second = run_cli(['restart', '--pidfile', str(pidfile)], tmp_path, timeout=150)
    assert first.wait(150) == 0 and second.returncode == 0, second.stderr
    after = status(tmp_path, pidfile)
    assert after['rolling_restarts'] == 2 and after['restart_requests_served'] == 2
    assert 'HUP during a rolling restart: another one follows' in worker.log()
    first.stdout.close()
    first.stderr.close()



def test_a_restart_whose_slots_keep_crashing_is_stopped_and_reported(tmp_path, names,
                                                                     workers):
    marker = tmp_path / 'poison'
    write_app(tmp_path, CRASHING_AGENT_APP.format(marker=str(marker), **names))
    pidfile = tmp_path / 'r.pid'
    worker = workers('testapp', extra=('--pidfile', str(pidfile)))
    worker.slot_pids(1)
    wait_for(lambda: status(tmp_path, pidfile).get('state') == 'running', 60, 'a ready slot')
    marker.touch()                      # the deploy loads, then crashes in the slot
    result = run_cli(['restart', '--pidfile', str(pidfile), '--timeout', '150'], tmp_path,
                     timeout=180)
    assert result.returncode == 1
    assert without_waiting(result.stderr).startswith(
        'runner: rolling restart stopped: slot 0 keeps crashing')
    assert status(tmp_path, pidfile)['state'] == 'degraded'


def test_a_slot_that_does_not_stop_when_removed_is_killed(tmp_path, names, workers):
    (tmp_path / 'r.yaml').write_text('graceful_timeout: 2\n')
    worker = workers(forward_app(tmp_path, names), extra=('-w', '2', '-c', 'r.yaml'))
    _, frozen = worker.split_between(2)
    os.kill(frozen, signal.SIGSTOP)
    worker.signal(signal.SIGTTOU)
    wait_for(lambda: not alive(frozen), 60, 'the frozen slot to be killed')
    log = worker.log()
    assert log.count(f'slot 1 (pid {frozen}) did not stop within its graceful timeout; '
                     'killing it') == 1


def test_status_shows_each_slots_rate_lag_and_the_time_and_cause_of_its_last_rebalance(
        tmp_path, names, workers, kafka_bootstrap):
    pidfile = tmp_path / 'r.pid'
    worker = workers(forward_app(tmp_path, names), extra=('-w', '2', '--pidfile', str(pidfile)))
    worker.split_between(2)
    produce(kafka_bootstrap, names['source'], ((f'k{i}', i) for i in range(400)))
    outputs(kafka_bootstrap, names['sink'], 400)

    def progress(count):
        slots = status(tmp_path, pidfile).get('slots', [])
        shown = [slot.get('progress') or {} for slot in slots if slot['pid']]
        return shown if len(shown) == count and all(shown) else None
    wait_for(lambda: (shown := progress(2)) and all(
        p['rate'] > 0 and p['lag'] == 0 and p['rebalanced'] for p in shown), 120,
        'both slots processing, caught up, with a last rebalance')

    added_at = time.time()
    worker.signal(signal.SIGTTIN)
    newcomer = f'127.0.0.1:{worker.port + 2}'
    wait_for(lambda: (shown := progress(3)) and all(
        p['rebalanced'] and p['rebalanced']['at'] >= added_at for p in shown), 180,
        'every slot to show a rebalance since slot 2 was added')
    for slot, cause in ((0, f'joined: {newcomer}'), (1, f'joined: {newcomer}'),
                        (2, 'this slot joined the group')):
        causes = [change['cause'] for change in worker.state(slot)['rebalance_history']
                  if change['at'] >= added_at]
        assert any(each.startswith(cause) for each in causes), (slot, causes)
    table = run_cli(['status', '--pidfile', str(pidfile)], tmp_path).stdout
    assert 'REC/S' in table and 'LAG' in table and table.count('last rebalance 20') == 3
