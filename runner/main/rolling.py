"""Rolling restarts: one half of the slots at a time, each slot replaced hot.

Each slot of a group is replaced by a *successor*: a new slot process started
beside it, which imports the app (as deployed now) and prepares what it can
while the old slot still works, then waits for the old slot's data directory.
When every successor of the group is prepared, the old slots stop for them
(warm, without leaving the consumer group); each successor takes over its
predecessor's data directory, web port and group identity, so the group does
not rebalance and its partitions pause only for the handover itself.  Once
the group is ready, the next one follows.

With an odd number of slots the first group is the smaller half: while it
restarts, most web servers answer, and a deploy that cannot start (its
successors fail before they are prepared, while the old slots go on) is
found out on the fewest slots.
"""

import logging
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)


class RollingRestart:
    """The steps of one rolling restart, advanced by the main loop.

    ``phase`` is ``prepare`` (start a successor beside each slot of the group),
    ``handover`` (once all are prepared, the old slots stop for them) or
    ``ready`` (wait until the slots of the group are ready).

    Only the slots that got a successor are waited for and handed over: a slot
    of the group that was not running when its successor would have started (it
    crashed and waits for its restart), or whose successor was dismissed, is
    started anew as usual, running the app as deployed now.
    """

    def __init__(self, indexes: Iterable[int]) -> None:
        indexes = sorted(indexes)
        half = len(indexes) // 2
        self.groups = [group for group in (indexes[:half], indexes[half:]) if group]
        self.phase = 'prepare'
        #: The slots of the current group that are being replaced by a successor.
        self.replacing: set[int] = set()

    def describe(self) -> str:
        return ' then '.join('slots ' + ','.join(map(str, group)) for group in self.groups)

    def advance(self, prepared: set[int], ready: set[int], workers: int,
                prepare: Callable[[int], bool], hand_over: Callable[[int], None]) -> bool:
        """One step; True once every group has been replaced and is ready.  ``prepare``
        starts a successor beside a slot and says whether it did."""
        group = {index for index in self.groups[0] if index < workers}
        if self.phase == 'prepare':
            self.replacing = {index for index in sorted(group) if prepare(index)}
            self.phase = 'handover'
        elif self.phase == 'handover' and self.replacing & group <= prepared:
            for index in sorted(self.replacing & group):
                hand_over(index)
            self.phase = 'ready'
        elif self.phase == 'ready' and group <= ready:
            self.groups.pop(0)
            self.replacing = set()
            self.phase = 'prepare'
        return not self.groups

    def forget(self, index: int) -> None:
        """Slot ``index`` is no longer replaced by a successor: it is started anew instead."""
        self.replacing.discard(index)
