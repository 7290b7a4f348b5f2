"""Records per second over the last minute, from counts sampled once a second; the last
records an agent's error policy took off the normal path."""

from types import SimpleNamespace

from kafka import TopicPartition

from runner.runtime.policy import RECENT_KEPT, ErrorPolicy
from runner.runtime.throughput import Throughput

TP = TopicPartition('in', 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_is_over_the_last_minute_from_samples_a_second_apart():
    clock, counts = Clock(), {TP: 0}
    throughput = Throughput(lambda: dict(counts), clock=clock)
    throughput.sample()
    assert throughput.rates() == {}                 # one sample: no rate yet
    for _ in range(120):                            # 10 records/s for 30 s...
        clock.now += 0.25
        counts[TP] += 2.5
        throughput.sample()                         # ...sampled four times a second
    assert throughput.rates() == {TP: 10.0}
    for _ in range(30):                             # then 30 s without a record
        clock.now += 1.0
        throughput.sample()
    assert 4.0 < throughput.rates()[TP] < 6.0       # half of the minute still counted
    for _ in range(31):
        clock.now += 1.0
        throughput.sample()
    assert throughput.rates() == {TP: 0.0}


def test_a_partition_new_since_the_window_began_counts_from_zero():
    clock, counts = Clock(), {}
    throughput = Throughput(lambda: dict(counts), clock=clock)
    throughput.sample()
    clock.now += 4.0
    counts[TP] = 20
    throughput.sample()
    assert throughput.rates() == {TP: 5.0}


def test_an_agent_remembers_its_last_records_set_aside_and_tried_again():
    agent = SimpleNamespace(name='count', on_error='skip', retries=3)
    policy = ErrorPolicy(agent)
    record = SimpleNamespace(topic='in', partition=1, offset=7)
    policy.retried(record, ValueError('bad <key>'), 1)
    for _ in range(RECENT_KEPT):
        policy.set_aside(None, record, KeyError('k'), 'raised')
    assert len(policy.recent) == RECENT_KEPT and policy.counts['skipped'] == RECENT_KEPT
    last = policy.recent[-1]
    assert (last['agent'], last['record'], last['action']) == ('count', 'in[1]@7', 'skipped')
    assert last['error'] == "raised: KeyError: 'k'"
