"""The group assignor: whole tasks, balanced and sticky by identity, warm handovers,
the cooperative first round, owners and standbys per changelog partition."""

import json
from types import SimpleNamespace

from kafka.coordinator.assignors.abstract import RebalanceProtocol
from kafka.protocol.consumer.metadata import ConsumerProtocolSubscription

from runner.kafka.assignor import RunnerAssignor

COOPERATIVE, EAGER = RebalanceProtocol.COOPERATIVE, RebalanceProtocol.EAGER
TOTALS = 'app-totals-changelog'


class Cluster:
    def __init__(self, partitions):
        self._partitions = partitions

    def partitions_for_topic(self, topic):
        return set(range(self._partitions[topic]))


def member(name, topics=('clicks', 'orders', 'words'), owned=(), caught_up=(), web=None,
           counts=None):
    user_data = {'web': web or f'{name}:1', 'identity': name, 'owned': list(owned),
                 'caught_up': list(caught_up), 'counts': counts or {}}
    return SimpleNamespace(member_id=f'id-{name}', group_instance_id=None,
                           metadata=ConsumerProtocolSubscription(
                               1, list(topics), json.dumps(user_data).encode()))


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
    first = assign(chosen, counts, [member('a', ['clicks'], everything), member('b', ['clicks'])])
    assert len(tasks_of(first, 'a')) == 2 and tasks_of(first, 'b') == set()
    assert first['a'][1]['owners'] == {}
    second = assign(chosen, counts, [member('a', ['clicks'], tasks_of(first, 'a')),
                                     member('b', ['clicks'])])
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


def test_a_topic_that_grew_is_rebuilt_through_a_round_with_no_owner():
    before = [(4, p) for p in range(4)]
    counts = {'words': 6, 'orders': 4}
    result = assign(assignor({}, protocol=COOPERATIVE), counts, [
        member('a', ['words', 'orders'], before, counts={'words': 4, 'orders': 4}),
        member('b', ['words', 'orders'], counts={'words': 4, 'orders': 4})])
    assert tasks_of(result, 'a') | tasks_of(result, 'b') == set()   # every task reshaped
    assert result['a'][1]['counts'] == {'words': 6, 'orders': 4}
    again = assign(assignor({}, protocol=COOPERATIVE), counts, [
        member('a', ['words', 'orders'], counts=counts), member('b', ['words', 'orders'],
                                                                counts=counts)])
    assert tasks_of(again, 'a') | tasks_of(again, 'b') == {(6, p) for p in range(6)} | set(
        before)


def test_a_topic_whose_count_left_its_tables_is_not_assigned_and_every_member_is_told():
    counts = {'words': 6, 'clicks': 8}
    result = assign(assignor({TOTALS: 4}, needs={'words': 4}), counts,
                    [member('a', ['words', 'clicks']), member('b', ['words', 'clicks'])])
    for topics, data in result.values():
        assert 'words' not in topics and len(topics['clicks']) == 4
        assert data['broken'] == {'words': [6, 4]}
