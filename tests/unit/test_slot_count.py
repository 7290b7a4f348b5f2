"""How many slots a worker may have (``--workers-max``), and a fork that fails (a slot's,
a successor's, an app check's): one line, never a main process that dies.  The main process is driven with the fake slots of
``test_rolling``."""

import errno
import logging
import os

import pytest
from test_rolling import FakeProcess, Main

from runner import cli, platform
from runner.cli import load_options, parse
from runner.config import default_workers_max
from runner.errors import CannotFork, ConfigError, UsageError
from runner.main.rolling import Reload


def options(*argv, config=None):
    args = parse(['-A', 'proj', *argv, *(['-c', str(config)] if config else [])])
    return load_options(args)


def test_the_default_limit_is_four_slots_per_cpu_this_process_may_run_on():
    assert default_workers_max() == 4 * len(os.sched_getaffinity(0))
    assert options().workers_max == default_workers_max()


def test_more_workers_than_the_limit_are_refused_with_one_line(tmp_path):
    most = default_workers_max()
    with pytest.raises(UsageError, match=f'invalid workers 5000: at most {most} '
                                         r'\(4 per CPU; --workers-max N allows more\)'):
        options('-w', '5000', '-p', '0')
    config = tmp_path / 'c.yaml'
    config.write_text('workers: 5000\n')
    with pytest.raises(ConfigError, match=f'invalid workers 5000 in config file .*: at most '
                                          f'{most}'):
        options(config=config)
    assert options('-w', str(most)).workers == most


def test_workers_max_raises_or_lowers_the_limit(tmp_path):
    assert options('-w', '5000', '--workers-max', '5000').workers == 5000
    with pytest.raises(UsageError, match=r'invalid workers 3: at most 2 \(--workers-max\)'):
        options('-w', '3', '--workers-max', '2')
    config = tmp_path / 'c.yaml'
    config.write_text('workers: 3\nworkers_max: 2\n')
    with pytest.raises(ConfigError, match=r'at most 2 \(workers_max\)'):
        options(config=config)
    with pytest.raises(UsageError, match='invalid --workers-max'):
        options('--workers-max', '0')


@pytest.fixture
def main_of(monkeypatch):
    made = []

    def make(workers, workers_max=8):
        main = Main(monkeypatch, workers)
        main.supervisor.workers_max = workers_max
        made.append(main)
        return main
    yield make
    for main in made:
        main.forked = [process for process in main.forked if process.end]   # forks that failed
        main.close()


def test_ttin_beyond_the_limit_is_ignored_with_a_warning(main_of, caplog):
    main = main_of(2, workers_max=3)
    main.start()
    main.supervisor._on_ttin()
    main.supervisor._on_ttin()
    assert main.supervisor.workers == 3
    assert 'TTIN ignored: a worker has at most 3 slots (--workers-max)' in caplog.text


def failing_forks(monkeypatch, count):
    """The next ``count`` forks fail as fork() does when no process can be made."""
    failures = iter(range(count))
    start = FakeProcess.start

    def fork(process):
        if next(failures, None) is not None:
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        start(process)
    monkeypatch.setattr(FakeProcess, 'start', fork)


def test_a_failed_fork_is_one_line_and_the_slot_is_tried_again_after_its_backoff(
        main_of, monkeypatch, caplog):
    main = main_of(2)
    failing_forks(monkeypatch, 1)
    with caplog.at_level(logging.ERROR):
        main.step()
    assert sorted(main.supervisor.slots) == [1]
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line == ('slot 0: cannot fork it: Resource temporarily unavailable; '
                    'restarting it in 1s')
    assert [row['state'] for row in main.supervisor._rows()] == ['backoff', 'starting']
    main.step()
    assert sorted(main.supervisor.slots) == [1]      # its backoff is not over
    main.backoff_over(0)
    main.step()
    assert sorted(main.supervisor.slots) == [0, 1]


def test_a_successor_that_cannot_be_forked_stops_the_rolling_restart(main_of, monkeypatch):
    main = main_of(2)
    main.start()
    old = dict(main.supervisor.slots)
    failing_forks(monkeypatch, 1)
    main.hup()
    main.step()
    assert main.supervisor.restarts.plan is None and not main.supervisor.restarts.successors
    assert main.supervisor.restarts.error == ('rolling restart stopped: slot 0: cannot fork '
                                              'its successor: Resource temporarily unavailable')
    assert main.supervisor.slots == old


def no_fork(monkeypatch):
    """Every fork() fails as when no process can be made."""
    def fork():
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
    monkeypatch.setattr(os, 'fork', fork)


def test_an_app_check_that_cannot_be_forked_is_one_line_with_exit_71(monkeypatch):
    no_fork(monkeypatch)
    before = sorted(os.listdir('/proc/self/fd'))
    with pytest.raises(CannotFork) as raised:
        cli.check_app(options(), 5.0)
    assert str(raised.value) == ("cannot check app 'proj': no process can be forked: "
                                 'Resource temporarily unavailable')
    assert raised.value.exit_code == 71
    assert sorted(os.listdir('/proc/self/fd')) == before        # its pipe is closed


def test_a_rolling_restart_whose_app_check_cannot_be_forked_is_refused(main_of, monkeypatch):
    main = main_of(2)
    main.start()
    main.supervisor.restarts.reload = lambda: Reload(check=lambda: None, deploy=None)
    no_fork(monkeypatch)
    main.supervisor._on_hup()
    main.step()
    assert main.supervisor.restarts.error == ('rolling restart refused, slots keep running: '
                                              'the app check: no process can be forked: '
                                              'Resource temporarily unavailable')
    assert main.supervisor.restarts.check is None and len(main.supervisor.slots) == 2


def test_a_worker_that_cannot_fork_to_detach_says_so_in_one_line(monkeypatch):
    no_fork(monkeypatch)
    with pytest.raises(CannotFork, match='^no process can be forked: Resource temporarily '
                                         'unavailable$'):
        platform.detach()
