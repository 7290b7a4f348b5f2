"""Talking to the cluster before work starts: reachability, partition counts, topic creation."""

import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import MemberToRemove, OffsetSpec
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ..config import split_host_port
from ..errors import AuthenticationFailed, BrokerUnavailable

log = logging.getLogger(__name__)
T = TypeVar('T')


def connect(connection: dict[str, Any], timeout: float, client_id: str) -> KafkaAdminClient:
    """An admin client (``connection``: :meth:`runner.config.Settings.kafka_client`), or
    BrokerUnavailable if no broker answers within ``timeout`` seconds, or
    AuthenticationFailed if one listens but does not let this client in.

    kafka-python's own complaints about each failed attempt are muted: the one
    line this raises says what went wrong.
    """
    return connected(lambda: KafkaAdminClient(**connection, client_id=client_id,
                                              bootstrap_timeout_ms=int(timeout * 1000),
                                              request_timeout_ms=int(max(timeout, 5) * 1000)),
                     connection, timeout)


def connected(make: Callable[[], T], connection: dict[str, Any], timeout: float) -> T:
    """The client ``make()`` returns, made with ``connection`` and a bootstrap timeout of
    ``timeout`` seconds; BrokerUnavailable or AuthenticationFailed (see :func:`connect`)
    if it could not be made."""
    try:
        with _quiet('kafka'):
            return make()
    except KafkaError as exc:
        raise _unreachable(connection, timeout, exc) from None


def _unreachable(connection: dict[str, Any], timeout: float, exc: Exception) -> Exception:
    """Why no client could be made: a secured listener that accepts connections but never
    answered refused the credentials or the TLS handshake (kafka-python says neither; a
    broker closes the connection of a failed SASL login without an answer)."""
    servers = ','.join(connection['bootstrap_servers'])
    protocol = connection['security_protocol']
    if protocol != 'PLAINTEXT' and any(_listens(server) for server in
                                       connection['bootstrap_servers']):
        login = (f"SASL {connection['sasl_mechanism']} login as "
                 f"{connection['sasl_plain_username']!r}" if 'SASL' in protocol else '')
        what = ' and '.join(filter(None, [login, 'TLS handshake' if 'SSL' in protocol else '']))
        return AuthenticationFailed(f'Kafka at {servers} refused the {what} ({protocol}) '
                                    f'within {timeout:g}s: check the security settings')
    return BrokerUnavailable(f'cannot reach Kafka at {servers} within {timeout:g}s ({exc})')


def _listens(server: str) -> bool:
    """Whether ``host:port`` accepts a TCP connection."""
    try:
        socket.create_connection(split_host_port(server), timeout=2).close()
    except (OSError, ValueError):
        return False
    return True


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


def create_missing(admin: KafkaAdminClient, wanted: dict[str, tuple[int, dict[str, str]]],
                   existing: Iterable[str], replication_factor: int) -> None:
    """Create the topics of ``wanted`` (name → partition count and config) not in ``existing``."""
    missing = {name: spec for name, spec in wanted.items() if name not in set(existing)}
    for name, (partitions, config) in missing.items():
        _create(admin, name, partitions, replication_factor, config)
    if missing:
        admin.wait_for_topics(list(missing), timeout_ms=30000)


def _create(admin: KafkaAdminClient, name: str, partitions: int, replication_factor: int,
            config: dict[str, str]) -> None:
    spec = {'num_partitions': partitions, 'replication_factor': replication_factor,
            'configs': config}
    try:
        admin.create_topics({name: spec})
        log.info('created topic %s with %d partitions', name, partitions)
    except TopicAlreadyExistsError:
        log.debug('topic %s was created by another worker meanwhile', name)


def leave_group(connection: dict[str, Any], timeout: float, client_id: str, group: str,
                instance_id: str) -> None:
    """Take a static member out of its group at once (closing its consumer does not), so
    its partitions move now rather than after its session timeout."""
    try:
        client = connect(connection, timeout, client_id)
        try:
            errors = client.remove_group_members(group, [MemberToRemove(
                group_instance_id=instance_id, reason='stopped for good')])
        finally:
            client.close()
    except (KafkaError, BrokerUnavailable, AuthenticationFailed) as exc:
        log.warning('could not leave group %s; its members take over after the session '
                    'timeout: %s', group, exc)
        return
    problems = [error.__name__ for error in errors.values() if error.errno]
    if problems:
        log.warning('could not leave group %s: %s', group, ', '.join(problems))
    else:
        log.info('left group %s as %s', group, instance_id)


def group_lag(connection: dict[str, Any], timeout: float, client_id: str, group: str,
              topics: Iterable[str]) -> list[dict[str, Any]]:
    """Per partition of ``topics`` (and of any other topic ``group`` committed offsets of),
    in topic and partition order: the group's committed offset (None if it has none), the
    partition's end offset (its high watermark, as Kafka's own tools read it) and the lag
    between them (None without a committed offset)."""
    client = connect(connection, timeout, client_id)
    try:
        with _quiet('kafka'):
            committed = client.list_group_offsets(group).get(group, {})
            counts = partition_counts(client, set(topics) | {tp.topic for tp in committed})
            partitions = [TopicPartition(topic, number)
                          for topic, count in sorted(counts.items()) for number in range(count)]
            ends = client.list_partition_offsets(
                dict.fromkeys(partitions, OffsetSpec.LATEST)) if partitions else {}
    except KafkaError as exc:
        raise _unreachable(connection, timeout, exc) from None
    finally:
        client.close()
    rows = []
    for tp in partitions:
        done, end = committed.get(tp), ends[tp].offset
        offset = None if done is None or done.offset < 0 else done.offset
        rows.append({'topic': tp.topic, 'partition': tp.partition, 'committed': offset,
                     'end': end, 'lag': None if offset is None else max(0, end - offset)})
    return rows


def owner_web(admin: KafkaAdminClient, group: str, topic: str, partition: int) -> str | None:
    """The web address of the member of ``group`` that partition ``partition`` of ``topic``
    is assigned to, as it tells the group (see :mod:`runner.kafka.assignor`); None if no
    member has it."""
    try:
        described = admin.describe_groups([group])[group]
    except KafkaError as exc:
        raise BrokerUnavailable(f'cannot describe group {group}: {exc}') from None
    for member in described.get('members') or ():
        assigned = (member.get('member_assignment') or {}).get('assigned_partitions') or ()
        if any(t['topic'] == topic and partition in t['partitions'] for t in assigned):
            try:
                data = json.loads((member.get('member_metadata') or {}).get('user_data') or '{}')
            except ValueError:
                return None
            return data.get('web') if isinstance(data, dict) else None
    return None
