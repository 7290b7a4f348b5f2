"""How fast a slot processes records lately, for the status page and ``runner status``.

Nothing here is touched per record: the slot's main thread samples the counts
its streams keep anyway (the ones ``runner_records_processed_total`` exports)
once a second, and the rates are worked out from the samples when asked.
"""

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from kafka import TopicPartition

#: Records per second are averaged over this long (seconds).
RATE_WINDOW = 60.0
#: The counts are sampled at most this often (seconds).
SAMPLE_EVERY = 1.0

Counts = dict[TopicPartition, int]


class Throughput:
    """Records processed per second over the last :data:`RATE_WINDOW` seconds, per
    partition, from ``counts()`` (records processed so far, per partition).  A record
    read by two agents counts twice, as in the metrics."""

    def __init__(self, counts: Callable[[], Counts], window: float = RATE_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._counts = counts
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        #: (when, counts), oldest first: the first is the newest at least a window old.
        self._samples: deque[tuple[float, Counts]] = deque()

    def sample(self) -> bool:
        """Take the counts, if the last sample is :data:`SAMPLE_EVERY` old (the slot's main
        thread calls this on every round); whether it did."""
        now = self._clock()
        with self._lock:
            if self._samples and now - self._samples[-1][0] < SAMPLE_EVERY:
                return False
        counts = self._counts()
        with self._lock:
            self._samples.append((now, counts))
            while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
                self._samples.popleft()
        return True

    def rates(self) -> dict[TopicPartition, float]:
        """Records per second of every partition counted since the window began (empty
        until two samples were taken)."""
        with self._lock:
            if len(self._samples) < 2:
                return {}
            (then, before), (now, after) = self._samples[0], self._samples[-1]
        return {tp: (count - before.get(tp, 0)) / (now - then) for tp, count in after.items()}


def summed(counts: Iterable[dict[Any, int]]) -> dict[Any, int]:
    """The counts of several dicts added up by key."""
    total: dict[Any, int] = {}
    for each in counts:
        for key, count in each.items():
            total[key] = total.get(key, 0) + count
    return total
