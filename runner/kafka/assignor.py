"""The group's partition assignor: tasks, standby replicas and the owners' web addresses.

Members subscribe to the topics their agents read.  The leader groups those
topics by partition count (co-partition groups, see :mod:`runner.app.layout`)
and assigns *tasks* — partition ``p`` of a group: every subscribed topic of
that count, numbered ``p``, together — so a record and the table state of its
key always land on the same member.  Tasks of groups that have tables are
dealt out first, so table state is spread evenly; then the rest.

Through the group protocol's user data every member tells the leader its web
address, and the leader hands every member, per changelog partition, the web
address of its owner and the partitions it keeps warm as a standby replica.
No extra service is needed to route a table query.
"""

import json
import logging
from collections import Counter, defaultdict
from typing import Any

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

log = logging.getLogger(__name__)

#: A task: (partition count of its group, partition number).
Task = tuple[int, int]
#: A changelog partition: (changelog topic, partition number).
ChangelogPartition = tuple[str, int]


class RunnerAssignor(AbstractPartitionAssignor):
    """Task assignment with standby replicas; ``owners`` and ``standbys`` hold the last result."""

    name = 'runner'
    version = 1

    def __init__(self, web: str | None, standby_replicas: int, changelogs: dict[str, int]) -> None:
        self._web = web
        self._replicas = standby_replicas
        self._changelogs = dict(changelogs)
        #: Changelog topic → web address of the owner of each of its partitions.
        self.owners: dict[str, list[str | None]] = {}
        #: Changelog partitions this member keeps warm as a standby replica.
        self.standbys: set[ChangelogPartition] = set()

    def metadata(self, topics: Any) -> ConsumerProtocolSubscription:
        user_data = json.dumps({'web': self._web}).encode()
        return ConsumerProtocolSubscription(self.version, sorted(topics), user_data)

    def assign(self, cluster: Any, members: list) -> dict[str, ConsumerProtocolAssignment]:
        subscribers: dict[str, list[str]] = defaultdict(list)
        for member in sorted(members, key=lambda m: m.member_id):
            for topic in member.metadata.topics:
                subscribers[topic].append(member.member_id)
        counts = {topic: len(cluster.partitions_for_topic(topic) or ())
                  for topic in subscribers}
        ring = sorted(member.member_id for member in members)
        owner = self._deal(ring, counts)
        webs = {m.member_id: _decode(m.metadata.user_data).get('web') for m in members}
        standbys = self._standbys(ring, owner)
        owners = {changelog: [webs.get(owner.get((count, p))) for p in range(count)]
                  for changelog, count in self._changelogs.items()}
        assigned: dict[str, dict[str, list[int]]] = {member: defaultdict(list) for member in ring}
        for topic, count in sorted(counts.items()):
            for p in range(count):
                member = owner[(count, p)]
                if member not in subscribers[topic]:
                    member = min(subscribers[topic],
                                 key=lambda m: sum(map(len, assigned[m].values())))
                assigned[member][topic].append(p)
        return {member: ConsumerProtocolAssignment(
            self.version, sorted((topic, ps) for topic, ps in assigned[member].items()),
            json.dumps({'owners': owners, 'standbys': sorted(standbys[member])}).encode())
            for member in ring}

    def _deal(self, ring: list[str], counts: dict[str, int]) -> dict[Task, str]:
        """Each task to a member: stateful tasks first, each to the least loaded member."""
        stateful_groups = set(self._changelogs.values())
        tasks = sorted({(count, p) for count in counts.values() for p in range(count)},
                       key=lambda task: (task[0] not in stateful_groups, task))
        stateful: Counter = Counter()
        total: Counter = Counter()
        owner = {}
        for task in tasks:
            is_stateful = task[0] in stateful_groups
            member = min(ring, key=lambda m: (stateful[m] if is_stateful else 0, total[m],
                                              ring.index(m)))
            owner[task] = member
            stateful[member] += is_stateful
            total[member] += 1
        return owner

    def _standbys(self, ring: list[str], owner: dict[Task, str]) -> dict[str, set]:
        """Standby replicas of every changelog partition, never on its owner, spread evenly."""
        kept: dict[str, set[ChangelogPartition]] = {member: set() for member in ring}
        load: Counter = Counter()
        groups = sorted(set(self._changelogs.values()))
        for task in sorted(t for t in owner if t[0] in groups):
            start = ring.index(owner[task])
            others = [ring[(start + step) % len(ring)] for step in range(1, len(ring))]
            chosen = sorted(others, key=lambda m: (load[m], others.index(m)))[:self._replicas]
            for member in chosen:
                load[member] += 1
                kept[member].update((changelog, task[1])
                                    for changelog, count in self._changelogs.items()
                                    if count == task[0])
        return kept

    def on_assignment(self, assignment: ConsumerProtocolAssignment, generation: int) -> None:
        data = _decode(assignment.user_data)
        self.owners = {changelog: list(webs) for changelog, webs in data.get('owners', {}).items()}
        self.standbys = {(changelog, p) for changelog, p in data.get('standbys', ())}


def _decode(user_data: bytes | None) -> dict[str, Any]:
    try:
        return json.loads(user_data) if user_data else {}
    except ValueError:
        log.warning('ignoring group user data that is not ours: %r', user_data[:40])
        return {}
