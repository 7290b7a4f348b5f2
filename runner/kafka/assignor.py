"""The group's partition assignor: sticky tasks, warm handovers, standbys, owners' addresses.

Members subscribe to the topics their agents read.  The leader groups those
topics by partition count (co-partition groups, see :mod:`runner.app.layout`)
and assigns *tasks* — partition ``p`` of a group: every subscribed topic of
that count, numbered ``p``, together — so a record and the table state of its
key always land on the same member.

The assignment is balanced and sticky: every member keeps the tasks it had,
up to its fair share, and only the surplus and the tasks nobody had move;
members are known by the identity kept in their data directory, so a member
that restarts is recognised.  Tasks with table state are balanced first, and
are placed warm: a stateful task moves from a member that still owns it only
to a member whose copy of its tables is caught up (within ``acceptable_lag``
changelog records, as that member reports).  Until then the old owner keeps
it and the newcomer follows it as a standby (a *warm-up*); once caught up, the
newcomer asks for another rebalance, and the task moves then (the idea of
Kafka Streams' KIP-441).

With the cooperative protocol (KIP-429) a task that moves is first revoked by
its owner and given to its new owner in a follow-up rebalance, which
kafka-python requests; the other tasks never stop.

When a topic's partition count changes under a running group, its partitions
belong to other tasks: the tasks of its old and new count go through a round
with no owner, so every member rebuilds them.  A topic whose agents update
tables is not assigned at all once its count differs from its tables' (its
keys would no longer be where their state is): every member is told, and
reports itself not ready.

Through the group protocol's user data every member tells the leader its web
address, identity, the tasks it owns and the changelog partitions it holds
caught up; the leader hands every member, per changelog partition, the web
address of its owner, the partitions it keeps as standby and those it warms
up.  No extra service is needed to route a table query.
"""

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor, RebalanceProtocol
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

log = logging.getLogger(__name__)

#: A task: (partition count of its group, partition number).
Task = tuple[int, int]
#: A changelog partition: (changelog topic, partition number).
ChangelogPartition = tuple[str, int]


class Member(NamedTuple):
    """What the leader knows of one member."""

    member_id: str
    identity: str
    web: str | None
    topics: frozenset[str]
    owned: frozenset[Task]
    caught_up: frozenset[ChangelogPartition]
    counts: dict[str, int]           # topic → partition count, as this member knows it


class RunnerAssignor(AbstractPartitionAssignor):
    """Sticky, balanced task assignment with warm handovers and standby replicas.

    ``counts`` (every source topic's partition count: :class:`runner.runtime.tasks.Tasks`
    reads it, and it is updated in place), ``broken``, ``owners``, ``standbys``,
    ``warmups`` and ``generation`` hold what the last assignment said to this member.
    """

    name = 'runner'
    version = 1          # ConsumerProtocolSubscription v1 carries owned partitions

    def __init__(self, web: str | None, identity: str, standby_replicas: int,
                 protocol: RebalanceProtocol, caught_up: Callable[[], set[ChangelogPartition]],
                 *, counts: dict[str, int], changelogs: dict[str, int],
                 needs: dict[str, int]) -> None:
        """``counts``: the source topics' partition counts; ``changelogs``: the tables'
        changelog topics and theirs; ``needs``: the count each source topic whose agents
        update tables must have (its tables')."""
        self._web = web
        self._identity = identity
        self._replicas = standby_replicas
        self._changelogs = dict(changelogs)
        self._needs = dict(needs)
        self._protocol = protocol
        self._caught_up = caught_up
        self._owned: set[Task] = set()
        self._owned_partitions: list[Any] = []
        #: Source topic → its partition count.
        self.counts: dict[str, int] = dict(counts)
        #: Topics left unassigned: their partition count now, and the count their tables need.
        self.broken: dict[str, tuple[int, int]] = {}
        #: Changelog topic → web address of the owner of each of its partitions.
        self.owners: dict[str, list[str | None]] = {}
        #: Changelog partitions this member keeps warm as a standby replica.
        self.standbys: set[ChangelogPartition] = set()
        #: Tasks this member warms up to take them over; caught up, it asks to rebalance.
        self.warmups: set[Task] = set()
        #: The generation of the last assignment (-1 before the first).
        self.generation = -1

    def supported_protocols(self) -> list[RebalanceProtocol]:
        return [self._protocol]

    # -- members -------------------------------------------------------------

    def metadata(self, topics: Any) -> ConsumerProtocolSubscription:
        user_data = json.dumps({
            'web': self._web, 'identity': self._identity, 'owned': sorted(self._owned),
            'caught_up': sorted(self._caught_up()), 'counts': self.counts}).encode()
        return ConsumerProtocolSubscription(self.version, sorted(topics), user_data,
                                            owned_partitions=self._owned_partitions)

    def on_assignment(self, assignment: ConsumerProtocolAssignment, generation: int) -> None:
        data = _decode(assignment.user_data)
        self.owners = {changelog: list(webs) for changelog, webs in data.get('owners', {}).items()}
        self.standbys = {(changelog, p) for changelog, p in data.get('standbys', ())}
        self.warmups = {(count, p) for count, p in data.get('warmups', ())}
        self._owned = {(count, p) for count, p in data.get('tasks', ())}
        self.counts.update(data.get('counts', {}))
        self.broken = {topic: (now, need) for topic, (now, need) in data.get('broken', {}).items()}
        self._owned_partitions = [
            ConsumerProtocolSubscription.TopicPartition(topic=topic, partitions=partitions)
            for topic, partitions in assignment.assigned_partitions]
        self.generation = generation

    # -- the leader ----------------------------------------------------------

    def assign(self, cluster: Any, members: list) -> dict[str, ConsumerProtocolAssignment]:
        group = [_member(m) for m in members]
        counts = {topic: len(cluster.partitions_for_topic(topic) or ())
                  for member in group for topic in member.topics}
        broken = {topic: (counts[topic], need) for topic, need in self._needs.items()
                  if counts.get(topic) and counts[topic] != need}
        counts = {topic: count for topic, count in counts.items() if topic not in broken}
        tasks = sorted({(count, p) for count in counts.values() for p in range(count)})
        stateful_groups = set(self._changelogs.values())
        target = self._balance([t for t in tasks if t[0] in stateful_groups], group, {})
        target = self._balance([t for t in tasks if t[0] not in stateful_groups], group, target)
        target, warmups = self._keep_until_warm(target, group)
        owner = self._first_round(target, group, self._reshaped(counts, group))
        standbys = self._standbys(owner, target, warmups, group)
        webs = {m.identity: m.web for m in group}
        owners = {changelog: [webs.get(owner.get((count, p))) for p in range(count)]
                  for changelog, count in self._changelogs.items()}
        return {m.member_id: self._assignment(m, owner, counts, owners, standbys, warmups,
                                              broken) for m in group}

    def _balance(self, tasks: list[Task], group: list[Member],
                 target: dict[Task, str]) -> dict[Task, str]:
        """Every task to a member: each keeps what it owned up to its fair share of all
        the tasks (those given before count), the rest go to the least loaded."""
        target = dict(target)
        ring = sorted(m.identity for m in group)
        load = Counter(target.values())
        floor, extras = divmod(len(tasks) + len(target), len(ring))
        extras -= sum(load[identity] > floor for identity in ring)
        owned = {task: m.identity for m in sorted(group, key=lambda m: m.identity)
                 for task in m.owned}
        members, loose = set(ring), []
        for task in tasks:
            keeper = owned.get(task)
            if keeper in members and (load[keeper] < floor or (load[keeper] == floor
                                                               and extras > 0)):
                extras -= load[keeper] == floor
                target[task] = keeper
                load[keeper] += 1
            else:
                loose.append(task)
        caught_up = {m.identity: m.caught_up for m in group}
        for task in loose:
            keys = self._keys(task)
            member = min(ring, key=lambda i: (load[i], not keys <= caught_up[i], ring.index(i)))
            target[task] = member
            load[member] += 1
        return target

    def _keep_until_warm(self, target: dict[Task, str], group: list[Member]
                         ) -> tuple[dict[Task, str], dict[str, set[Task]]]:
        """A stateful task does not leave a member that owns it for one whose copy is not
        caught up: the owner keeps it, and the other warms a copy up."""
        owner_now = {task: m.identity for m in group for task in m.owned}
        caught_up = {m.identity: m.caught_up for m in group}
        kept, warmups = dict(target), defaultdict(set)
        for task, member in target.items():
            current = owner_now.get(task)
            keys = self._keys(task)
            if keys and current not in (None, member) and not keys <= caught_up[member]:
                kept[task] = current
                warmups[member].add(task)
        return kept, warmups

    def _reshaped(self, counts: dict[str, int], group: list[Member]) -> set[Task]:
        """The tasks of the old and the new count of every topic whose partition count
        changed, where a member owns tasks of the old count: their partitions now make up
        other tasks."""
        reshaped = set()
        for m in group:
            for topic, old in m.counts.items():
                new = counts.get(topic)
                if new and new != old and any(task[0] == old for task in m.owned):
                    reshaped |= {(old, p) for p in range(old)} | {(new, p) for p in range(new)}
        return reshaped

    def _first_round(self, target: dict[Task, str], group: list[Member],
                     reshaped: set[Task]) -> dict[Task, str]:
        """Cooperatively, a task still owned elsewhere, or reshaped, is given to nobody
        this round: its owner revokes it, and the follow-up rebalance gives it out."""
        if self._protocol != RebalanceProtocol.COOPERATIVE:
            return target
        owner_now = {task: m.identity for m in group for task in m.owned}
        return {task: member for task, member in target.items()
                if owner_now.get(task) in (None, member) and task not in reshaped}

    def _standbys(self, owner: dict[Task, str], target: dict[Task, str],
                  warmups: dict[str, set[Task]], group: list[Member]) -> dict[str, set]:
        """Standby replicas of every changelog partition, never on its owner: members
        warming a task up first, then its next owner, then the least loaded."""
        ring = sorted(m.identity for m in group)
        kept: dict[str, set[ChangelogPartition]] = {identity: set() for identity in ring}
        load: Counter = Counter()
        for task in sorted(t for t in target if self._keys(t)):
            current = owner.get(task)
            others = [i for i in ring if i != current]
            first = {i for i, tasks in warmups.items() if task in tasks} | {target[task]}
            chosen = sorted(others, key=lambda i: (i not in first, load[i], ring.index(i)))
            for identity in chosen[:max(self._replicas, len(first - {current}))]:
                load[identity] += 1
                kept[identity].update(self._keys(task))
        return kept

    def _assignment(self, member: Member, owner: dict[Task, str], counts: dict[str, int],
                    owners: dict, standbys: dict[str, set], warmups: dict[str, set[Task]],
                    broken: dict[str, tuple[int, int]]) -> ConsumerProtocolAssignment:
        tasks = sorted(task for task, identity in owner.items() if identity == member.identity)
        partitions = defaultdict(list)
        for topic in sorted(member.topics):
            for count, p in tasks:
                if counts.get(topic) == count:
                    partitions[topic].append(p)
        user_data = {'owners': owners, 'standbys': sorted(standbys[member.identity]),
                     'warmups': sorted(warmups.get(member.identity, ())), 'tasks': tasks,
                     'counts': {t: counts[t] for t in member.topics if t in counts},
                     'broken': {t: broken[t] for t in member.topics if t in broken}}
        return ConsumerProtocolAssignment(self.version, sorted(partitions.items()),
                                          json.dumps(user_data).encode())

    def _keys(self, task: Task) -> frozenset[ChangelogPartition]:
        """The changelog partitions of a task (none for a task without tables)."""
        return frozenset((changelog, task[1]) for changelog, count in self._changelogs.items()
                         if count == task[0])


def _member(member: Any) -> Member:
    data = _decode(member.metadata.user_data)
    return Member(member.member_id, data.get('identity') or member.member_id, data.get('web'),
                  frozenset(member.metadata.topics),
                  frozenset((count, p) for count, p in data.get('owned', ())),
                  frozenset((changelog, p) for changelog, p in data.get('caught_up', ())),
                  dict(data.get('counts', {})))


def _decode(user_data: bytes | None) -> dict[str, Any]:
    try:
        return json.loads(user_data) if user_data else {}
    except ValueError:
        log.warning('ignoring group user data that is not ours: %r', user_data[:40])
        return {}
