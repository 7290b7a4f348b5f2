"""An agent thread that makes no progress while records wait is stuck: the slot logs the
thread's stack and is started again, and the records it held are processed again."""

import collections
import re

from apps import wait_for_counts
from harness import produce, wait_for, write_app

STUCK_APP = '''
import pathlib
import threading
import time
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6, stuck_timeout=3)
words = app.topic({source!r}, partitions=4)
counts = app.Table('counts', default=int)
HUNG_ONCE = pathlib.Path({marker!r})


def wait_for_a_reply_that_never_comes():
    threading.Event().wait()


@app.agent(words, concurrency=2)
def count(stream):
    for word in stream:
        counts[word] += 1
        if word == 'hang' and not HUNG_ONCE.exists():
            HUNG_ONCE.touch()
            wait_for_a_reply_that_never_comes()
        if word.startswith('slow'):
            time.sleep(0.5)
'''


def stuck_app(tmp_path, names):
    return write_app(tmp_path, STUCK_APP.format(marker=str(tmp_path / 'hung'), **names))


def words(count, first=0):
    return [f'w{n % 30:02d}' for n in range(first, first + count)]


def test_a_stuck_agent_is_logged_with_its_stack_and_its_slot_restarted_losing_nothing(
        tmp_path, names, workers, kafka_bootstrap):
    worker = workers(stuck_app(tmp_path, names))
    worker.wait_ready()
    [pid] = worker.slot_pids(1)
    before, after = words(300), words(300, 300)
    produce(kafka_bootstrap, names['source'], [(w, w) for w in before])
    produce(kafka_bootstrap, names['source'], [('hang', 'hang')])
    produce(kafka_bootstrap, names['source'], [(w, w) for w in after])
    wait_for(lambda: 'is stuck' in worker.log(), 30, 'the stuck agent to be found')
    wait_for(lambda: worker.slot_pids(1) != [pid], 60, 'the slot to be started again')
    wait_for_counts(worker, collections.Counter([*before, 'hang', *after]))
    log = worker.log()
    stuck = re.search(r'agent testapp\.count is stuck: thread agent-count-\d has made no '
                      r'progress for 3s inside record \S+\[\d\]@\d+ while records wait', log)
    assert stuck, log[-3000:]
    assert 'in wait_for_a_reply_that_never_comes' in log[stuck.end():]
    assert 'slot 0 is stopping: agent testapp.count stuck for 3s' in log
    assert 'Traceback' not in log


def test_a_slow_agent_that_keeps_making_progress_is_not_stuck(
        tmp_path, names, workers, kafka_bootstrap):
    worker = workers(stuck_app(tmp_path, names))
    worker.wait_ready()
    pid = worker.slot_pids(1)
    slow = [f'slow{n}' for n in range(16)]          # 8 s of work on one partition
    produce(kafka_bootstrap, names['source'], [(w, w) for w in slow], partition=0)
    wait_for_counts(worker, collections.Counter(slow))
    assert 'is stuck' not in worker.log()
    assert worker.slot_pids(1) == pid
