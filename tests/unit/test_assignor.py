"""The group assignor: whole tasks, balanced and sticky by identity, warm handovers,
the cooperative first round (claims, their generations, mixed protocols), partition-count
changes, partitions of topics a task's member does not read, shared identities, owners and
standbys per changelog partition."""

import json
from types import SimpleNamespace

from kafka import TopicPartition
from kafka.coordinator.assignors.abstract import RebalanceProtocol
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

from runner.kafka.assignor import RunnerAssignor

COOPERATIVE, EAGER = RebalanceProtocol.COOPERATIVE, RebalanceProtocol.EAGER
TOTALS = 'app-totals-changelog'


class Cluster:
    def __init__(self, partitions):
        self._partitions = partitions

    def partitions_for_topic(self, topic):
        return set(range(self._partitions[topic]))


def member(name, topics=('clicks', 'orders', 'words'), owned=(), caught_up=(), web=None,
           counts=None, *, generation=0, protocol=EAGER, held=None, member_id=None):
    """A member's subscription; ``held`` defaults to the partitions of ``owned`` (by
    ``counts``), ``protocol=None`` leaves out the fields older versions do not send."""
    user_data = {'web': web or f'{name}:1', 'identity': name, 'owned': list(owned),
                 'caught_up': list(caught_up), 'counts': counts or {}}
    if protocol is not None:
        user_data.update(generation=generation, protocol=protocol.name.lower())
    if held is None:
        held = [(topic, p) for count, p in owned for topic in topics
                if (counts or {}).get(topic) == count]
    return SimpleNamespace(member_id=member_id or f'id-{name}', group_instance_id=None,
                           metadata=ConsumerProtocolSubscription(
                               1, list(topics), json.dumps(user_data).encode(),
                               owned_partitions=owned_partitions(held)))


def owned_partitions(held):
    by_topic = {}
    for topic, p in sorted(held):
        by_topic.setdefault(topic, []).append(p)
    return [ConsumerProtocolSubscription.TopicPartition(topic=topic, partitions=partitions)
            for topic, partitions in by_topic.items()]


def rejoin(result, name, topics, generation, protocol=COOPERATIVE, caught_up=()):
    """A member as it joins again after ``result``: claiming what it was given."""
    topics_given, data = result[name]
    return member(name, topics, tasks_of(result, name), caught_up, counts=data['counts'],
                  generation=generation, protocol=protocol,
                  held=[(topic, p) for topic, ps in topics_given.items() for p in ps])


def assignor(changelogs=None, replicas=1, protocol=EAGER, needs=None):
    return RunnerAssignor('a:1', 'a', replicas, protocol, set, counts={},
                          changelogs=changelogs if changelogs is not None else {TOTALS: 4},
                          needs=needs or {})


def assign(chosen, counts, members):
    result = chosen.assign(Cluster(counts), members)
    return {m.split('-', 1)[1]: (dict(a.assigned_partitions), json.loads(a.user_data))
            for m, a in result.items()}


def tasks_of(result, name):
    return {tuple(task) for task in result[name][1]['tasks']}


def test_co_partitioned_topics_move_together_and_tables_follow_their_group():
    counts = {'clicks': 8, 'orders': 4, 'words': 4}
    result = assign(assignor(), counts, [member('a'), member('b')])
    for topics, _ in result.values():
        assert topics['orders'] == topics['words'] and len(topics['orders']) == 2
        assert len(topics['clicks']) == 4
    owners = result['a'][1]['owners'][TOTALS]
    for name in ('a', 'b'):
        for number in result[name][0]['orders']:
            assert owners[number] == f'{name}:1'              # by the table's own group


def test_members_keep_their_tasks_up_to_a_fair_share():
    counts = {'words': 4}
    first = assign(assignor(), counts, [member('a', ['words']), member('b', ['words'])])
    owned = {name: tasks_of(first, name) for name in ('a', 'b')}
    again = assign(assignor(), counts, [member('b', ['words'], owned['b'], owned['b']),
                                        member('a', ['words'], owned['a'], owned['a'])])
    assert {name: tasks_of(again, name) for name in ('a', 'b')} == owned
    joined = assign(assignor({}), counts, [member('a', ['words'], owned['a']),
                                           member('b', ['words'], owned['b']),
                                           member('c', ['words'])])
    kept = [len(tasks_of(joined, n) & owned[n]) for n in ('a', 'b')]
    assert sorted(len(tasks_of(joined, n)) for n in 'abc') == [1, 1, 2] and sum(kept) == 3


def test_a_stateful_task_moves_only_to_a_member_that_is_caught_up():
    counts = {'words': 4}
    everything = [(4, p) for p in range(4)]
    result = assign(assignor(), counts, [member('a', ['words'], everything,
                                                [(TOTALS, p) for p in range(4)]),
                                         member('b', ['words'])])
    assert tasks_of(result, 'a') == set(everything) and tasks_of(result, 'b') == set()
    warming = {tuple(task) for task in result['b'][1]['warmups']}
    assert len(warming) == 2 and {(TOTALS, p) for _, p in warming} <= {
        tuple(key) for key in result['b'][1]['standbys']}
    warm = [(TOTALS, p) for _, p in warming]
    moved = assign(assignor(), counts, [member('a', ['words'], everything),
                                        member('b', ['words'], (), warm)])
    assert tasks_of(moved, 'b') == warming and moved['b'][1]['warmups'] == []


def test_cooperatively_a_moving_task_is_given_to_nobody_in_the_first_round():
    counts = {'clicks': 4}
    everything = [(4, p) for p in range(4)]
    chosen = assignor({}, protocol=COOPERATIVE)
    first = assign(chosen, counts, [member('a', ['clicks'], everything, protocol=COOPERATIVE),
                                    member('b', ['clicks'], protocol=COOPERATIVE)])
    assert len(tasks_of(first, 'a')) == 2 and tasks_of(first, 'b') == set()
    assert first['a'][1]['owners'] == {}
    second = assign(chosen, counts, [member('a', ['clicks'], tasks_of(first, 'a'),
                                            protocol=COOPERATIVE),
                                     member('b', ['clicks'], protocol=COOPERATIVE)])
    assert tasks_of(second, 'b') == set(everything) - tasks_of(first, 'a')


def test_standbys_never_land_on_the_owner_and_are_spread():
    changelogs = {'app-a-changelog': 6, 'app-b-changelog': 6}
    result = assign(assignor(changelogs), {'words': 6},
                    [member(name, ['words']) for name in 'abc'])
    kept = {name: {tuple(key) for key in data['standbys']} for name, (_, data) in result.items()}
    for name, (topics, _) in result.items():
        assert not {number for _, number in kept[name]} & set(topics['words'])
    assert sorted(len(keys) for keys in kept.values()) == [4, 4, 4]   # 6 tasks x 2 tables
    assert all(sum((c, n) in keys for keys in kept.values()) == 1
               for c in changelogs for n in range(6))


def test_a_member_learns_the_owners_its_standbys_and_its_generation():
    chosen = assignor({'app-t-changelog': 2})
    raw = chosen.assign(Cluster({'words': 2}), [member('a', ['words']), member('b', ['words'])])
    chosen.on_assignment(raw['id-a'], 7)
    assert sorted(chosen.owners['app-t-changelog']) == ['a:1', 'b:1']
    assert len(chosen.standbys) == 1 and chosen.generation == 7
    subscription = chosen.metadata({'words'})
    mine = json.loads(raw['id-a'].user_data)['tasks']
    assert json.loads(subscription.user_data)['owned'] == mine
    assert subscription.owned_partitions[0].topic == 'words'


def test_a_single_member_has_no_standbys():
    chosen = assignor()
    raw = chosen.assign(Cluster({'words': 4}), [member('a', ['words'])])
    chosen.on_assignment(raw['id-a'], 1)
    assert chosen.standbys == set() and chosen.owners == {TOTALS: ['a:1'] * 4}


def test_stateful_tasks_are_spread_before_stateless_ones():
    result = assign(assignor({'app-t-changelog': 2}, replicas=0), {'words': 2, 'clicks': 3},
                    [member('a', ['words', 'clicks']), member('b', ['words', 'clicks'])])
    assert sorted(len(topics['words']) for topics, _ in result.values()) == [1, 1]


def test_a_topic_whose_count_left_its_tables_is_not_assigned_and_every_member_is_told():
    counts = {'words': 6, 'clicks': 8}
    result = assign(assignor({TOTALS: 4}, needs={'words': 4}), counts,
                    [member('a', ['words', 'clicks']), member('b', ['words', 'clicks'])])
    for topics, data in result.values():
        assert 'words' not in topics and len(topics['clicks']) == 4
        assert data['broken'] == {'words': [6, 4]}


def everything_assigned_once(result, counts):
    given = [(topic, p) for topics, _ in result.values() for topic, ps in topics.items()
             for p in ps]
    return sorted(given) == sorted((topic, p) for topic, n in counts.items() for p in range(n))


def test_a_member_that_lost_its_partitions_no_longer_claims_them():
    chosen = assignor({})
    raw = chosen.assign(Cluster({'words': 4, 'clicks': 4}),
                        [member('a', ['words', 'clicks']), member('b', ['words', 'clicks'])])
    chosen.on_assignment(raw['id-a'], 7)
    mine = json.loads(raw['id-a'].user_data)['tasks']
    _, p = mine[0]
    chosen.forget([TopicPartition('words', p), TopicPartition('clicks', p)])
    data = json.loads(chosen.metadata({'words', 'clicks'}).user_data)
    assert data['owned'] == mine[1:] and data['generation'] == 7
    chosen.forget(TopicPartition(topic, p) for topic in ('words', 'clicks') for _, p in mine)
    subscription = chosen.metadata({'words', 'clicks'})
    assert json.loads(subscription.user_data)['owned'] == []
    assert subscription.owned_partitions == []


def test_of_two_claims_on_a_task_the_newest_is_believed():
    everything = [(4, p) for p in range(4)]
    result = assign(assignor({}), {'words': 4}, [
        member('a', ['words'], everything, generation=7),
        member('b', ['words'], everything[:2], generation=5)])       # expelled, rejoining
    assert tasks_of(result, 'a') == set(everything[:2])


def test_cooperatively_a_task_two_members_claim_is_given_to_nobody():
    everything = [(4, p) for p in range(4)]
    counts = {'words': 4}
    result = assign(assignor({}, protocol=COOPERATIVE), counts, [
        member('a', ['words'], everything, counts=counts, generation=7, protocol=COOPERATIVE),
        member('b', ['words'], everything[2:], counts=counts, generation=5,
               protocol=COOPERATIVE)])
    assert result['b'][0] == {} and result['a'][0] == {'words': [0, 1]}


def test_a_count_change_holds_back_only_the_tasks_whose_partitions_change():
    before = {'words': 4, 'clicks': 4}
    counts = {'words': 4, 'clicks': 8}
    both = ['words', 'clicks']
    warm = [(TOTALS, p) for p in range(4)]
    members = [member('a', both, [(4, 0), (4, 1)], warm, counts=before, protocol=COOPERATIVE),
               member('b', both, [(4, 2)], warm, counts=before, protocol=COOPERATIVE,
                      held=[('words', 2), ('clicks', 2), ('clicks', 3)]),   # c reads no clicks
               member('c', ['words'], [(4, 3)], warm, counts=before, protocol=COOPERATIVE)]
    result = assign(assignor(), counts, members)
    assert result['c'][0] == {'words': [3]}                    # none of its partitions moved
    assert sorted(p for name in 'ab' for p in result[name][0].get('clicks', ())) == [4, 5, 6, 7]
    assert not any(result[name][0].get('words') for name in 'ab')   # clicks:0-3 left them
    assert {(4, 0), (4, 1)} <= tasks_of(result, 'a')                # and come back to a
    again = assign(assignor(), counts, [rejoin(result, name, topics, 1, caught_up=warm)
                                        for name, topics in zip('abc', (both, both, ['words']))])
    assert everything_assigned_once(again, counts)
    assert again['a'][0]['words'] == [0, 1] and again['c'][0]['words'] == [3]


def test_a_departed_members_stateful_tasks_go_to_members_caught_up_on_them():
    counts = {'words': 6}
    changelogs = {TOTALS: 6}
    result = assign(assignor(changelogs), counts, [
        member('b', ['words'], [(6, 2), (6, 3)], [(TOTALS, 1), (TOTALS, 2), (TOTALS, 3)]),
        member('c', ['words'], [(6, 4), (6, 5)], [(TOTALS, 4), (TOTALS, 5)])])
    assert tasks_of(result, 'b') == {(6, 1), (6, 2), (6, 3)}
    assert tasks_of(result, 'c') == {(6, 0), (6, 4), (6, 5)}


def test_a_partition_whose_task_member_does_not_read_its_topic_goes_to_a_reader():
    counts = {'words': 4, 'clicks': 4}
    topics = {'a': ['words', 'clicks'], 'b': ['words'], 'd': ['clicks']}
    first = assign(assignor({}, protocol=COOPERATIVE), counts,
                   [member(name, topics[name], protocol=COOPERATIVE) for name in 'abd'])
    assert everything_assigned_once(first, counts)
    again = assign(assignor({}, protocol=COOPERATIVE), counts,
                   [rejoin(first, name, topics[name], 1) for name in 'abd'])
    assert {name: topics for name, (topics, _) in again.items()} == {
        name: topics for name, (topics, _) in first.items()}


def test_an_eager_leader_holds_back_what_a_cooperative_member_still_owns():
    everything = [(4, p) for p in range(4)]
    counts = {'words': 4}
    result = assign(assignor({}, protocol=EAGER), counts, [
        member('a', ['words'], everything, counts=counts, protocol=COOPERATIVE),
        member('b', ['words'], protocol=EAGER)])
    assert len(tasks_of(result, 'a')) == 2 and result['b'][0] == {}
    result = assign(assignor({}, protocol=EAGER), counts, [
        member('a', ['words'], everything, counts=counts, protocol=EAGER),
        member('b', ['words'], protocol=EAGER)])
    assert len(result['b'][0]['words']) == 2                 # an eager owner revoked it all
    subscription = assignor({}, protocol=COOPERATIVE).metadata({'words'})
    assert json.loads(subscription.user_data)['protocol'] == 'cooperative'


def test_a_member_of_an_older_version_may_still_hold_what_it_claims():
    everything = [(4, p) for p in range(4)]
    counts = {'words': 4}
    garbled = SimpleNamespace(member_id='id-c', group_instance_id=None,
                              metadata=ConsumerProtocolSubscription(1, ['words'], b'[1]'))
    result = assign(assignor({}), counts, [member('a', ['words'], everything, counts=counts,
                                                  protocol=None),
                                           member('b', ['words'], protocol=None), garbled])
    assert len(tasks_of(result, 'a')) == 2 and result['b'][0] == result['c'][0] == {}


def test_members_sharing_an_identity_are_told_apart(caplog):
    counts = {'words': 4}
    mine = [(4, 0), (4, 1)]
    result = assign(assignor({}), counts, [
        member('a', ['words'], member_id='id-copy'),
        member('a', ['words'], mine, generation=3),
        member('b', ['words'], [(4, 2), (4, 3)], generation=3)])
    assert everything_assigned_once(result, counts)
    assert tasks_of(result, 'a') == set(mine)
    assert 'share identity' in caplog.text


def test_every_member_learns_the_web_addresses_of_all_members():
    chosen = assignor({})
    raw = chosen.assign(Cluster({'words': 2}), [member('a', ['words']), member('b', ['words'])])
    chosen.on_assignment(raw['id-a'], 3)
    assert chosen.members == ['a:1', 'b:1']


def test_a_member_remembers_what_each_assignment_changed_and_why():
    chosen = assignor({})
    alone = chosen.assign(Cluster({'words': 2}), [member('a', ['words'])])
    chosen.on_assignment(alone['id-a'], 1)
    first = chosen.changes[-1]
    assert first.generation == 1 and first.cause == 'this slot joined the group'
    assert first.assigned == [('words', 0), ('words', 1)] and first.revoked == []
    a = member('a', ['words'], {(2, 0), (2, 1)}, counts={'words': 2}, generation=1)
    shared = chosen.assign(Cluster({'words': 2}), [a, member('b', ['words'])])
    chosen.on_assignment(shared['id-a'], 2)
    second = chosen.changes[-1].describe()
    assert second['cause'] == 'joined: b:1' and len(second['revoked']) == 1
    kept = {tuple(task) for task in json.loads(shared['id-a'].user_data)['tasks']}
    alone_again = chosen.assign(Cluster({'words': 2}), [
        member('a', ['words'], kept, counts={'words': 2}, generation=2)])
    chosen.on_assignment(alone_again['id-a'], 3)
    third = chosen.changes[-1]
    assert third.cause == 'left: b:1' and len(third.assigned) == 1 and third.revoked == []
    assert [change.generation for change in chosen.changes] == [1, 2, 3]


def test_a_partition_count_change_is_given_as_the_cause():
    chosen = assignor({})
    chosen.on_assignment(chosen.assign(Cluster({'words': 2}), [member('a', ['words'])])['id-a'], 1)
    grown = chosen.assign(Cluster({'words': 4}), [member('a', ['words'], counts={'words': 2})])
    chosen.on_assignment(grown['id-a'], 2)
    assert chosen.changes[-1].cause == 'partition count changed: words 2 to 4 partitions'


def test_an_assignment_from_a_leader_of_an_older_version_knows_no_members():
    chosen = assignor({})
    chosen.on_assignment(chosen.assign(Cluster({'words': 2}), [member('a', ['words'])])['id-a'], 1)
    raw = chosen.assign(Cluster({'words': 2}), [member('a', ['words'])])['id-a']
    data = json.loads(raw.user_data)
    del data['members']
    chosen.on_assignment(ConsumerProtocolAssignment(raw.version, raw.assigned_partitions,
                                                    json.dumps(data).encode()), 5)
    assert chosen.members == [] and chosen.changes[-1].cause.startswith('members unchanged')


def test_the_round_that_follows_another_at_once_has_its_cause():
    chosen = assignor({})
    alone = chosen.assign(Cluster({'words': 2}), [member('a', ['words'])])
    for generation in (1, 2, 3):
        chosen.on_assignment(alone['id-a'], generation)
    chosen.on_assignment(alone['id-a'], 7)
    assert [change.cause for change in chosen.changes] == [
        'this slot joined the group', 'this slot joined the group (its next round)',
        'this slot joined the group (its next round)',
        ('members unchanged: a member rejoined or asked for it (a warm handover, a lost '
         'membership)')]


def test_a_round_long_after_the_last_one_does_not_take_its_cause(monkeypatch):
    chosen = assignor({})
    alone = chosen.assign(Cluster({'words': 2}), [member('a', ['words'])])
    chosen.on_assignment(alone['id-a'], 1)
    later = chosen.changes[-1].at + 600
    monkeypatch.setattr('runner.kafka.assignor.time.time', lambda: later)
    chosen.on_assignment(alone['id-a'], 2)
    assert chosen.changes[-1].cause.startswith('members unchanged')
