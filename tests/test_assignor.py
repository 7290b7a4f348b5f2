"""Range assignment with standby replicas and the owners' web addresses."""

import json
from types import SimpleNamespace

from kafka.protocol.consumer.metadata import ConsumerProtocolSubscription

from runner.assignor import RunnerAssignor


class Cluster:
    def __init__(self, partitions):
        self._partitions = partitions

    def partitions_for_topic(self, topic):
        return set(range(self._partitions[topic]))


def members(*webs):
    return [SimpleNamespace(member_id=f'm{i}', group_instance_id=None,
                            metadata=ConsumerProtocolSubscription(
                                0, ['words', 'sentences'], json.dumps({'web': web}).encode()))
            for i, web in enumerate(webs)]


def test_each_member_owns_the_same_numbers_of_every_topic_and_learns_all_owners():
    assignor = RunnerAssignor('h:1', standby_replicas=1, table_partitions=4)
    result = assignor.assign(Cluster({'words': 4, 'sentences': 4}), members('h:1', 'h:2'))
    first = dict(result['m0'].assigned_partitions)
    assert first == {'sentences': [0, 1], 'words': [0, 1]}
    assignor.on_assignment(result['m0'], 1)
    assert assignor.owners == {0: 'h:1', 1: 'h:1', 2: 'h:2', 3: 'h:2'}
    assert assignor.standbys == {2, 3}


def test_standbys_never_land_on_the_owner_and_stop_at_the_member_count():
    assignor = RunnerAssignor('h:1', standby_replicas=5, table_partitions=3)
    result = assignor.assign(Cluster({'words': 3, 'sentences': 3}), members('h:1', 'h:2', 'h:3'))
    for member, assignment in result.items():
        owned = {n for _, numbers in assignment.assigned_partitions for n in numbers}
        standbys = set(json.loads(assignment.user_data)['standbys'])
        assert not owned & standbys
        assert owned | standbys == {0, 1, 2}, member


def test_a_single_member_has_no_standbys():
    assignor = RunnerAssignor('h:1', standby_replicas=1, table_partitions=4)
    result = assignor.assign(Cluster({'words': 4, 'sentences': 4}), members('h:1'))
    assignor.on_assignment(result['m0'], 1)
    assert assignor.standbys == set() and set(assignor.owners) == {0, 1, 2, 3}
