"""A disk that fills up under a slot's table stores: one line and exit 74, the main process
starts the slot again with its backoff, and once there is room nothing has been lost."""

import collections
import re
import subprocess

import pytest
from apps import wait_for_counts
from harness import produce, run_cli, wait_for, write_app

PADDED_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6)
words = app.topic({source!r}, partitions=2)
counts = app.Table('counts', default=int)
pads = app.Table('pads', default=str)


@app.agent(words)
def count(stream):
    for word in stream:
        counts[word] += 1
        pads[word] = word * 4000            # fills a small disk quickly
'''


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs at ``tmp_path/disk`` (made roomy again with :func:`resize`)."""
    disk = tmp_path / 'disk'
    disk.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(disk)],
                             check=False, capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f'a small disk needs a tmpfs mount (root): {mounted.stderr.strip()}')
    yield disk
    subprocess.run(['umount', '-l', str(disk)], check=True)


def resize(disk, size):
    subprocess.run(['mount', '-o', f'remount,size={size}', str(disk)], check=True)


@pytest.mark.long
def test_a_full_disk_stops_the_slot_in_one_line_and_nothing_is_lost_once_there_is_room(
        tmp_path, names, workers, kafka_bootstrap, small_disk):
    worker = workers(write_app(tmp_path, PADDED_APP.format(**names)),
                     datadir=small_disk / 'data')
    worker.wait_ready()
    sent = [f'w{n % 200:03d}' for n in range(3000)]
    produce(kafka_bootstrap, names['source'], [(w, w) for w in sent])
    wait_for(lambda: worker.log().count(' with code 74') >= 6, 90,
             'the slot to fail on the full disk, then to fail to start five times')
    log = worker.log()
    exits = [line for line in log.splitlines() if ' with code 74' in line]
    assert all(re.search(r'restarting it in \d+s$', line) for line in exits), exits
    assert 'No space left on device' in log
    assert 'Traceback' not in log, log[-3000:]
    assert worker.proc.poll() is None               # the main process waits, with its backoff
    resize(small_disk, '256m')
    wait_for_counts(worker, collections.Counter(sent), timeout=90)
    assert 'Traceback' not in worker.log()


def fill(disk):
    """Write to ``disk`` until it is full."""
    with open(disk / 'filler', 'wb') as filler:
        try:
            while True:
                filler.write(b'x' * 65536)
                filler.flush()
        except OSError:
            pass


def test_starting_on_a_full_disk_says_what_cannot_be_written_in_one_line(
        tmp_path, names, workers, kafka_bootstrap, small_disk):
    app = write_app(tmp_path, PADDED_APP.format(**names))
    fill(small_disk)
    base = ['-A', app, '-b', kafka_bootstrap, '-p', '0']
    pidfile = run_cli([*base, '-D', str(tmp_path / 'd1'), '--pidfile', str(small_disk / 'pid')],
                      tmp_path)
    assert (pidfile.returncode, pidfile.stderr) == (
        74, f'runner: cannot write {small_disk / "pid"}: No space left on device\n')
    datadir = run_cli([*base, '-D', str(small_disk / 'data')], tmp_path)
    assert datadir.returncode == 74
    assert datadir.stderr.splitlines()[-1] == (
        f'runner: slot 0 could not start: cannot write {small_disk / "data/slot-0/runner.lock"}: '
        'No space left on device')
    assert 'Traceback' not in datadir.stderr
    worker = workers(app, extra=('--logfile', str(small_disk / 'log')))
    worker.wait_ready()                             # the log file is not the work
    said = worker.log().splitlines()
    lost = (f'runner: cannot write log file {small_disk / "log"}: No space left on device; '
            'log lines are lost until it can')
    assert said == [lost] * len(said)
    assert 1 <= len(said) <= 2                      # the main process, the slot
