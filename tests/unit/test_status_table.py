"""``runner status``: every slot with its state and, when it is not ready, why."""

from runner.main.control import format_status

STATUS = {'app': 'wc', 'pid': 10, 'state': 'degraded', 'workers': 3, 'slots': [
    {'slot': 0, 'pid': 11, 'web': '127.0.0.1:6066', 'state': 'ready', 'ready': True,
     'assignment': ['in:0', 'in:1'], 'reason': None},
    {'slot': 1, 'pid': None, 'web': None, 'state': 'backoff', 'ready': False,
     'assignment': [], 'reason': 'exited with code 70: agent count raised', 'exit_code': 70,
     'retry_at': 104.2},
    {'slot': 2, 'pid': None, 'web': None, 'state': 'failed', 'ready': False, 'assignment': [],
     'reason': 'could not start: bad app (1 attempt)', 'exit_code': 78}]}


def test_every_slot_has_a_row_and_a_slot_not_ready_says_why():
    assert format_status(STATUS, now=100.0).splitlines() == [
        'wc: main pid 10, degraded, 1 of 3 slots ready',
        'SLOT  PID  WEB             STATE    PARTITIONS',
        '0     11   127.0.0.1:6066  ready    in:0,in:1',
        '1     -    -               backoff  -',
        '      exited with code 70: agent count raised; next start in 4s',
        '2     -    -               failed   -',
        '      could not start: bad app (1 attempt); left stopped until the next HUP']


def test_one_slot_is_singular_and_nothing_reads_none():
    status = {'app': 'wc', 'pid': 10, 'state': 'starting', 'workers': 1, 'slots': [
        {'slot': 0, 'pid': 12, 'web': None, 'state': 'starting', 'ready': False,
         'assignment': [], 'reason': None}]}
    text = format_status(status, now=0.0)
    assert text.splitlines()[0] == 'wc: main pid 10, starting, 0 of 1 slot ready'
    assert 'None' not in text
