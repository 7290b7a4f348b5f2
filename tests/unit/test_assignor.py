"""The group assignor: whole tasks per member, owners and standbys per changelog partition."""

import json
from types import SimpleNamespace

from kafka.protocol.consumer.metadata import ConsumerProtocolSubscription

from runner.kafka.assignor import RunnerAssignor


class Cluster:
    def __init__(self, partitions):
        self._partitions = partitions

    def partitions_for_topic(self, topic):
        return set(range(self._partitions[topic]))


def members(*webs, topics=('clicks', 'orders', 'words')):
    return [SimpleNamespace(member_id=f'm{i}', group_instance_id=None,
                            metadata=ConsumerProtocolSubscription(
                                1, list(topics), json.dumps({'web': web}).encode()))
            for i, web in enumerate(webs)]


def assign(assignor, counts, group):
    result = assignor.assign(Cluster(counts), group)
    return {member: (dict(a.assigned_partitions), json.loads(a.user_data))
            for member, a in result.items()}


def test_co_partitioned_topics_move_together_and_tables_follow_their_group():
    changelogs = {'app-totals-changelog': 4}
    assignor = RunnerAssignor('h:1', standby_replicas=1, changelogs=changelogs)
    counts = {'clicks': 8, 'orders': 4, 'words': 4}
    result = assign(assignor, counts, members('h:1', 'h:2'))
    for member, (topics, _) in result.items():
        assert topics['orders'] == topics['words']          # the 4-partition group
        assert len(topics['orders']) == 2 and len(topics['clicks']) == 4
    _, data = result['m0']
    owners = data['owners']['app-totals-changelog']
    for member, web in (('m0', 'h:1'), ('m1', 'h:2')):
        for number in result[member][0]['orders']:
            assert owners[number] == web                    # by the table's own group
    assert sorted(result['m0'][0]['clicks'] + result['m1'][0]['clicks']) == list(range(8))


def test_standbys_never_land_on_the_owner_and_are_spread():
    changelogs = {'app-a-changelog': 6, 'app-b-changelog': 6}
    assignor = RunnerAssignor('h:1', standby_replicas=1, changelogs=changelogs)
    result = assign(assignor, {'words': 6}, members('h:1', 'h:2', 'h:3', topics=('words',)))
    kept = {member: {tuple(key) for key in data['standbys']}
            for member, (_, data) in result.items()}
    for member, (topics, _) in result.items():
        owned = set(topics['words'])
        assert not {number for _, number in kept[member]} & owned
    assert sorted(len(keys) for keys in kept.values()) == [4, 4, 4]   # 6 tasks x 2 tables
    assert all(sum((c, n) in keys for keys in kept.values()) == 1
               for c in changelogs for n in range(6))


def test_a_member_learns_the_owners_and_its_standbys():
    assignor = RunnerAssignor('h:1', standby_replicas=1, changelogs={'app-t-changelog': 2})
    raw = assignor.assign(Cluster({'words': 2}), members('h:1', 'h:2', topics=('words',)))
    assignor.on_assignment(raw['m0'], 1)
    assert sorted(assignor.owners['app-t-changelog']) == ['h:1', 'h:2']
    assert len(assignor.standbys) == 1


def test_a_single_member_has_no_standbys():
    assignor = RunnerAssignor('h:1', standby_replicas=1, changelogs={'app-t-changelog': 4})
    raw = assignor.assign(Cluster({'words': 4}), members('h:1', topics=('words',)))
    assignor.on_assignment(raw['m0'], 1)
    assert assignor.standbys == set() and assignor.owners == {'app-t-changelog': ['h:1'] * 4}


def test_stateful_tasks_are_spread_before_stateless_ones():
    assignor = RunnerAssignor('h:1', standby_replicas=0, changelogs={'app-t-changelog': 2})
    result = assign(assignor, {'words': 2, 'clicks': 3},
                    members('h:1', 'h:2', topics=('words', 'clicks')))
    assert sorted(len(topics['words']) for topics, _ in result.values()) == [1, 1]
