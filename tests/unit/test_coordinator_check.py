"""``poll()`` asks kafka-python's IO thread about the group coordinator only when it is
not known and connected (runner.kafka.fixes); the answer is the same."""

from types import SimpleNamespace

import pytest
from kafka.coordinator.base import BaseCoordinator

from runner.kafka import fixes


class IOThread:
    """Stands for kafka-python's IO loop: records what it is asked to run."""

    def __init__(self) -> None:
        self.ran: list = []

    def run(self, coroutine, *args):
        self.ran.append((coroutine, args))
        return 'answered by the IO thread'


def coordinator(node, connected):
    return SimpleNamespace(coordinator_id=node, _net=IOThread(),
                           _client=SimpleNamespace(connected=lambda n: connected and n == node),
                           ensure_coordinator_ready_async='lookup')


def test_a_known_connected_coordinator_is_ready_without_the_io_thread():
    fixes.install()
    known = coordinator(3, connected=True)
    assert BaseCoordinator.ensure_coordinator_ready(known, timeout_ms=100) is True
    assert known._net.ran == []


@pytest.mark.parametrize('node, connected', [(None, False), (3, False)])
def test_an_unknown_or_disconnected_coordinator_is_looked_for_on_the_io_thread(node, connected):
    fixes.install()
    unknown = coordinator(node, connected)
    assert BaseCoordinator.ensure_coordinator_ready(unknown, timeout_ms=100) == \
        'answered by the IO thread'
    assert unknown._net.ran == [('lookup', (100,))]
