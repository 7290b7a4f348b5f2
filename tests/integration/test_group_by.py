"""Counting by another key than the record's: refused when written directly (it would be
split across partitions), exact through ``stream.group_by`` and its repartition topic."""


from harness import produce, write_app

BY_USER_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6,
                 processing_guarantee={guarantee!r})
orders = app.topic({source!r}, partitions=4)
totals = app.Table('totals', default=int{table_partitions})


@app.agent(orders, concurrency=2)
def total(stream):
    for order in {stream}:
        totals[order['user']] += 1
'''

USERS = [f'user-{n:02d}' for n in range(12)]


def by_user_app(tmp_path, names, grouped, guarantee='at_least_once', table_partitions=None):
    """Orders keyed by order id, totalled per user: through ``stream.group_by`` or not."""
    stream = "stream.group_by(lambda order: order['user'])" if grouped else 'stream'
    partitions = '' if table_partitions is None else f', partitions={table_partitions}'
    return write_app(tmp_path, BY_USER_APP.format(stream=stream, guarantee=guarantee,
                                                  table_partitions=partitions, **names))


def orders(first, count):
    """(order id, order) pairs, ``count`` of them from order number ``first``."""
    return [(f'order-{n}', {'user': USERS[n * 7 % len(USERS)]}) for n in range(first,
                                                                         first + count)]


def test_a_write_of_another_key_than_the_records_stops_with_one_line_naming_group_by(
        tmp_path, names, workers, kafka_bootstrap):
    worker = workers(by_user_app(tmp_path, names, grouped=False))
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'], orders(0, 10), partition=0)
    assert worker.wait(60) == 70
    lines = worker.log().splitlines()
    assert not any('Traceback' in line for line in lines)
    assert lines[-1].startswith("runner: no slot is running: slot 0 stopped: exited with code "
                                "78: table 'totals': key 'user-")
    assert 're-key the stream with stream.group_by(key_fn)' in lines[-1]
