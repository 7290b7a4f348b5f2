"""Talking to the cluster before work starts: reachability and topic creation."""

import contextlib
import logging
from collections.abc import Iterable, Iterator

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from .errors import BrokerUnavailable, ConfigError
from .topics import Topic

log = logging.getLogger(__name__)


def connect(bootstrap_servers: list[str], timeout: float, client_id: str) -> KafkaAdminClient:
    """An admin client, or BrokerUnavailable if no broker answers within ``timeout`` seconds.

    kafka-python's own complaints about each failed attempt are muted: the one
    line this raises says what went wrong.
    """
    try:
        with _quiet('kafka'):
            return KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id=client_id,
                                    bootstrap_timeout_ms=int(timeout * 1000),
                                    request_timeout_ms=int(max(timeout, 5) * 1000))
    except KafkaError as exc:
        servers = ','.join(bootstrap_servers)
        raise BrokerUnavailable(
            f'cannot reach Kafka at {servers} within {timeout:g}s ({exc})') from None


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    if not logger.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def partition_counts(admin: KafkaAdminClient, names: Iterable[str]) -> dict[str, int]:
    """Partition count of each named topic that exists."""
    counts = {}
    for info in admin.describe_topics(sorted(set(names))):
        if info.get('error_code', 0) == 0 and info.get('partitions'):
            counts[info['name']] = len(info['partitions'])
    return counts


def ensure_topics(admin: KafkaAdminClient, topics: Iterable[Topic], default_partitions: int,
                  replication_factor: int) -> dict[str, int]:
    """Create missing topics and check declared partition counts; returns every count."""
    topics = {topic.name: topic for topic in topics}
    existing = partition_counts(admin, topics)
    for name, count in existing.items():
        declared = topics[name].partitions
        if declared is not None and declared != count:
            raise ConfigError(f'topic {name!r} has {count} partitions but the app declares '
                              f'{declared}; change the declaration or the topic')
    missing = {name: topic for name, topic in topics.items() if name not in existing}
    for name, topic in missing.items():
        partitions = topic.partitions or default_partitions
        _create(admin, name, partitions, replication_factor, topic.config)
        existing[name] = partitions
    if missing:
        admin.wait_for_topics(list(missing), timeout_ms=30000)
    return existing


def _create(admin: KafkaAdminClient, name: str, partitions: int, replication_factor: int,
            config: dict[str, str]) -> None:
    spec = {'num_partitions': partitions, 'replication_factor': replication_factor,
            'configs': config}
    try:
        admin.create_topics({name: spec})
        log.info('created topic %s with %d partitions', name, partitions)
    except TopicAlreadyExistsError:
        log.debug('topic %s was created by another worker meanwhile', name)
