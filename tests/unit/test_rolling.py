"""Rolling restarts: one half of the slots at a time, each half ready before the next."""

from runner.main.rolling import RollingRestart


def drive(restart, running, ready, workers, retired):
    return restart.advance(running, ready, workers, retired.append)


def test_halves_are_stopped_restarted_and_waited_for_in_turn():
    restart = RollingRestart(range(4))
    assert restart.groups == [[0, 1], [2, 3]]
    retired: list[int] = []
    running = {0, 1, 2, 3}
    assert not drive(restart, running, running, 4, retired)
    assert retired == [0, 1] and restart.held == {0, 1}      # not respawned meanwhile
    assert not drive(restart, {0, 2, 3}, set(), 4, retired)  # slot 0 still exiting
    assert not drive(restart, {2, 3}, set(), 4, retired)
    assert restart.held == set()                             # may be started again
    assert not drive(restart, {0, 1, 2, 3}, {2, 3}, 4, retired)   # not ready yet
    assert not drive(restart, {0, 1, 2, 3}, {0, 1, 2, 3}, 4, retired)
    assert not drive(restart, {0, 1, 2, 3}, {0, 1, 2, 3}, 4, retired)
    assert retired == [0, 1, 2, 3]
    assert not drive(restart, {0, 1}, set(), 4, retired)
    assert drive(restart, {0, 1, 2, 3}, {0, 1, 2, 3}, 4, retired)     # done


def test_with_an_odd_count_the_first_group_is_the_smaller_half():
    assert RollingRestart(range(3)).groups == [[0], [1, 2]]
    assert RollingRestart(range(5)).groups == [[0, 1], [2, 3, 4]]


def test_a_single_slot_is_one_group():
    restart = RollingRestart([0])
    assert restart.groups == [[0]] and restart.describe() == 'slots 0'


def test_slots_removed_meanwhile_are_not_waited_for():
    restart = RollingRestart(range(2))
    retired: list[int] = []
    drive(restart, {0, 1}, {0, 1}, 2, retired)
    drive(restart, {1}, set(), 2, retired)
    drive(restart, {0, 1}, {0, 1}, 2, retired)
    assert not drive(restart, {0, 1}, {0, 1}, 1, retired)    # TTOU: slot 1 is gone
    assert retired == [0] and restart.groups == [[1]]
    assert not drive(restart, {0}, {0}, 1, retired)
    assert drive(restart, {0}, {0}, 1, retired)
