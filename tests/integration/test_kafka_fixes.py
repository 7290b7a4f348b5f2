"""Each kafka-python bug that runner/kafka/fixes.py works around, reproduced on the real
broker: the scenario goes wrong on plain kafka-python and right once patched."""

import json
import subprocess
import sys
from pathlib import Path

from harness import runner_env

SCENARIOS = Path(__file__).with_name('kafka_bugs.py')


def run(scenario, bootstrap, topic, patched):
    args = [sys.executable, str(SCENARIOS), scenario, bootstrap, topic]
    result = subprocess.run(args + (['patched'] if patched else []), env=runner_env(),
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_a_resumed_partition_with_parked_records_is_fetched_again(kafka_bootstrap, topic_name):
    plain = run('parked', kafka_bootstrap, f'{topic_name}-plain', patched=False)
    assert plain == {'paused_partition_records': 5, 'other_records': 50}
    patched = run('parked', kafka_bootstrap, f'{topic_name}-patched', patched=True)
    assert patched == {'paused_partition_records': 50, 'other_records': 50}


def test_a_join_interrupted_by_a_poll_timeout_is_finished(kafka_bootstrap, topic_name):
    assert run('join', kafka_bootstrap, f'{topic_name}-plain', patched=False) == {
        'assigned': [0]}
    assert run('join', kafka_bootstrap, f'{topic_name}-patched', patched=True) == {
        'assigned': [0, 1]}



def test_a_fenced_member_is_told_at_its_next_poll(kafka_bootstrap, topic_name):
    assert run('fenced', kafka_bootstrap, f'{topic_name}-plain', patched=False) == {
        'raised': None, 'records': 10}
    assert run('fenced', kafka_bootstrap, f'{topic_name}-patched', patched=True) == {
        'raised': 'FencedInstanceIdError', 'records': 0}
