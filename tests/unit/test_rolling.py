"""Rolling restarts: one half of the slots at a time, each slot replaced by a successor
prepared beside it before it stops."""

from runner.main.rolling import RollingRestart


class Steps:
    """Records what a restart asks of the main process."""

    def __init__(self):
        self.done: list[tuple[str, int]] = []

    def prepare(self, index):
        self.done.append(('prepare', index))

    def hand_over(self, index):
        self.done.append(('hand over', index))


def test_halves_are_prepared_handed_over_and_waited_for_in_turn():
    restart, steps = RollingRestart(range(4)), Steps()
    assert restart.groups == [[0, 1], [2, 3]]

    def step(prepared=(), ready=(), workers=4):
        return restart.advance(set(prepared), set(ready), workers, steps.prepare,
                               steps.hand_over)
    assert not step()
    assert steps.done == [('prepare', 0), ('prepare', 1)]
    assert not step(prepared={0})                     # slot 1's successor not yet prepared
    assert not step(prepared={0, 1})
    assert steps.done[2:] == [('hand over', 0), ('hand over', 1)]
    assert not step(ready={2, 3})                      # the first group is not ready yet
    assert not step(ready={0, 1, 2, 3})
    assert not step()
    assert steps.done[4:] == [('prepare', 2), ('prepare', 3)]
    assert not step(prepared={2, 3})
    assert step(ready={0, 1, 2, 3})


def test_an_odd_count_restarts_the_smaller_half_first():
    assert RollingRestart(range(5)).groups == [[0, 1], [2, 3, 4]]
    assert RollingRestart([0]).groups == [[0]] and RollingRestart([0]).describe() == 'slots 0'


def test_slots_removed_meanwhile_are_not_waited_for():
    restart, steps = RollingRestart(range(2)), Steps()
    restart.advance(set(), set(), 2, steps.prepare, steps.hand_over)
    restart.advance({0}, set(), 2, steps.prepare, steps.hand_over)
    restart.advance(set(), {0, 1}, 2, steps.prepare, steps.hand_over)
    assert not restart.advance(set(), {0}, 1, steps.prepare, steps.hand_over)   # TTOU: 1 gone
    assert not restart.advance(set(), {0}, 1, steps.prepare, steps.hand_over)
    assert restart.advance(set(), {0}, 1, steps.prepare, steps.hand_over)
    assert steps.done == [('prepare', 0), ('hand over', 0)]
