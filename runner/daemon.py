"""Detaching from the terminal (``--detach``): the classic double fork."""

import os
import sys


def detach() -> None:
    """Continue in a grandchild that has no controlling terminal; the caller's process exits 0.

    The working directory is kept, since ``-A`` imports the app from it.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
