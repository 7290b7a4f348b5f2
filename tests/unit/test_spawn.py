"""``runner.spawn``: what an agent starts dies with its slot, even by KILL, and is started
without running Python between fork and exec (``preexec_fn`` can deadlock a threaded
process)."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, runner_env, wait_for

from runner import platform

SLOT = '''
import threading, time
from runner import platform
threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()   # a threaded process
child = platform.spawn(['sleep', '1000'])
print(child.pid, flush=True)
time.sleep(1000)
'''


def alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as stat:
            return stat.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def test_what_a_slot_spawns_dies_when_the_slot_is_killed():
    slot = subprocess.Popen([sys.executable, '-c', SLOT], cwd=REPO, env=runner_env(),
                            stdout=subprocess.PIPE, text=True)
    try:
        child = int(slot.stdout.readline())
        wait_for(lambda: Path(f'/proc/{child}/cmdline').read_bytes().startswith(b'sleep'), 10,
                 'the child to run sleep')
        slot.send_signal(signal.SIGKILL)
        slot.wait(10)
        wait_for(lambda: not alive(child), 10, 'the spawned child to die with the slot')
    finally:
        slot.kill()
        slot.stdout.close()


def test_spawn_runs_no_python_between_fork_and_exec(monkeypatch):
    seen = {}

    class Popen:
        def __init__(self, args, **popen):
            seen.update(popen, args=args)
    monkeypatch.setattr(subprocess, 'Popen', Popen)
    platform.spawn(['sleep', '1'], cwd='/')
    assert seen.get('preexec_fn') is None and seen['cwd'] == '/'


def test_spawn_of_a_missing_program_raises_as_popen_does():
    with pytest.raises(FileNotFoundError):
        platform.spawn(['no-such-program-here'])
