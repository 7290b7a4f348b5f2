"""The group's partition assignor: range assignment plus standby replicas and web addresses.

Active partitions are assigned like Kafka's range assignor, which gives one
member the same partition numbers of every topic (tables are co-partitioned).
Through the group protocol's user data, every member tells the leader its
web address, and the leader hands every member the table of owners
(partition number → web address) and the partitions it keeps warm as a
standby replica.  No extra service is needed to route a table query.
"""

import json
import logging
from typing import Any

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

log = logging.getLogger(__name__)


class RunnerAssignor(AbstractPartitionAssignor):
    """Range assignment with standby replicas; ``owners`` and ``standbys`` hold the last result."""

    name = 'runner-range'
    version = 0

    def __init__(self, web: str | None, standby_replicas: int, table_partitions: int) -> None:
        self._web = web
        self._replicas = standby_replicas
        self._table_partitions = table_partitions
        #: Partition number → web address of the member that owns it.
        self.owners: dict[int, str | None] = {}
        #: Partition numbers this member keeps as a standby replica.
        self.standbys: set[int] = set()

    def metadata(self, topics: Any) -> ConsumerProtocolSubscription:
        user_data = json.dumps({'web': self._web}).encode()
        return ConsumerProtocolSubscription(self.version, sorted(topics), user_data)

    def assign(self, cluster: Any, members: list) -> dict[str, ConsumerProtocolAssignment]:
        active = RangePartitionAssignor.assign(cluster, members)
        webs = {m.member_id: _decode(m.metadata.user_data).get('web') for m in members}
        owner_of = _owners(active)
        ring = sorted(webs)
        owners = {number: webs.get(member) for number, member in owner_of.items()}
        standbys = {member: [] for member in ring}
        for number in range(self._table_partitions):
            for member in _replicas_for(ring, owner_of.get(number), self._replicas):
                standbys[member].append(number)
        return {member: ConsumerProtocolAssignment(
            self.version, assignment.assigned_partitions,
            json.dumps({'owners': owners, 'standbys': standbys[member]}).encode())
            for member, assignment in active.items()}

    def on_assignment(self, assignment: ConsumerProtocolAssignment, generation: int) -> None:
        data = _decode(assignment.user_data)
        self.owners = {int(number): web for number, web in data.get('owners', {}).items()}
        self.standbys = set(data.get('standbys', ()))


def _owners(active: dict[str, ConsumerProtocolAssignment]) -> dict[int, str]:
    owner_of: dict[int, str] = {}
    for member, assignment in sorted(active.items()):
        for _topic, partitions in assignment.assigned_partitions:
            for number in partitions:
                owner_of.setdefault(number, member)
    return owner_of


def _replicas_for(ring: list[str], owner: str | None, replicas: int) -> list[str]:
    """The ``replicas`` members after the owner in the ring (never the owner itself)."""
    if owner not in ring:
        return []
    start = ring.index(owner)
    others = [ring[(start + step) % len(ring)] for step in range(1, len(ring))]
    return others[:replicas]


def _decode(user_data: bytes | None) -> dict[str, Any]:
    try:
        return json.loads(user_data) if user_data else {}
    except ValueError:
        log.warning('ignoring group user data that is not ours: %r', user_data[:40])
        return {}
