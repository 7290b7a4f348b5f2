"""``runner status``: every slot with its state, records per second over the last minute,
lag, recovery and last rebalance, and, when it is not ready, why."""

from runner.main.control import format_status

STATUS = {'app': 'wc', 'pid': 10, 'state': 'degraded', 'workers': 3, 'slots': [
    {'slot': 0, 'pid': 11, 'web': '127.0.0.1:6066', 'state': 'ready', 'ready': True,
     'assignment': ['in:0', 'in:1'], 'reason': None, 'progress': {
         'rate': 1234.56, 'lag': 7, 'recovery': {'partitions': [], 'remaining': 0},
         'rebalanced': {'at': 1.0e9 - 125, 'cause': 'joined: 127.0.0.1:6067'}}},
    {'slot': 1, 'pid': None, 'web': None, 'state': 'backoff', 'ready': False,
     'assignment': [], 'reason': 'exited with code 70: agent count raised', 'exit_code': 70,
     'retry_at': 1.0e9 + 4.2},
    {'slot': 2, 'pid': None, 'web': None, 'state': 'failed', 'ready': False, 'assignment': [],
     'reason': 'could not start: bad app (1 attempt)', 'exit_code': 78}]}


def test_every_slot_has_a_row_and_a_slot_not_ready_says_why():
    assert format_status(STATUS, now=1.0e9).splitlines() == [
        'wc: main pid 10, degraded, 1 of 3 slots ready',
        'SLOT  PID  WEB             STATE     REC/S  LAG  PARTITIONS',
        '0     11   127.0.0.1:6066  ready    1234.6    7  in:0,in:1',
        '      last rebalance 2001-09-09 01:44:35 UTC (2m 5s ago): joined: 127.0.0.1:6067',
        '1     -    -               backoff       -    -  -',
        '      exited with code 70: agent count raised; next start in 4s',
        '2     -    -               failed        -    -  -',
        '      could not start: bad app (1 attempt); left stopped until the next HUP']


def test_one_slot_is_singular_and_nothing_reads_none():
    status = {'app': 'wc', 'pid': 10, 'state': 'starting', 'workers': 1, 'slots': [
        {'slot': 0, 'pid': 12, 'web': None, 'state': 'starting', 'ready': False,
         'assignment': [], 'reason': None}]}
    text = format_status(status, now=0.0)
    assert text.splitlines()[0] == 'wc: main pid 10, starting, 0 of 1 slot ready'
    assert 'None' not in text


def test_a_slot_recovering_while_it_rebalances_says_how_far_it_has_got():
    status = {'app': 'wc', 'pid': 10, 'state': 'running', 'workers': 1, 'slots': [
        {'slot': 0, 'pid': 12, 'web': None, 'state': 'rebalancing', 'ready': False,
         'assignment': ['in:0'], 'reason': 'rebalancing', 'progress': {
             'rate': 0.0, 'lag': 40, 'rebalanced': None,
             'recovery': {'partitions': ['counts[0]', 'counts[2]'], 'remaining': 1200}}}]}
    assert format_status(status, now=0.0).splitlines()[2:] == [
        '0     12   -    rebalancing    0.0   40  in:0',
        '      recovering 2 table partitions: 1200 changelog records remaining']
