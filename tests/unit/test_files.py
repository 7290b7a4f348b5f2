"""Files the runner writes are its own: never written through a link another user
planted, and readable by their owner only."""

import os
import stat

import pytest

from runner import platform
from runner.errors import CannotCreate


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
