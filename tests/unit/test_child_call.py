"""A function run in a throwaway child: its answer, its errors, a deadline, no lock of
the parent's, and death with the parent."""

import os
import select
import signal
import subprocess
import sys
import time

import pytest
from harness import REPO, runner_env, wait_for

from runner import platform
from runner.errors import ConfigError


def answer():
    return {'name': 'app'}


def fail():
    raise ConfigError('cannot load app: broken')


def crash():
    raise KeyError('x')


def hang():
    time.sleep(1000)


def gone(pid):
    try:
        with open(f'/proc/{pid}/stat') as stat:
            return stat.read().rsplit(')', 1)[1].split()[0] == 'Z'
    except FileNotFoundError:
        return True


def test_the_answer_of_the_child_comes_back():
    assert platform.call_in_child(answer, 30) == {'name': 'app'}


def test_an_error_in_the_child_comes_back_with_its_exit_code():
    with pytest.raises(platform.ChildFailed) as failed:
        platform.call_in_child(fail, 30)
    assert (str(failed.value), failed.value.code) == ('cannot load app: broken', 78)
    with pytest.raises(platform.ChildFailed) as failed:
        platform.call_in_child(crash, 30)
    assert (str(failed.value), failed.value.code) == ("KeyError: 'x'", 70)


def test_a_child_past_its_deadline_is_killed():
    with pytest.raises(platform.ChildFailed) as failed:
        platform.call_in_child(hang, 0.5)
    assert str(failed.value) == 'did not finish within 0.5s' and failed.value.code is None
    call = platform.ChildCall(hang, 0.5)
    pid = call.pid
    assert not readable(call.fd)
    call.cancel()
    wait_for(lambda: gone(pid), 10, 'the cancelled child to die')


def readable(fd):
    return select.select([fd], [], [], 0.2)[0]


def test_a_child_that_dies_says_how():
    call = platform.ChildCall(hang, 30)
    os.kill(call.pid, signal.SIGKILL)
    wait_for(lambda: readable(call.fd), 10, 'the child to die')
    with pytest.raises(platform.ChildFailed, match='was killed by signal 9 without answering'):
        call.result()


def test_the_child_does_not_hold_the_parents_pidfile_lock(tmp_path):
    pidfile = platform.Pidfile(tmp_path / 'r.pid')
    pidfile.acquire()
    call = platform.ChildCall(hang, 30, close=[pidfile.fd])
    try:
        os.close(pidfile.fd)                       # as when the parent is killed
        wait_for(lambda: platform.running_pid(pidfile.path) is None, 5,
                 'the lock to be free while the child runs')
        assert not gone(call.pid)
    finally:
        call.cancel()


CHILD_OF_A_KILLED_PARENT = '''
import time
from runner import platform
call = platform.ChildCall(lambda: time.sleep(1000), 300)
print(call.pid, flush=True)
time.sleep(1000)
'''


def test_the_child_dies_with_its_parent():
    parent = subprocess.Popen([sys.executable, '-c', CHILD_OF_A_KILLED_PARENT], cwd=REPO,
                              env=runner_env(), stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.kill()
        parent.wait(10)
        wait_for(lambda: gone(child), 10, 'the child to die with its parent')
    finally:
        parent.kill()
        parent.stdout.close()
