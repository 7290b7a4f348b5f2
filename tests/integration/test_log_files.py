"""Log files against the real logrotate: one file per slot (``--logfile`` with ``%i``),
rotated with the shipped ``contrib/logrotate/runner`` (no ``copytruncate``, no signal),
after which every process writes a file of its own anew."""

import grp
import os
import pwd
import signal
import subprocess

from apps import count_app
from harness import REPO, debian_command, wait_for

ROTATED_DIRECTORY = '/var/log/runner'


def logrotate_config(tmp_path, logs):
    """The shipped example, for ``logs`` instead of /var/log/runner, as this user."""
    owner = f'{pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}'
    text = (REPO / 'contrib' / 'logrotate' / 'runner').read_text()
    directives = [line.split()[0] for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith('#')]
    assert ROTATED_DIRECTORY in text and 'copytruncate' not in directives
    path = tmp_path / 'logrotate.conf'
    path.write_text(text.replace(ROTATED_DIRECTORY, str(logs)).replace('runner runner', owner))
    return path


def test_logrotate_moves_every_processs_file_and_each_writes_a_new_one(tmp_path, names,
                                                                         workers):
    logrotate = debian_command('logrotate')
    logs = tmp_path / 'logs'
    logs.mkdir(mode=0o700)
    worker = workers(count_app(tmp_path, names),
                     extra=('-w', '2', '--logfile', str(logs / 'w-%i.log')))
    worker.split_between(2)
    files = ['w-main.log', 'w-0.log', 'w-1.log']
    rotated = subprocess.run([logrotate, '--force', '--state', str(tmp_path / 'state'),
                              str(logrotate_config(tmp_path, logs))],
                             capture_output=True, text=True, check=False)
    assert rotated.returncode == 0, rotated.stderr
    assert sorted(path.name for path in logs.iterdir()) == sorted(
        [*files, *(f'{name}.1' for name in files)])        # delaycompress: not yet
    worker.signal(signal.SIGUSR1)           # every process logs its stacks
    def written_anew():
        return all((logs / name).exists() and '--- stack dump of' in (logs / name).read_text()
                   for name in files)
    wait_for(written_anew, 30, 'every process to write its stack dump into a new file')
    for name in files:
        old = (logs / f'{name}.1').read_text()
        assert old and '--- stack dump of' not in old
        assert oct((logs / name).stat().st_mode & 0o777) == oct(0o600)
    assert worker.stop()[0] == 0
