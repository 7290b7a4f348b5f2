"""The kafka-python workarounds are installed (their effect is tested in test_slot.py)."""

from types import SimpleNamespace

from kafka.consumer.fetcher import Fetcher
from kafka.coordinator.consumer import ConsumerCoordinator

import runner.kafka_fixes


def test_a_join_in_progress_is_always_finished():
    assert ConsumerCoordinator.need_rejoin(SimpleNamespace(rejoining=True)) is True


def test_the_fetcher_patch_is_installed_once():
    patched = Fetcher.fetch_records
    runner.kafka_fixes._forget_drained_records()
    assert Fetcher.fetch_records is patched and patched.runner_fix
