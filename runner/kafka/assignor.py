"""The group's partition assignor: sticky tasks, warm handovers, standbys, owners' addresses.

Members subscribe to the topics their agents read.  The leader groups those
topics by partition count (co-partition groups, see :mod:`runner.app.layout`)
and assigns *tasks* — partition ``p`` of a group: every subscribed topic of
that count, numbered ``p``, together — so a record and the table state of its
key always land on the same member.  A partition of a topic that the task's
member does not read (a member restarted with an agent more or less) goes to
a member that reads it: the one holding it, else the least loaded.

The assignment is balanced and sticky: every member keeps the tasks it had,
up to its fair share, and only the surplus and the tasks nobody had move;
members are known by the identity kept in their data directory, so a member
that restarts is recognised (members that share one, from a copied data
directory, are told apart by their member ids).  A member's claim carries the
generation it was given in: of two members claiming a task, the newer claim
is believed.  Tasks with table state are balanced first, and are placed
warm: a task left over (its owner gone, or over its share) goes first to a
member whose copy of its tables is caught up (within ``acceptable_lag``
changelog records, as that member reports) and is below its share; and a
stateful task moves from a member that still owns it only to a member whose
copy is caught up.  Until then the old owner keeps it and the newcomer follows
it as a standby (a *warm-up*); once caught up, the newcomer asks for another
rebalance, and the task moves then (the idea of Kafka Streams' KIP-441).

With the cooperative protocol (KIP-429) a task that moves is first revoked by
its owner and given to its new owner in a follow-up rebalance, which
kafka-python requests; the other tasks never stop.  Every member says which
protocol it runs, and the leader withholds what any member that may still
hold it claims, whatever the leader's own protocol: a group half way through
a rolling restart that switches ``assignor`` never has a partition twice.

A member's consumer builds and revokes whole tasks, so a member is given its
partitions of a task only if it holds exactly those as that task, or none of
them while nobody else holds any.  When a topic's partition count changes
under a running group, its partitions belong to other tasks: the tasks they
leave and join go through a round without them, and are rebuilt.  A topic
whose agents update tables is not assigned at all once its count differs from
its tables' (its keys would no longer be where their state is): every member
is told, and reports itself not ready.

Through the group protocol's user data every member tells the leader its web
address, identity, protocol, the tasks it owns (and the generation it got them
in) and the changelog partitions it holds caught up; the leader hands every
member, per changelog partition, the web address of its owner, the partitions
it keeps as standby and those it warms up, and the web addresses of all the
members (the status page links them).  No extra service is needed to route a
table query.  Each member keeps what its last assignments changed for it, and
why as far as it can tell (:class:`Change`).  A field a member does not send
(an older version, in a rolling restart) reads as unknown: no generation, and a
protocol that may still hold what it claims.
"""

import json
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor, RebalanceProtocol
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

log = logging.getLogger(__name__)

#: A task: (partition count of its group, partition number).
Task = tuple[int, int]
#: A source topic partition: (topic, partition number).
Partition = tuple[str, int]
#: A changelog partition: (changelog topic, partition number).
ChangelogPartition = tuple[str, int]
#: A claim's generation when its member does not say (it predates the field).
UNKNOWN_GENERATION = -1
#: Assignments a member remembers (see :attr:`RunnerAssignor.changes`).
CHANGES_KEPT = 10
#: Said after the cause of a round that follows another at once (see ``_follow_up``).
FOLLOW_UP = ' (its next round)'
#: A round follows another at once when it comes within this long of it (seconds).
FOLLOW_UP_WITHIN = 30.0


class Change(NamedTuple):
    """What one assignment changed for this member, and why as far as it can tell."""

    at: float                        # Unix time it was received
    generation: int
    assigned: list[Partition]        # partitions it gained
    revoked: list[Partition]         # partitions it lost
    cause: str

    def describe(self) -> dict[str, Any]:
        """As JSON: partitions as ``topic:partition``."""
        return {'at': round(self.at, 3), 'generation': self.generation, 'cause': self.cause,
                'assigned': [f'{t}:{p}' for t, p in self.assigned],
                'revoked': [f'{t}:{p}' for t, p in self.revoked]}


class Member(NamedTuple):
    """What the leader knows of one member."""

    member_id: str
    identity: str
    web: str | None
    topics: frozenset[str]
    owned: frozenset[Task]
    caught_up: frozenset[ChangelogPartition]
    counts: dict[str, int]           # topic → partition count, as this member knows it
    generation: int                  # the generation it was given ``owned`` and ``held`` in
    may_hold: bool                   # not known to be eager: it may still hold what it claims
    held: frozenset[Partition]       # the partitions it was given


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
        #: The tasks and the partitions this member claims: those of its last assignment,
        #: less what it has lost since.
        self._owned: set[Task] = set()
        self._held: set[Partition] = set()
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
        self.generation = UNKNOWN_GENERATION
        #: The web addresses of the group's members, this one's included (as the last
        #: assignment said; empty from a leader of an older version).
        self.members: list[str] = []
        #: What the last :data:`CHANGES_KEPT` assignments changed here, oldest first.
        self.changes: deque[Change] = deque(maxlen=CHANGES_KEPT)

    def supported_protocols(self) -> list[RebalanceProtocol]:
        return [self._protocol]

    # -- members -------------------------------------------------------------

    def metadata(self, topics: Any) -> ConsumerProtocolSubscription:
        user_data = json.dumps({
            'web': self._web, 'identity': self._identity, 'owned': sorted(self._owned),
            'generation': self.generation, 'protocol': self._protocol.name.lower(),
            'caught_up': sorted(self._caught_up()), 'counts': self.counts}).encode()
        return ConsumerProtocolSubscription(self.version, sorted(topics), user_data,
                                            owned_partitions=self._owned_partitions())

    def on_assignment(self, assignment: ConsumerProtocolAssignment, generation: int) -> None:
        data = _decode(assignment.user_data)
        held_before, members_before, counts_before = self._held, self.members, dict(self.counts)
        first, warmed = self.generation == UNKNOWN_GENERATION, self.warmups
        self.owners = {changelog: list(webs) for changelog, webs in data.get('owners', {}).items()}
        self.standbys = {(changelog, p) for changelog, p in data.get('standbys', ())}
        self.warmups = {(count, p) for count, p in data.get('warmups', ())}
        self._owned = {(count, p) for count, p in data.get('tasks', ())}
        self.counts.update(data.get('counts', {}))
        self.broken = {topic: (now, need) for topic, (now, need) in data.get('broken', {}).items()}
        self._held = {(topic, p) for topic, partitions in assignment.assigned_partitions
                      for p in partitions}
        self.generation = generation
        self.members = sorted(web for web in data.get('members', ()) if isinstance(web, str))
        cause = ('this slot joined the group' if first else
                 _cause(members_before, self.members, counts_before, self.counts,
                        warmed & self._owned) or self._follow_up(generation))
        self.changes.append(Change(time.time(), generation, sorted(self._held - held_before),
                                   sorted(held_before - self._held), cause))

    def _follow_up(self, generation: int) -> str:
        """The cause of an assignment nothing explains: the round that follows another at
        once (a cooperative rebalance hands out what its first round revoked) has the cause
        of that one; otherwise a rejoin or a request, which Kafka does not tell apart."""
        last = self.changes[-1] if self.changes else None
        if (last is not None and last.generation == generation - 1
                and time.time() - last.at < FOLLOW_UP_WITHIN):
            return last.cause if last.cause.endswith(FOLLOW_UP) else last.cause + FOLLOW_UP
        return ('members unchanged: a member rejoined or asked for it (a warm handover, a '
                'lost membership)')

    def forget(self, tps: Iterable[Any]) -> None:
        """This member no longer holds ``tps`` (its membership was lost: others may own them
        now).  It claims only the partitions it still holds, and the tasks of those, when it
        joins again."""
        self._held -= {(tp.topic, tp.partition) for tp in tps}
        self._owned &= {(self.counts.get(topic), p) for topic, p in self._held}

    def _owned_partitions(self) -> list[Any]:
        return [ConsumerProtocolSubscription.TopicPartition(topic=topic, partitions=partitions)
                for topic, partitions in _by_topic(self._held)]

    # -- the leader ----------------------------------------------------------

    def assign(self, cluster: Any, members: list) -> dict[str, ConsumerProtocolAssignment]:
        group = _distinct([_member(m) for m in members])
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
        owner = _first_round(target, group)
        partitions = _unmoved(_place(owner, counts, group), counts, group)
        standbys = self._standbys(owner, target, warmups, group)
        webs = {m.identity: m.web for m in group}
        owners = {changelog: [webs.get(owner.get((count, p))) for p in range(count)]
                  for changelog, count in self._changelogs.items()}
        members = sorted({web for web in webs.values() if web})
        return {m.member_id: self._assignment(m, owner, partitions[m.identity], counts,
                                              {'owners': owners, 'members': members},
                                              standbys, warmups, broken) for m in group}

    def _balance(self, tasks: list[Task], group: list[Member],
                 target: dict[Task, str]) -> dict[Task, str]:
        """Every task to a member: each keeps what it owned up to its fair share of all
        the tasks (those given before count); of the rest, a stateful task goes to a member
        caught up on it that is below its share, the others to the least loaded."""
        target = dict(target)
        ring = sorted(m.identity for m in group)
        shares = _Shares(ring, len(tasks) + len(target), Counter(target.values()))
        owners = _believed(group, lambda m: m.owned)
        loose = [task for task in tasks if not shares.give(target, task, owners.get(task))]
        warm = self._warm_members(loose, group)
        loose = [task for task in loose
                 if not shares.give(target, task, shares.least_loaded(warm[task], room=True))]
        for task in loose:
            shares.give(target, task, shares.least_loaded(ring, preferred=warm[task]))
        return target

    def _warm_members(self, tasks: list[Task], group: list[Member]) -> dict[Task, list[str]]:
        """The members caught up on each stateful task (none for a task without tables)."""
        return {task: [m.identity for m in group
                       if self._keys(task) and self._keys(task) <= m.caught_up]
                for task in tasks}

    def _keep_until_warm(self, target: dict[Task, str], group: list[Member]
                         ) -> tuple[dict[Task, str], dict[str, set[Task]]]:
        """A stateful task does not leave a member that owns it for one whose copy is not
        caught up: the owner keeps it, and the other warms a copy up."""
        owner_now = _believed(group, lambda m: m.owned)
        caught_up = {m.identity: m.caught_up for m in group}
        kept, warmups = dict(target), defaultdict(set)
        for task, member in target.items():
            current = owner_now.get(task)
            keys = self._keys(task)
            if keys and current not in (None, member) and not keys <= caught_up[member]:
                kept[task] = current
                warmups[member].add(task)
        return kept, warmups

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

    def _assignment(self, member: Member, owner: dict[Task, str], partitions: set[Partition],
                    counts: dict[str, int], group: dict[str, Any], standbys: dict[str, set],
                    warmups: dict[str, set[Task]], broken: dict[str, tuple[int, int]]
                    ) -> ConsumerProtocolAssignment:
        """``group``: what every member is told alike (owners and members)."""
        tasks = sorted(task for task, identity in owner.items() if identity == member.identity)
        user_data = {**group, 'standbys': sorted(standbys[member.identity]),
                     'warmups': sorted(warmups.get(member.identity, ())), 'tasks': tasks,
                     'counts': {t: counts[t] for t in member.topics if t in counts},
                     'broken': {t: broken[t] for t in member.topics if t in broken}}
        return ConsumerProtocolAssignment(self.version, _by_topic(partitions),
                                          json.dumps(user_data).encode())

    def _keys(self, task: Task) -> frozenset[ChangelogPartition]:
        """The changelog partitions of a task (none for a task without tables)."""
        return frozenset((changelog, task[1]) for changelog, count in self._changelogs.items()
                         if count == task[0])


class _Shares:
    """Members' loads against their fair share of ``total`` tasks: ``floor`` each, and one
    more for ``extras`` of them (fewer as members already above ``floor`` use them up)."""

    def __init__(self, ring: list[str], total: int, load: Counter) -> None:
        self._ring = ring
        self._load = load
        self._floor, extras = divmod(total, len(ring))
        self._extras = extras - sum(load[identity] > self._floor for identity in ring)

    def has_room(self, identity: str) -> bool:
        load = self._load[identity]
        return load < self._floor or (load == self._floor and self._extras > 0)

    def least_loaded(self, candidates: list[str], *, room: bool = False,
                     preferred: Iterable[str] = ()) -> str | None:
        """The least loaded of ``candidates`` (with room only, if ``room``), ``preferred``
        ones first among equals; None if there is none."""
        preferred = set(preferred)
        return min((i for i in candidates if not room or self.has_room(i)), default=None,
                   key=lambda i: (self._load[i], i not in preferred, self._ring.index(i)))

    def give(self, target: dict[Task, str], task: Task, identity: str | None) -> bool:
        """Give ``task`` to ``identity`` if it is a member with room; whether it was given."""
        if identity is None or not self.has_room(identity):
            return False
        self._extras -= self._load[identity] == self._floor
        self._load[identity] += 1
        target[task] = identity
        return True


def _believed(group: list[Member], claimed: Callable[[Member], Iterable]) -> dict[Any, str]:
    """Who has each thing members claim (``claimed(member)``: tasks or partitions): of
    several claimants, the one given it last (the highest generation; a member expelled from
    the group may still claim what it had)."""
    newest: dict[Any, tuple[int, str]] = {}
    for m in group:
        for thing in claimed(m):
            newest[thing] = max(newest.get(thing, (m.generation, m.identity)),
                                (m.generation, m.identity))
    return {thing: identity for thing, (_, identity) in newest.items()}


def _first_round(target: dict[Task, str], group: list[Member]) -> dict[Task, str]:
    """A task goes to its member only if, of the members that may still hold it, none
    claims it or only that member does: otherwise it goes to nobody this round, its holders
    revoke it (cooperatively), and the follow-up rebalance gives it out.  An eager member's
    claims hold nothing: it revoked everything before it joined."""
    claimants = defaultdict(set)
    for m in group:
        if m.may_hold:
            for task in m.owned:
                claimants[task].add(m.identity)
    return {task: member for task, member in target.items()
            if claimants.get(task, {member}) == {member}}


def _place(owner: dict[Task, str], counts: dict[str, int],
           group: list[Member]) -> dict[str, set[Partition]]:
    """Every partition of every given task to the task's member, or, of a topic that member
    does not read, to a member that does (see :func:`_place_strays`)."""
    members = {m.identity: m for m in group}
    placed: dict[str, set[Partition]] = {identity: set() for identity in members}
    strays = []
    for (count, p), identity in sorted(owner.items()):
        for topic in sorted(t for t, c in counts.items() if c == count):
            if topic in members[identity].topics:
                placed[identity].add((topic, p))
            else:
                strays.append((topic, p))
    _place_strays(strays, placed, group)
    return placed


def _place_strays(strays: list[Partition], placed: dict[str, set[Partition]],
                  group: list[Member]) -> None:
    """Each partition whose task's member does not read its topic to a member that does:
    the one believed to hold it, else the one with the fewest partitions."""
    holders = _believed(group, lambda m: m.held)
    for topic, p in strays:
        readers = sorted(m.identity for m in group if topic in m.topics)
        holder = holders.get((topic, p))
        chosen = holder if holder in readers else min(
            readers, key=lambda i: (len(placed[i]), readers.index(i)))
        placed[chosen].add((topic, p))


def _unmoved(placed: dict[str, set[Partition]], counts: dict[str, int],
             group: list[Member]) -> dict[str, set[Partition]]:
    """What each member is given this round: its partitions of a task only if it holds
    exactly those as that task, or holds none of them (as any task) and no other member
    holds any.  A member's consumer builds a task from the partitions it is given at once,
    and revokes it whole: it cannot take a partition into a task it keeps, nor keep part of
    one.  What is held elsewhere is revoked by its holder and given in the follow-up round."""
    held_as = _holdings(group, counts)
    holders = defaultdict(set)
    for holding, partitions in held_as.items():
        for partition in partitions:
            holders[partition].add(holding)
    given = {}
    for identity, partitions in placed.items():
        given[identity] = set()
        for task, mine in _by_task(partitions, counts).items():
            kept = held_as.get((identity, task), set())
            if kept in (set(), mine) and all(holders[q] <= {(identity, task)} for q in mine):
                given[identity] |= mine
    return given


def _holdings(group: list[Member], counts: dict[str, int]
              ) -> dict[tuple[str, Task], set[Partition]]:
    """The partitions each member that may still hold them holds, by the task it holds them
    as (by its partition counts: a topic's may have changed since)."""
    held_as = defaultdict(set)
    for m in group:
        if m.may_hold:
            for topic, p in m.held:
                held_as[(m.identity, (m.counts.get(topic, counts.get(topic)), p))].add((topic, p))
    return held_as


def _by_topic(partitions: Iterable[Partition]) -> list[tuple[str, list[int]]]:
    by_topic = defaultdict(list)
    for topic, p in sorted(partitions):
        by_topic[topic].append(p)
    return sorted(by_topic.items())


def _by_task(partitions: set[Partition], counts: dict[str, int]) -> dict[Task, set[Partition]]:
    tasks = defaultdict(set)
    for topic, p in partitions:
        tasks[(counts[topic], p)].add((topic, p))
    return tasks


def _cause(members_before: list[str], members: list[str], counts_before: dict[str, int],
           counts: dict[str, int], taken_over: set[Task]) -> str:
    """Why the group rebalanced, as far as a member can tell from two assignments in a
    row: members that joined or left, partition counts that changed, warm tasks taken
    over ('' if none of these)."""
    joined, left = sorted(set(members) - set(members_before)), sorted(
        set(members_before) - set(members))
    grown = sorted(f'{topic} {counts_before[topic]} to {count} partitions'
                   for topic, count in counts.items()
                   if counts_before.get(topic) not in (None, count))
    causes = ([f'joined: {", ".join(joined)}'] if joined and members_before else []) + (
        [f'left: {", ".join(left)}'] if left and members else []) + (
        [f'partition count changed: {", ".join(grown)}'] if grown else []) + (
        [f'this slot took over {len(taken_over)} task(s) it warmed up'] if taken_over else [])
    return '; '.join(causes)


def _distinct(group: list[Member]) -> list[Member]:
    """The members under distinct identities: where several share one (a copy of a data
    directory, without static membership to fence it), the newest claimant keeps it and
    the others are known by their member ids."""
    sharing = defaultdict(list)
    for m in group:
        sharing[m.identity].append(m)
    keepers = {}
    for identity, same in sharing.items():
        keeper = min(same, key=lambda m: (-m.generation, m.member_id))
        keepers[identity] = keeper.member_id
        if len(same) > 1:
            log.warning('members %s share identity %r (a copy of a data directory?): all but '
                        '%s are known by their member ids', ', '.join(sorted(
                            m.member_id for m in same)), identity, keeper.member_id)
    return [m if keepers[m.identity] == m.member_id else m._replace(identity=m.member_id)
            for m in group]


def _member(member: Any) -> Member:
    data = _decode(member.metadata.user_data)
    return Member(member.member_id, data.get('identity') or member.member_id, data.get('web'),
                  frozenset(member.metadata.topics),
                  frozenset((count, p) for count, p in data.get('owned', ())),
                  frozenset((changelog, p) for changelog, p in data.get('caught_up', ())),
                  dict(data.get('counts', {})),
                  data.get('generation', UNKNOWN_GENERATION),
                  data.get('protocol') != RebalanceProtocol.EAGER.name.lower(),
                  frozenset((tp.topic, p) for tp in member.metadata.owned_partitions or ()
                            for p in tp.partitions))


def _decode(user_data: bytes | None) -> dict[str, Any]:
    try:
        data = json.loads(user_data) if user_data else {}
    except ValueError:
        data = None
    if not isinstance(data, dict):
        log.warning('ignoring group user data that is not ours: %r', user_data[:40])
        return {}
    return data
