"""The main process: restarts, signals, rolling restarts, scaling, orphans, operating commands."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from apps import count_app, forward_app, outputs, wait_for_counts
from harness import (
    RUNNER,
    alive,
    committed,
    free_port,
    murmur2_partition,
    produce,
    run_cli,
    runner_env,
    wait_for,
    write_app,
)


def test_kill_9_of_a_slot_restarts_it_and_loses_nothing(tmp_path, names, workers,
                                                        kafka_bootstrap):
    worker = workers(forward_app(tmp_path, names, body='time.sleep(0.001)'), extra=('-w', '2'))
    first, second = worker.split_between(2)
    produce(kafka_bootstrap, names['source'], [(f'k{n}', n) for n in range(2000)])
    wait_for(lambda: (worker.state(0) or {}).get('processed'), 30, 'slot 0 to work')
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: (worker.state(0) or {}).get('pid') not in (None, first), 60,
             'slot 0 to be restarted')
    everything = set(range(2000))
    seen = outputs(kafka_bootstrap, names['sink'], timeout=90,
                   until=lambda items: {item['value'] for item in items} >= everything)
    assert {item['value'] for item in seen} == everything
    assert f'slot 0 (pid {first}): was killed by signal 9; restarting it in 1s' in worker.log()
    assert alive(second) and worker.proc.poll() is None


def test_usr1_dumps_the_main_process_and_every_slot(tmp_path, names, workers):
    worker = workers(forward_app(tmp_path, names), extra=('-w', '2'))
    pids = worker.slot_pids(2)
    worker.signal(signal.SIGUSR1)
    wait_for(lambda: worker.log().count('--- end of stack dump') >= 3, 10, 'three stack dumps')
    log = worker.log()
    assert f'stack dump of main pid {worker.proc.pid}' in log
    for index, pid in enumerate(pids):
        assert f'stack dump of slot {index} pid {pid}' in log


def test_hup_rolls_over_without_losing_records_or_going_dark(tmp_path, names, workers,
                                                            kafka_bootstrap):
    pidfile = tmp_path / 'runner.pid'
    worker = workers(forward_app(tmp_path, names, body='time.sleep(0.002)'),
                     extra=('-w', '2', '--pidfile', str(pidfile)))
    old = worker.split_between(2)
    dark_moments = []
    stop = threading.Event()

    def watch_health():
        while not stop.is_set():
            answers = [worker.state(i, '/health') is not None for i in range(2)]
            if not any(answers):
                dark_moments.append(time.monotonic())
            stop.wait(0.02)
    watcher = threading.Thread(target=watch_health)
    watcher.start()
    try:
        feeder = threading.Thread(target=produce, args=(
            kafka_bootstrap, names['source'], [(f'k{n}', n) for n in range(3000)]))
        feeder.start()
        result = run_cli(['restart', '--pidfile', str(pidfile), '--timeout', '120'], tmp_path,
                         timeout=150)
        feeder.join()
    finally:
        stop.set()
        watcher.join()
    assert result.returncode == 0, result.stderr
    new = worker.slot_pids(2)
    assert not set(old) & set(new)
    assert dark_moments == []
    everything = set(range(3000))
    seen = outputs(kafka_bootstrap, names['sink'], timeout=90,
                   until=lambda items: {item['value'] for item in items} >= everything)
    assert {item['value'] for item in seen} == everything
    log = worker.log()
    assert log.index('slot 0 (pid') < log.index('slot 1 (pid')


class HandoverWatch:
    """Polls, every 50 ms until stopped, ``/health`` of both slots of a worker and each of
    ``keys`` (word → the slot that owns its partition) at both slots, and counts what went
    wrong against ground truth: a refused or broken connection, a ``/health`` that is not 200, a
    lookup that is not 200 while the slot owning the key was not being replaced (its old
    process stopping, or its successor not ready yet, seen before or after the lookup)."""

    def __init__(self, worker, keys, old_pids):
        self.worker, self.keys, self.old_pids = worker, keys, old_pids
        self.refused: list[str] = []
        self.broken: list[str] = []         # connections reset, or not answered in time
        self.unhealthy: list[str] = []
        self.unanswered: list[str] = []     # lookups of keys whose owner was not moving
        self.lookups = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()

    def _get(self, slot, path):
        """(status, body) of one GET; status 0 for a refused connection (which is noted)."""
        import http.client
        connection = http.client.HTTPConnection(self.worker.host, self.worker.port + slot,
                                                timeout=30)
        try:
            connection.request('GET', path)
            answer = connection.getresponse()
            return answer.status, json.loads(answer.read() or b'null')
        except ConnectionRefusedError:
            self.refused.append(f'{path} on slot {slot}')
            return 0, None
        except (OSError, http.client.HTTPException) as exc:
            self.broken.append(f'{path} on slot {slot}: {exc!r}')
            return 0, None
        finally:
            connection.close()

    def _moving(self, slot):
        """Whether slot ``slot`` is being replaced: its old process stopping (or gone) and
        its successor not ready yet."""
        status, state = self._get(slot, '/')
        return not (status == 200 and state['ready'] and (
            state['pid'] != self.old_pids[slot] or state['phase'] == 'running'))

    def _run(self):
        while not self._stop.wait(0.05):
            for slot in (0, 1):
                status, body = self._get(slot, '/health')
                if status not in (0, 200):
                    self.unhealthy.append(f'slot {slot}: {status} {body}')
                for word, owner in self.keys.items():
                    moving = self._moving(owner)
                    status, body = self._get(slot, f'/tables/counts/{word}')
                    self.lookups += 1
                    if status not in (0, 200) and not (moving or self._moving(owner)):
                        self.unanswered.append(f'{word} (slot {owner}) on slot {slot}: '
                                               f'{status} {body}')


def owners_of(worker, words, partitions):
    """word → the slot whose assignment holds the word's partition (keys placed by murmur2)."""
    held = {}
    for slot in (0, 1):
        for place in worker.state(slot)['assignment']:
            held[int(place.rpartition(':')[2])] = slot
    return {word: held[murmur2_partition(word.encode(), partitions)] for word in words}


def test_restart_refuses_no_connection_and_keys_of_unmoved_partitions_keep_answering(
        tmp_path, names, workers, kafka_bootstrap):
    pidfile = tmp_path / 'runner.pid'
    worker = workers(count_app(tmp_path, names), extra=('-w', '2', '--pidfile', str(pidfile)))
    old = worker.split_between(2)
    words = [f'w{n:03d}' for n in range(12)]
    produce(kafka_bootstrap, names['source'], [(word, word) for word in words])
    wait_for_counts(worker, dict.fromkeys(words, 1))
    owners = owners_of(worker, words, 4)
    keys = {next(word for word in words if owners[word] == slot): slot for slot in (0, 1)}
    with HandoverWatch(worker, keys, old) as watch:
        result = run_cli(['restart', '--pidfile', str(pidfile), '--timeout', '120'], tmp_path,
                         timeout=150)
        assert result.returncode == 0, result.stderr
        restarted = watch.lookups
        wait_for(lambda: watch.lookups >= restarted + 8, 30, 'lookups after the restart')
    assert not set(old) & set(worker.slot_pids(2))
    failures = {'refused': watch.refused, 'broken': watch.broken,
                'unhealthy': watch.unhealthy, 'unanswered': watch.unanswered}
    wrong = {kind: found for kind, found in failures.items() if found}
    assert wrong == {}, '\n'.join(f'{kind}: {found}' for kind, found in wrong.items())


def test_a_port_shared_by_two_slots_is_refused(tmp_path, names, workers, kafka_bootstrap):
    port = free_port()
    (tmp_path / 'shared.yaml').write_text(f'web_port: {port}\nslots:\n  1:\n    web_port: {port}\n')
    forward_app(tmp_path, names, partitions=2, concurrency=1)
    result = run_cli(['-A', 'testapp', '-b', kafka_bootstrap, '-w', '2', '-c', 'shared.yaml',
                      '-D', str(tmp_path / 'd'), '-l', 'error'], tmp_path)
    assert result.returncode == 73, result.stderr
    assert re.fullmatch(f'runner: slot [01] could not start: web port 127.0.0.1:{port} is '
                        'already in use', result.stderr.strip())


DOUBLE_FORK_APP = '''
import os, subprocess, time, runner
app = runner.App({app!r}, session_timeout=6)
source = app.topic({source!r}, partitions=1)

@app.agent(source)
def start_daemons(stream):
    for path in stream:
        # a daemon that escapes both the process group and its parent
        subprocess.run(['sh', '-c', 'setsid sleep 1000 & echo $! > ' + path + '.daemon'])
        child = runner.spawn(['sleep', '1000'])
        open(path + '.child', 'w').write(str(child.pid))
        # the same, forked without exec: its environment in /proc is the main process's
        first = os.fork()
        if first == 0:
            os.setsid()
            if os.fork() == 0:
                open(path + '.forked', 'w').write(str(os.getpid()))
                time.sleep(1000)
            os._exit(0)
        os.waitpid(first, 0)
'''


def read_pids(marker):
    """The pids the test agent wrote, once all three files are complete."""
    pids = []
    for suffix in ('.daemon', '.child', '.forked'):
        try:
            with open(marker + suffix) as handle:
                pids.append(int(handle.read()))
        except (FileNotFoundError, ValueError):
            return None
    return pids


def test_nothing_a_killed_slot_started_outlives_it(tmp_path, names, workers, kafka_bootstrap):
    write_app(tmp_path, DOUBLE_FORK_APP.format(**names))
    worker = workers('testapp')
    [slot] = worker.slot_pids(1)
    marker = str(tmp_path / 'started')
    produce(kafka_bootstrap, names['source'], [(None, marker)])
    pids = wait_for(lambda: read_pids(marker), 30, 'the agent to start its subprocesses')
    assert all(alive(pid) for pid in pids)
    os.kill(slot, signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in pids), 10, 'the subprocesses to be killed')
    wait_for(lambda: (worker.state(0) or {}).get('pid') not in (None, slot), 60,
             'the slot to be restarted')


def test_an_app_that_cannot_load_stops_before_forking(tmp_path):
    write_app(tmp_path, 'import runner\nraise RuntimeError("no database")\n', 'broken')
    result = run_cli(['-A', 'broken', '-w', '2'], tmp_path)
    assert result.returncode == 78
    assert result.stderr.strip().splitlines() == [
        f"runner: cannot load app 'broken': RuntimeError: no database ({tmp_path}/broken.py:2)"]


def test_a_slot_that_dies_at_boot_stops_the_supervisor(tmp_path, names, kafka_bootstrap):
    forward_app(tmp_path, names, partitions=1, concurrency=1)
    source = (tmp_path / 'testapp.py').read_text()
    write_app(tmp_path, 'import os\nif "RUNNER_SLOT_PID" in os.environ:\n'
              '    raise RuntimeError("only in slots")\n' + source)
    started = time.monotonic()
    result = run_cli(['-A', 'testapp', '-b', kafka_bootstrap, '-w', '2', '-l', 'error',
                      '-D', str(tmp_path / 'd')], tmp_path)
    assert result.returncode == 78, result.stderr
    assert 'only in slots' in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 20


def test_a_slot_killed_before_the_worker_was_ready_is_started_again(tmp_path, names, workers):
    forward_app(tmp_path, names, partitions=2, concurrency=1)
    source = (tmp_path / 'testapp.py').read_text()
    booting = tmp_path / 'booting'                    # slots start only once it is gone
    booting.touch()
    write_app(tmp_path, 'import os, pathlib, time\nwhile "RUNNER_SLOT_PID" in os.environ '
              f'and pathlib.Path({str(booting)!r}).exists():\n    time.sleep(0.05)\n' + source)
    worker = workers('testapp', extra=('-w', '2'))
    found = wait_for(lambda: re.search(r'slot 1 started \(pid (\d+)\)', worker.log()), 30,
                     'slot 1 to be started')
    os.kill(int(found[1]), signal.SIGKILL)            # an operator's kill, the OOM killer
    assert worker.get('/ready', 0)[0] != 200          # the worker had not been ready yet
    booting.unlink()
    worker.wait_ready(slot=0)
    worker.wait_ready(slot=1)
    assert f'slot 1 (pid {found[1]}): was killed by signal 9; restarting it in' in worker.log()
    assert worker.proc.poll() is None


def test_ttin_and_ttou_add_and_remove_a_slot(tmp_path, names, workers):
    pidfile = tmp_path / 'runner.pid'
    worker = workers(forward_app(tmp_path, names), extra=('--pidfile', str(pidfile)))
    worker.slot_pids(1)
    worker.signal(signal.SIGTTIN)
    worker.slot_pids(2)
    wait_for(lambda: status(tmp_path, pidfile).get('state') == 'running'
             and len(status(tmp_path, pidfile)['slots']) == 2, 60, 'two ready slots')
    worker.signal(signal.SIGTTOU)
    wait_for(lambda: len(status(tmp_path, pidfile)['slots']) == 1, 60, 'one slot again')
    assert worker.state(1, '/health') is None


def status(tmp_path, pidfile):
    result = run_cli(['status', '--json', '--pidfile', str(pidfile)], tmp_path)
    return json.loads(result.stdout) if result.returncode in (0, 2) else {}


def waited_for(result, pattern):
    """The lines ``result`` wrote on stderr, each a plain line (into a pipe) of its wait
    matching ``pattern``."""
    lines = result.stderr.splitlines()
    assert '\r' not in result.stderr and lines, result.stderr
    assert all(re.fullmatch(rf'runner: waiting for {pattern} \((\w+)[^)]*\) \(\d+s\)', line)
               for line in lines), result.stderr
    return lines


def test_detach_status_stop_and_restart_saying_what_they_wait_for(tmp_path, names,
                                                                  kafka_bootstrap):
    app = forward_app(tmp_path, names)
    pidfile, logfile, port = tmp_path / 'r.pid', tmp_path / 'r.log', free_port()
    start = ['-A', app, '-b', kafka_bootstrap, '-w', '2', '-p', str(port), '--detach',
             '--pidfile', str(pidfile), '-f', str(logfile), '-D', str(tmp_path / 'd')]
    try:
        assert run_cli(start, tmp_path).returncode == 0
        wait_for(lambda: status(tmp_path, pidfile).get('state') == 'running', 60,
                 'the detached workers to be ready')
        again = run_cli(start, tmp_path)
        assert again.returncode == 0 and 'already running' in again.stdout
        table = run_cli(['status', '--pidfile', str(pidfile)], tmp_path)
        assert table.returncode == 0
        lines = table.stdout.splitlines()
        assert lines[1].split() == ['SLOT', 'PID', 'WEB', 'STATE', 'REC/S', 'LAG', 'PARTITIONS']
        rows = [line.split() for line in lines[2:] if not line.startswith(' ')]   # no notes
        assert [row[2:4] for row in rows] == [[f'127.0.0.1:{port}', 'ready'],
                                              [f'127.0.0.1:{port + 1}', 'ready']]
        before = status(tmp_path, pidfile)
        restarted = run_cli(['restart', '--pidfile', str(pidfile)], tmp_path, timeout=300)
        assert restarted.returncode == 0, restarted.stderr
        main = before['pid']
        assert 'the rolling restart' in waited_for(
            restarted, rf'(pid {main} to take the restart request|the rolling restart of pid '
                       rf'{main})')[-1]
        after = status(tmp_path, pidfile)
        assert after['pid'] == before['pid'] and after['rolling_restarts'] == 1
        assert {s['pid'] for s in after['slots']}.isdisjoint(s['pid'] for s in before['slots'])
    finally:
        stopped = run_cli(['stop', '--pidfile', str(pidfile)], tmp_path)
    assert stopped.returncode == 0 and 'stopped' in stopped.stdout
    waited_for(stopped, rf'pid {main} to stop')
    assert not pidfile.exists()
    gone = run_cli(['status', '--pidfile', str(pidfile)], tmp_path)
    assert gone.returncode == 3 and 'not running' in gone.stderr


def test_systemd_hears_ready_reloading_watchdog_and_stopping(tmp_path, names, kafka_bootstrap):
    app = forward_app(tmp_path, names)
    address = str(tmp_path / 'notify.sock')
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.2)
    env = {**runner_env(), 'NOTIFY_SOCKET': address, 'WATCHDOG_USEC': '2000000'}
    proc = subprocess.Popen([sys.executable, str(RUNNER), '-A', app, '-b', kafka_bootstrap,
                             '-w', '2', '-p', str(free_port()), '-D', str(tmp_path / 'd')],
                            cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
    heard: list[str] = []

    def hear(field):
        with contextlib.suppress(TimeoutError):
            heard.extend(listener.recv(4096).decode().splitlines())
        return field in heard
    try:
        wait_for(lambda: hear('READY=1'), 60, 'READY=1')
        wait_for(lambda: hear('STATUS=running, 2 of 2 slots ready'), 10, 'the status line')
        heard.clear()
        wait_for(lambda: hear('WATCHDOG=1'), 10, 'a watchdog ping')
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: hear('RELOADING=1'), 10, 'RELOADING=1')
        heard.clear()
        wait_for(lambda: hear('READY=1'), 120, 'READY=1 after the rolling restart')
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: hear('STOPPING=1'), 10, 'STOPPING=1')
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        listener.close()


def test_killing_the_main_process_takes_the_slots_with_it(tmp_path, names, workers):
    worker = workers(forward_app(tmp_path, names), extra=('-w', '2'))
    pids = worker.slot_pids(2)
    worker.signal(signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in pids), 10, 'the slots to die')


def test_a_stuck_agent_is_stopped_cold_after_the_graceful_timeout(tmp_path, names, workers,
                                                                kafka_bootstrap, admin):
    stuck = tmp_path / 'stuck'
    app = forward_app(tmp_path, names, body=f'pathlib.Path({str(stuck)!r}).touch(); '
                      'time.sleep(1000)', partitions=1, concurrency=1)
    worker = workers(app, extra=('--graceful-timeout', '2'))
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'], [(None, 1), (None, 2)])
    wait_for(stuck.exists, 30, 'the agent to be stuck on a record')
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert 2 < time.monotonic() - started < 15
    assert committed(admin, names['app'], names['source']) == {}


def test_a_second_interrupt_turns_a_warm_stop_cold(tmp_path, names, workers, kafka_bootstrap):
    stuck = tmp_path / 'stuck'
    app = forward_app(tmp_path, names, body=f'pathlib.Path({str(stuck)!r}).touch(); '
                      'time.sleep(1000)', partitions=1, concurrency=1)
    worker = workers(app)
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'], [(None, 1)])
    wait_for(stuck.exists, 30, 'the agent to be stuck on a record')
    worker.signal(signal.SIGINT)
    wait_for(lambda: 'warm shutdown' in worker.log(), 10, 'the warm shutdown')
    started = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait(10) == 0
    assert time.monotonic() - started < 3


def test_a_broken_deploy_is_refused_before_any_slot_stops(tmp_path, names, workers):
    pidfile = tmp_path / 'runner.pid'
    worker = workers(forward_app(tmp_path, names), extra=('-w', '2', '--pidfile', str(pidfile)))
    before = worker.slot_pids(2)
    wait_for(lambda: status(tmp_path, pidfile).get('state') == 'running', 60, 'ready slots')
    app = tmp_path / 'testapp.py'
    app.write_text(app.read_text() + '\nraise RuntimeError("half-deployed")\n')
    result = run_cli(['restart', '--pidfile', str(pidfile)], tmp_path)
    assert result.returncode == 1
    assert 'rolling restart refused, slots keep running' in result.stderr
    assert 'RuntimeError: half-deployed' in result.stderr
    assert worker.slot_pids(2) == before
    assert status(tmp_path, pidfile)['state'] == 'running'
    table = run_cli(['status', '--pidfile', str(pidfile)], tmp_path).stdout.splitlines()
    assert table[1].startswith('last deploy: rolling restart refused, slots keep running: ')
    assert 'half-deployed' in table[1]


def test_a_slot_whose_import_hangs_says_so_dumps_on_usr1_and_is_killed_in_time(
        tmp_path, names, workers):
    pidfile, config, hang = tmp_path / 'runner.pid', tmp_path / 'r.yaml', tmp_path / 'hang'
    config.write_text('import_timeout: 10\n')
    worker = workers(forward_app(tmp_path, names),
                     extra=('-w', '2', '--pidfile', str(pidfile), '-c', str(config)))
    old = worker.slot_pids(2)
    wait_for(lambda: status(tmp_path, pidfile).get('state') == 'running', 60, 'ready slots')
    app = tmp_path / 'testapp.py'
    good = app.read_text()
    app.write_text(f'import os, pathlib, time\nwhile pathlib.Path({str(hang)!r}).exists() and '
                   '"RUNNER_SLOT_PID" in os.environ:\n    time.sleep(0.1)\n' + good)
    hang.touch()
    os.kill(old[0], signal.SIGKILL)                 # restarted onto the app deployed now

    def loading():
        row = status(tmp_path, pidfile)['slots'][0]
        return row['pid'] not in (None, old[0]) and 'loading the app' in (row['reason'] or '')
    wait_for(loading, 30, 'slot 0 restarted and loading the app')
    new = status(tmp_path, pidfile)['slots'][0]['pid']
    table = run_cli(['status', '--pidfile', str(pidfile)], tmp_path).stdout
    assert 'loading the app (killed if not loaded within 10s: import_timeout)' in table
    worker.signal(signal.SIGUSR1)
    wait_for(lambda: f'end of stack dump of slot 0 loading the app pid {new}' in worker.log(),
             10, 'the stack dump of the slot loading the app')
    dump = worker.log().split(f'stack dump of slot 0 loading the app pid {new}')[1]
    assert 'testapp.py' in dump
    wait_for(lambda: f'slot 0 (pid {new}) did not load the app within 10s (import_timeout); '
             'killing it' in worker.log(), 30, 'the slot killed at the import timeout')
    hang.unlink()
    wait_for(lambda: status(tmp_path, pidfile).get('state') == 'running'
             and all(row['ready'] for row in status(tmp_path, pidfile)['slots']), 90,
             'slot 0 started again once the import no longer hangs')
    assert worker.slot_pids(2)[1] == old[1], worker.log()


def test_a_frozen_main_process_is_said_to_have_stopped_answering(tmp_path, names, workers):
    pidfile = tmp_path / 'runner.pid'
    worker = workers(forward_app(tmp_path, names), extra=('--pidfile', str(pidfile)))
    wait_for(lambda: status(tmp_path, pidfile).get('state') == 'running', 60, 'a ready slot')
    worker.signal(signal.SIGSTOP)
    try:
        frozen = wait_for(lambda: (result := run_cli(['status', '--pidfile', str(pidfile)],
                                                     tmp_path)).returncode == 4 and result,
                          30, 'status to say the main process stopped answering')
    finally:
        worker.signal(signal.SIGCONT)
    assert f'main pid {worker.proc.pid} stopped answering' in frozen.stdout
    wait_for(lambda: run_cli(['status', '--pidfile', str(pidfile)], tmp_path).returncode == 0,
             30, 'status to answer 0 again')


def test_a_deploy_that_cannot_start_leaves_every_old_slot_running(tmp_path, names, workers):
    pidfile = tmp_path / 'runner.pid'
    worker = workers(forward_app(tmp_path, names), extra=('-w', '3', '--pidfile', str(pidfile)))
    old = worker.split_between(3)
    wait_for(lambda: status(tmp_path, pidfile).get('state') == 'running', 60, 'ready slots')
    app = tmp_path / 'testapp.py'
    good = app.read_text()
    app.write_text('import os\nif "RUNNER_SLOT_PID" in os.environ:\n'
                   '    raise RuntimeError("only in slots")\n' + good)
    result = run_cli(['restart', '--pidfile', str(pidfile)], tmp_path)
    assert result.returncode == 1 and 'only in slots' in result.stderr
    assert 'the new slot 0 could not start' in result.stderr      # the smaller half first
    state = status(tmp_path, pidfile)
    assert 'only in slots' in state['restart_error']
    assert [s['state'] for s in state['slots']] == ['ready', 'ready', 'ready']
    assert [s['pid'] for s in state['slots']] == old
    app.write_text(good)
    fixed = run_cli(['restart', '--pidfile', str(pidfile)], tmp_path, timeout=300)
    assert fixed.returncode == 0, fixed.stderr
    after = status(tmp_path, pidfile)
    assert after['state'] == 'running' and after['restart_error'] is None
    assert not set(old) & set(worker.slot_pids(3))
    assert 'rolling restart: slots 0 then slots 1,2' in worker.log()
