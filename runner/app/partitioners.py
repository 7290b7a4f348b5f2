"""Where a keyed record lands: the partitioner of Java clients and kafka-python."""

from kafka.partitioner.default import murmur2


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7fffffff) % partitions
