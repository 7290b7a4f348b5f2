"""Files the runner writes are its own: never written through a link another user
planted, and readable by their owner only."""

import logging
import os
import stat

import pytest
from harness import run_cli

from runner import cli, logs, platform
from runner.config import Options
from runner.errors import CannotCreate
from runner.main import control


def planted(tmp_path, name):
    """A symbolic link ``name`` to a file of someone else's."""
    target = tmp_path / 'theirs'
    target.write_text('precious\n')
    (tmp_path / name).symlink_to(target)
    return target


def test_a_pidfile_that_is_a_link_is_refused(tmp_path):
    target = planted(tmp_path, 'w.pid')
    with pytest.raises(CannotCreate, match='w.pid: it is a symbolic link'):
        platform.Pidfile(tmp_path / 'w.pid').acquire()
    assert target.read_text() == 'precious\n'


def test_a_lock_file_that_is_a_link_is_refused(tmp_path):
    target = planted(tmp_path, platform.LOCK_NAME)
    with pytest.raises(CannotCreate, match='it is a symbolic link'):
        platform.DirLock(tmp_path).acquire()
    assert target.read_text() == 'precious\n'


def test_a_replaced_file_replaces_a_link_rather_than_follow_it(tmp_path):
    target = planted(tmp_path, 'status.json')
    platform.replace_file(tmp_path / 'status.json', '{}\n')
    assert target.read_text() == 'precious\n'
    assert not (tmp_path / 'status.json').is_symlink()
    assert (tmp_path / 'status.json').read_text() == '{}\n'


def test_files_and_directories_are_the_owners_only(tmp_path):
    previous = os.umask(0o022)
    try:
        platform.private_files()
        platform.replace_file(tmp_path / 'status.json', '{}\n')
        pidfile = platform.Pidfile(tmp_path / 'run' / 'w.pid')
        pidfile.acquire()
        pidfile.release()
        (tmp_path / 'data').mkdir()
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / 'status.json').stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / 'run').stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / 'data').stat().st_mode) == 0o700


def test_a_log_file_that_is_a_link_is_refused(tmp_path):
    target = planted(tmp_path, 'x.log')
    try:
        with pytest.raises(CannotCreate, match='x.log: it is a symbolic link'):
            logs.setup('info', str(tmp_path / 'x.log'), 'main')
        logging.getLogger('runner').error('written nowhere near the link')
    finally:
        logs.setup('info', None, 'test')
    assert target.read_text() == 'precious\n'


def test_a_detached_worker_checks_its_log_file_without_following_a_link(tmp_path):
    target = planted(tmp_path, 'x.log')
    options = Options(app='proj', pidfile=str(tmp_path / 'w.pid'))
    with pytest.raises(CannotCreate, match='x.log: it is a symbolic link'):
        cli._check_detachable(options, str(tmp_path / 'x.log'))
    assert target.read_text() == 'precious\n'


def test_an_identity_file_that_is_a_link_is_refused(tmp_path):
    target = tmp_path / 'theirs'
    target.write_text('0123456789abcdef0123456789abcdef\n')
    (tmp_path / 'identity').symlink_to(target)
    with pytest.raises(CannotCreate, match='identity: it is a symbolic link'):
        platform.stable_identity(tmp_path)


def test_a_pidfile_read_through_a_link_is_refused(tmp_path):
    planted(tmp_path, 'w.pid')
    with pytest.raises(CannotCreate, match='^cannot use pidfile .*w.pid: it is a symbolic link$'):
        platform.running_pid(tmp_path / 'w.pid')


def test_a_status_file_read_through_a_link_is_refused(tmp_path):
    pidfile = platform.Pidfile(tmp_path / 'w.pid')
    pidfile.acquire()
    try:
        planted(tmp_path, 'w.pid.json')
        with pytest.raises(CannotCreate, match='^cannot use status file .*w.pid.json: it is a '
                                               'symbolic link$'):
            control.read_status(str(tmp_path / 'w.pid'))
    finally:
        pidfile.release()


def test_status_through_a_linked_pidfile_says_so_in_one_line_with_73(tmp_path):
    planted(tmp_path, 'w.pid')
    result = run_cli(['status', '--pidfile', 'w.pid'], tmp_path)
    assert result.returncode == 73
    assert result.stderr == 'runner: cannot use pidfile w.pid: it is a symbolic link\n'
