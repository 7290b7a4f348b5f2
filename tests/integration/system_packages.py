"""Programs the integration tests take from Debian's packages (Prometheus, Chromium):
installed when missing, or the test is skipped with the reason."""

import os
import shutil
import subprocess

import pytest

#: apt-get's wait for the package manager's lock (other tests may install at the same time).
APT_OPTIONS = ('-o', 'DPkg::Lock::Timeout=600', '-o', 'APT::Get::Assume-Yes=true')


def debian_program(command: str, *packages: str) -> str:
    """The path of ``command``; when it is missing, Debian's ``packages`` (by default the
    one named like it) are installed (as root: ``apt-get update``, then ``apt-get
    install``).  Where they cannot be, the test is skipped with the reason."""
    package = ' '.join(packages or (command,))
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip(f'{command} is not installed, and installing it (apt-get install '
                    f'{package}) needs root')
    if shutil.which('apt-get') is None:
        pytest.skip(f'{command} is not installed, and there is no apt-get to install it')
    result = None
    for step in (['update'], ['install', '--no-install-recommends', *package.split()]):
        result = subprocess.run(['apt-get', *APT_OPTIONS, *step], capture_output=True, text=True,
                                env={**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'},
                                timeout=900, check=False)
    found = shutil.which(command)
    if not found:
        reason = (result.stderr.strip().splitlines() or ['no output'])[-1]
        pytest.skip(f'{command} cannot be installed (apt-get install {package}): {reason}')
    return found
