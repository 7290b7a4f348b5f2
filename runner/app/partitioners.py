"""Where a keyed record lands.

A table's state lives in the partition its key's records were sent to, so a
lookup must place a key as its producer did.  ``murmur2`` is the default of
Java clients and kafka-python; ``crc32`` is librdkafka's (confluent-kafka,
kcat, Go's confluent client: ``consistent_random``).  A callable
``partitioner(key_bytes, partition_count) -> partition`` may be given instead.
"""

import functools
import zlib
from collections.abc import Callable

from kafka.partitioner.default import murmur2

from ..errors import ConfigError

Partitioner = Callable[[bytes, int], int]


#: Keys whose murmur2 hash is remembered (kafka-python's murmur2 is pure Python: a keyed
#: send or table lookup would hash the same keys again and again).
HASHED_KEYS = 16384


@functools.lru_cache(maxsize=HASHED_KEYS)
def _murmur2_hash(key: bytes) -> int:
    return murmur2(key) & 0x7fffffff


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Java clients and kafka-python give ``key`` among ``partitions``."""
    try:
        return _murmur2_hash(key) % partitions
    except TypeError:                           # an unhashable key (a bytearray, say)
        return (murmur2(key) & 0x7fffffff) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    """The partition librdkafka's ``consistent_random`` gives a non-empty ``key``."""
    return zlib.crc32(key) % partitions


PARTITIONERS: dict[str, Partitioner] = {'murmur2': murmur2_partition, 'crc32': crc32_partition}


def resolve(spec: str | Partitioner, what: str) -> Partitioner:
    """The partitioner named ``spec`` (or ``spec`` itself if callable); ConfigError otherwise."""
    if callable(spec):
        return spec
    try:
        return PARTITIONERS[spec]
    except (KeyError, TypeError):
        raise ConfigError(f'{what}: unknown partitioner {spec!r} (choose from '
                          f'{", ".join(PARTITIONERS)}, or give a function)') from None
