"""What a slot handing over (a rolling restart) leaves its successor in the data directory.

The successor starts serving its web port before its first assignment; with the
owners of every table partition as its predecessor last knew them, it forwards
lookups of the partitions that do not move at once, instead of answering 503
until the group has told it.  The file is read once and removed, so only the
successor that takes over right after the handover uses it; the owners are
replaced by the group's at the successor's first assignment.
"""

import contextlib
import json
import logging
from pathlib import Path

from .. import platform
from ..errors import RunnerError

log = logging.getLogger(__name__)

OWNERS_FILE = 'handover-owners.json'

Owners = dict[str, list[str | None]]


def leave_owners(datadir: Path, owners: Owners) -> None:
    """Write ``owners`` (changelog → the web address of each partition's owner) for the
    successor; a file that cannot be written only costs it those answers."""
    try:
        platform.replace_file(datadir / OWNERS_FILE, json.dumps(owners))
    except RunnerError as exc:
        log.warning('the successor will not know the owners of table partitions: %s', exc)


def take_owners(datadir: Path) -> Owners:
    """The owners a predecessor left (empty if none), and the file removed."""
    path = datadir / OWNERS_FILE
    try:
        text = platform.read_own(path, 'handover file')
        owners = json.loads(text) if text else {}
    except (RunnerError, ValueError):
        owners = {}
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    return owners if isinstance(owners, dict) else {}
