"""Rolling restarts: stop half of the slots, start them again, wait until they are ready,
then the other half — so some slots always answer, as the reference guide recommends.

With an odd number of slots the first group is the smaller half: while it restarts,
most slots answer, and a deploy that cannot start takes down only that group."""

import logging
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)


class RollingRestart:
    """The steps of one rolling restart, advanced by the main loop.

    ``phase`` is ``stop`` (ask the group to stop), ``exit`` (wait until the
    group has exited) or ``ready`` (wait until the restarted group is ready).
    While a group is stopping, its slots are ``held``: not respawned.
    """

    def __init__(self, indexes: Iterable[int]) -> None:
        indexes = sorted(indexes)
        half = len(indexes) // 2
        self.groups = [group for group in (indexes[:half], indexes[half:]) if group]
        self.phase = 'stop'
        self.held: set[int] = set()

    def describe(self) -> str:
        return ' then '.join('slots ' + ','.join(map(str, group)) for group in self.groups)

    def advance(self, running: set[int], ready: set[int], workers: int,
                retire: Callable[[int], None]) -> bool:
        """One step; True once every group has been restarted and is ready."""
        group = [index for index in self.groups[0] if index < workers]
        if self.phase == 'stop':
            self.held.update(group)
            for index in group:
                if index in running:
                    retire(index)
            self.phase = 'exit'
        elif self.phase == 'exit' and not running & set(group):
            self.held.difference_update(group)
            self.phase = 'ready'
        elif self.phase == 'ready' and set(group) <= ready:
            self.groups.pop(0)
            self.phase = 'stop'
        return not self.groups
