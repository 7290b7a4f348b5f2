"""A slot, as a subreaper, reaps the orphans it adopts, never its own children."""

import subprocess
import sys

from harness import REPO, runner_env

SLOT = '''
import os, subprocess, time
from runner import platform
os.setpgid(0, 0)
platform.become_subreaper()
own = subprocess.Popen(['sh', '-c', 'exit 3'])             # a child of its own, in its group
leader = subprocess.Popen(['sh', '-c', 'exit 4'], start_new_session=True)  # and in a session
orphan = int(subprocess.run(['setsid', 'sh', '-c', 'sleep 0.2 & echo $!'],   # a double fork:
                            capture_output=True, text=True).stdout)   # adopted once sh exits
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    platform.reap_adopted()
    children = platform.children(os.getpid())
    if orphan not in children and children.get(own.pid, ('',))[0] == 'Z' \\
            and children.get(leader.pid, ('',))[0] == 'Z':
        break
    time.sleep(0.05)
print(orphan not in children, own.wait(), leader.wait())
'''


def test_adopted_orphans_are_reaped_and_own_children_left_to_their_owner():
    result = subprocess.run([sys.executable, '-c', SLOT], cwd=REPO, env=runner_env(),
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ['True', '3', '4']
