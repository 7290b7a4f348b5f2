"""Timers and crontabs: declarations refused at load with one line, schedules driven by an
injected clock (cron minutes, time zones, skipped ticks), leadership from the assignment,
and a tick's table access: keys of the slot's partitions only, under the task's guard,
cut together, taken back when the tick raises."""

import contextvars
import datetime
import threading
from types import SimpleNamespace

import pytest
from harness import wait_for
from kafka import TopicPartition

import runner
from runner.app import context
from runner.app.layout import Layout
from runner.app.partitioners import murmur2_partition
from runner.app.timers import Cron, Interval, NotOwned, leader_topic
from runner.config import Settings
from runner.errors import ConfigError
from runner.runtime.context import SlotContext
from runner.runtime.tasks import Tasks
from runner.runtime.timers import (
    Duty,
    ManualClock,
    TimerContext,
    Timers,
    TimerThread,
    check_timers,
)
from runner.state.checkpoint import Checkpoint
from runner.state.partitions import ValueCache, partition_class

PARTITIONS = 4
app = runner.App('timed')
clicks = app.topic('clicks', partitions=PARTITIONS)
totals = app.Table('totals', default=int)


@app.agent(clicks)
def count(stream):
    for user in stream:
        totals[user] += 1


def utc(*fields):
    return datetime.datetime(*fields, tzinfo=datetime.UTC).timestamp()


# -- declarations --------------------------------------------------------------


@pytest.mark.parametrize('expression', ['61 * * * *', '* * *', 'every minute', '', None,
                                        '*/0 * * * *'])
def test_a_bad_cron_expression_is_refused_at_declaration(expression):
    with pytest.raises(ConfigError, match='not a valid cron expression'):
        app.crontab(expression)


def test_an_unknown_time_zone_is_refused_at_declaration():
    with pytest.raises(ConfigError, match="'Mars/Olympus': not a known time zone"):
        app.crontab('0 * * * *', timezone='Mars/Olympus')


@pytest.mark.parametrize('interval', [0, -1, 'often', True, float('nan'), 40_000_000])
def test_a_bad_interval_is_refused_at_declaration(interval):
    with pytest.raises(ConfigError, match='timer interval'):
        app.timer(interval)


def test_a_timer_function_that_takes_arguments_is_refused():
    with pytest.raises(ConfigError, match='must take no arguments'):
        app.timer(1.0)(lambda stream: None)


def test_two_timers_with_one_name_are_refused():
    local = runner.App('twice')
    local.timer(1.0, name='tick')(lambda: None)
    with pytest.raises(ConfigError, match="two timers are named 'tick'"):
        local.crontab('* * * * *', name='tick')(lambda: None)


def test_bad_on_leader_and_on_error_are_refused():
    with pytest.raises(ConfigError, match='on_leader must be True or False'):
        app.timer(1.0, on_leader='yes')(lambda: None)
    with pytest.raises(ConfigError, match='on_error must be one of log, stop'):
        app.timer(1.0, on_error='skip')(lambda: None)


def test_a_bad_crontab_fails_the_app_load_with_one_line(tmp_path, monkeypatch):
    from runner.app.loader import load_app
    (tmp_path / 'badcron.py').write_text(
        'import runner\napp = runner.App("badcron")\n'
        '@app.crontab("*/5 * * *")\ndef tick():\n    pass\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_app('badcron')
    assert refused.value.exit_code == 78
    assert '\n' not in str(refused.value)
    assert "cannot load app 'badcron': crontab '*/5 * * *': not a valid" in str(refused.value)


def test_on_leader_without_an_agent_is_refused_at_start():
    local = runner.App('leaderless')
    local.timer(1.0, on_leader=True)(lambda: None)
    with pytest.raises(ConfigError, match='on_leader=True needs an agent'):
        check_timers(local, Settings())


def test_a_timer_using_a_table_under_exactly_once_is_refused_at_start():
    local = runner.App('eos-timer')
    table = local.Table('t', default=int)
    local.timer(1.0)(lambda: table.__setitem__('k', 1))
    check_timers(local, Settings())
    with pytest.raises(ConfigError, match="uses tables 't', which timers cannot update under "
                                          'exactly_once'):
        check_timers(local, Settings(processing_guarantee='exactly_once'))


def test_the_leader_topic_is_the_first_agent_topic_by_name():
    local = runner.App('leading')
    for name in ('zeta', 'alpha', 'mid'):
        local.agent(local.topic(name), name=name)(lambda stream: None)
    assert leader_topic(local) == 'alpha'
    assert leader_topic(runner.App('idle')) is None


# -- schedules -------------------------------------------------------------------


def test_an_interval_counts_the_due_times_a_long_tick_ran_over():
    every = Interval(0.5)
    assert every.first(10.0) == 10.5
    assert every.next(10.5, 10.6) == (11.0, 0)
    assert every.next(10.5, 11.7) == (12.0, 2)        # 11.0 and 11.5 were skipped


def test_a_crontab_is_due_at_the_minutes_it_names():
    every_five = Cron('*/5 * * * *')
    start = utc(2026, 12, 6, 10, 2, 30)
    due, fired = every_five.first(start), []
    while due < start + 3600:
        fired.append(datetime.datetime.fromtimestamp(due, datetime.UTC).strftime('%H:%M'))
        due, _ = every_five.next(due, due)
    assert fired == [f'10:{m:02d}' for m in range(5, 60, 5)] + ['11:00']


def test_a_crontab_follows_its_time_zone_and_daylight_saving():
    nine_in_new_york = Cron('0 9 * * *', timezone='America/New_York')
    winter = nine_in_new_york.first(utc(2026, 1, 15, 0, 0))
    summer = nine_in_new_york.first(utc(2026, 7, 15, 0, 0))
    assert winter == utc(2026, 1, 15, 14, 0)      # EST, UTC-5
    assert summer == utc(2026, 7, 15, 13, 0)      # EDT, UTC-4


# -- timer threads on an injected clock ------------------------------------------


def timer_thread(timer, clock, duty=None, failures=None):
    return TimerThread(timer, slot=None, tasks=Tasks({}, list), duty=duty or Duty(None),
                       lock=threading.Lock(), clock=clock,
                       on_failure=lambda *reason: (failures if failures is not None else []).append(reason))


def test_a_crontab_on_a_manual_clock_fires_at_the_right_minutes():
    local = runner.App('cronclock')
    clock = ManualClock(start=utc(2026, 12, 6, 23, 58, 10))
    fired = []
    timer = local.crontab('0,30 * * * *')(lambda: fired.append(clock.time()))
    thread = timer_thread(timer, clock)
    thread.thread.start()
    try:
        for minute in range(1, 71):            # to 01:08:10, a minute at a time
            clock.advance(60)
            due = (minute + 28) // 30           # :00, :30 and :00 passed so far
            wait_for(lambda due=due: thread.counts['ticks'] == due, 5, f'{due} ticks')
    finally:
        thread.stop()
        thread.thread.join(5)
    assert [datetime.datetime.fromtimestamp(t, datetime.UTC).strftime('%d %H:%M')
            for t in fired] == ['07 00:00', '07 00:30', '07 01:00']


def test_a_tick_still_running_when_the_next_is_due_skips_it_and_counts_it():
    local = runner.App('slowtick')
    clock = ManualClock(start=100.0)
    started = []

    def slow():
        started.append(clock.monotonic())
        clock.advance(1.2)            # the tick takes 1.2 s of a 0.5 s interval
    timer = local.timer(0.5)(slow)
    thread = timer_thread(timer, clock)
    due = timer.schedule.first(clock.monotonic())
    clock.advance(due - clock.monotonic())
    due = thread.run_due(due)
    assert started == [100.5] and thread.counts == {'ticks': 1, 'skipped': 2, 'failed': 0}
    assert due == 102.0                # 101.0 and 101.5 skipped, never run twice at once


def test_a_timer_that_raises_is_logged_counted_and_ticks_again(caplog):
    local = runner.App('raising')
    clock = ManualClock(start=0.0)
    calls = []

    def flaky():
        calls.append(clock.monotonic())
        if len(calls) == 1:
            raise ValueError('first tick fails')
    failures = []
    thread = timer_thread(local.timer(1.0)(flaky), clock, failures=failures)
    due = thread.run_due(1.0)
    due = thread.run_due(due)
    assert thread.counts == {'ticks': 2, 'skipped': 0, 'failed': 1} and failures == []
    assert 'ValueError: first tick fails' in caplog.text          # the traceback is logged


def test_on_error_stop_stops_the_slot():
    local = runner.App('stopping')
    failures = []
    thread = timer_thread(local.timer(1.0, on_error='stop')(lambda: 1 / 0), ManualClock(),
                          failures=failures)
    thread.run_due(1.0)
    assert failures and 'ZeroDivisionError' in failures[0][0]


def test_an_on_leader_timer_ticks_only_while_its_slot_owns_partition_zero():
    local = runner.App('ledby')
    ticks = []
    duty = Duty('clicks')
    thread = timer_thread(local.timer(1.0, on_leader=True)(lambda: ticks.append(1)),
                          ManualClock(), duty=duty)
    thread.run_due(1.0)
    duty.assigned({TopicPartition('clicks', 1)}, generation=3)
    thread.run_due(2.0)
    assert ticks == []
    duty.assigned({TopicPartition('clicks', 0)}, generation=4)
    thread.run_due(3.0)
    assert ticks == [1] and duty.generation == 4
    assert duty.revoked({TopicPartition('clicks', 0)}) and duty.generation is None
    thread.run_due(4.0)
    assert ticks == [1]


def test_a_revocation_sees_the_leader_tick_under_way_until_it_ends():
    duty = Duty('clicks')
    duty.assigned({TopicPartition('clicks', 0)}, generation=1)
    assert duty.enter()
    assert duty.revoked({TopicPartition('clicks', 0)})
    assert not duty.idle() and not duty.enter()       # no new tick; the one running is seen
    duty.leave()
    assert duty.idle()


# -- a tick's table access -----------------------------------------------------------


class EmptyStore:
    def get(self, key):
        return None

    def newest_window(self):
        return None


def key_in(partition):
    return next(key for key in (f'user-{n}' for n in range(1000))
                if murmur2_partition(key.encode(), PARTITIONS) == partition)


def slot_owning(*numbers):
    """A slot context and its tasks owning partitions ``numbers`` of clicks (and totals)."""
    layout = Layout(app, {'clicks': PARTITIONS}, PARTITIONS)
    slot = SlotContext(layout, SimpleNamespace(transactional=False), None)
    tasks = Tasks({'clicks': PARTITIONS}, layout.tables_of)
    for task in tasks.assign([TopicPartition('clicks', n) for n in numbers]):
        task.partitions = {'totals': partition_class(totals)(totals, task.number, EmptyStore(),
                                                             'id', ValueCache())}
    return slot, tasks


def in_tick(timer_context, operation, failed=False):
    def bound():
        context.bind(timer_context)
        timer_context.begin(0.0)
        try:
            return operation()
        finally:
            timer_context.end(failed)
    return contextvars.copy_context().run(bound)


def test_a_tick_writes_keys_of_partitions_its_slot_owns_and_is_refused_others():
    slot, tasks = slot_owning(1, 2)
    timer_context = TimerContext(slot, tasks, threading.Lock())
    in_tick(timer_context, lambda: (totals.__setitem__(key_in(1), 5),
                                    totals.__setitem__(key_in(2), 6)))
    assert in_tick(timer_context, lambda: (totals[key_in(1)], totals[key_in(2)])) == (5, 6)
    with pytest.raises(NotOwned, match="key 'user-.*' is in partition 3, which this slot "
                                       'does not own now'):
        in_tick(timer_context, lambda: totals.__setitem__(key_in(3), 1))


def test_a_tick_that_raises_leaves_no_table_writes():
    slot, tasks = slot_owning(1)
    timer_context = TimerContext(slot, tasks, threading.Lock())
    in_tick(timer_context, lambda: totals.__setitem__(key_in(1), 5), failed=True)
    assert in_tick(timer_context, lambda: totals[key_in(1)]) == 0


def test_a_ticks_writes_are_cut_together_once_it_ends():
    slot, tasks = slot_owning(1)
    task = tasks.get((PARTITIONS, 1))
    timer_context = TimerContext(slot, tasks, threading.Lock())
    checkpoint = Checkpoint(deadline=0.0)
    mid_tick = []

    def two_writes():
        totals[key_in(1)] = 1
        checkpoint.request([task])             # asked between the two writes
        mid_tick.append(checkpoint.has_cut([task]))
        totals[key_in(1)] = 2
    in_tick(timer_context, two_writes)
    assert mid_tick == [False] and checkpoint.has_cut([task])
    (_, changes), = checkpoint._cuts[task].changes
    assert changes == {key_in(1): 2}
    assert task._leases == 0                   # the tick let go of the task


def test_a_ticks_writes_to_a_revoked_task_are_refused():
    slot, tasks = slot_owning(1)
    task = tasks.get((PARTITIONS, 1))
    task.finished = True                       # its last cut was taken
    with pytest.raises(NotOwned):
        in_tick(TimerContext(slot, tasks, threading.Lock()),
                lambda: totals.__setitem__(key_in(1), 1))


def test_the_status_says_whether_the_slot_leads_and_counts_each_timers_ticks():
    local = runner.App('described')
    local.timer(1.0, name='beat')(lambda: None)
    duty = Duty('clicks')
    timers = Timers(local.timers, None, Tasks({}, list), duty, lambda *_: None, ManualClock())
    timers.threads[0].run_due(1.0)
    assert timers.describe() == {'leader': False, 'leader_generation': None, 'timers': {
        'beat': {'ticks': 1, 'skipped': 0, 'failed': 0, 'running': False}}}


def test_a_slot_exports_its_timers_ticks_skipped_and_failed_and_its_leadership():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from runner.runtime.metrics import SlotCollector
    from runner.runtime.status import SlotStatus
    status = SlotStatus('metered', 0, 150)
    status.timers = lambda: {'leader': True, 'timers': {
        'beat': {'ticks': 7, 'skipped': 2, 'failed': 1, 'running': False}}}
    registry = CollectorRegistry()
    registry.register(SlotCollector(status, list, lambda: None))
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(generate_latest(registry).decode())
               for sample in family.samples if sample.name.startswith('runner_timer')}
    assert samples == {('runner_timer_ticks_total', (('timer', 'beat'),)): 7,
                       ('runner_timer_ticks_skipped_total', (('timer', 'beat'),)): 2,
                       ('runner_timer_ticks_failed_total', (('timer', 'beat'),)): 1,
                       ('runner_timer_leader', ()): 1}


def test_a_tick_running_longer_than_stuck_timeout_stops_the_slot_with_its_stack(tmp_path,
                                                                                 caplog):
    from runner.runtime.slot import Slot
    local = runner.App('stucktimer')
    release = threading.Event()
    local.timer(1.0, name='hang')(lambda: release.wait(30))
    slot = Slot(local, Settings(datadir=str(tmp_path), stuck_timeout=5.0))
    clock = ManualClock()
    slot._timers = Timers(local.timers, None, Tasks({}, list), Duty(None), lambda *_: None,
                          clock)
    slot._timers.start()
    clock.advance(1.0)
    try:
        wait_for(slot._timers.running, 5, 'the tick to start')
        assert slot._stuck_agents() is None
        slot._timers.threads[0].running_since -= 6
        assert slot._stuck_agents() == 'timer hang stuck for 5s'
        assert 'timer hang is stuck: its tick has run for more than 5s' in caplog.text
        assert 'release.wait' in caplog.text              # its stack
    finally:
        release.set()
        slot._timers.stop()
        slot._timers.threads[0].thread.join(5)


def test_a_key_not_owned_is_said_in_one_line_without_a_traceback(caplog):
    local = runner.App('notowned')

    def write_elsewhere():
        raise NotOwned("table 'totals': key 'k' is in partition 3, which this slot does not "
                       'own now')
    thread = timer_thread(local.timer(1.0, name='elsewhere')(write_elsewhere), ManualClock())
    thread.run_due(1.0)
    assert thread.counts['failed'] == 1
    said = "timer elsewhere: table 'totals': key 'k' is in partition 3, which this slot does not"
    assert caplog.messages == [f'{said} own now']
    assert 'Traceback' not in caplog.text


def test_a_cold_stop_or_a_failure_ends_the_wait_for_a_tick_and_is_left_for_the_stop(tmp_path):
    import time

    from runner.runtime.slot import Failure, Slot
    for event in ('cold', Failure('a thread failed')):
        slot = Slot(runner.App('waiting'), Settings(datadir=str(tmp_path)))
        slot._timers = SimpleNamespace(stop=lambda: None, running=lambda: True)  # never ends
        slot._events.put('dump')
        slot._events.put(event)
        began = time.monotonic()
        slot._finish_timers(drain=True, deadline=began + 30)
        assert time.monotonic() - began < 5
        assert slot._events.get(timeout=0) == event


def test_runner_testing_runs_due_ticks_as_its_clock_advances():
    import runner.testing
    local = runner.App('driven')
    events = local.topic('events', partitions=2)
    beats = local.topic('beats')
    minutes = local.Table('minutes', default=int, partitions=2)

    @local.agent(events)
    def ignore(stream):
        for _ in stream:
            pass

    @local.timer(10.0)
    def beat():
        local.send(beats, value='beat')

    @local.crontab('* * * * *', on_leader=True)
    def minute():
        minutes['seen'] += 1

    with runner.testing.run(local) as t:
        start = t.now
        t.advance(9.5)
        assert t.outputs('beats') == []
        t.advance(0.5)
        assert [event.value for event in t.outputs('beats')] == ['beat']
        t.advance(35)                                    # due at 20, 30 and 40 s: each runs
        assert len(t.outputs('beats')) == 4
        t.advance(180)
        assert t.table('minutes')['seen'] == int((t.now) // 60 - start // 60)
        t.commit()
        assert [(event.key, event.value) for event in t.outputs(minutes.changelog.name)][-1] \
            == ('seen', t.table('minutes')['seen'])


def test_a_timer_that_stops_the_slot_stops_a_runner_testing_run():
    import runner.testing
    local = runner.App('driven-stop')

    @local.agent(local.topic('events'))
    def ignore(stream):
        for _ in stream:
            pass

    @local.timer(1.0, on_error='stop')
    def broken():
        raise ValueError('no')

    with runner.testing.run(local) as t:
        with pytest.raises(runner.testing.AgentError) as raised:
            t.advance(1.0)
        assert t.errors == [raised.value]
        assert raised.value.agent is None and isinstance(raised.value.error, ValueError)
        assert str(raised.value).startswith(f'timer {__name__}.test_a_timer_that_stops')
        with pytest.raises(RuntimeError, match='the run has stopped'):
            t.send('events', value=1)


def test_a_tick_reads_global_tables_as_the_slot_holds_them_and_may_not_write_them():
    local = runner.App('globally')
    local.agent(local.topic('orders'))(lambda stream: None)
    rates = local.GlobalTable('rates', default=float)
    layout = Layout(local, {'orders': 1, rates.changelog.name: 1}, 1)
    held = SimpleNamespace(get=lambda table, key: {'eur': 1.1}.get(key, context.MISSING),
                           items=lambda table: iter([('eur', 1.1)]))
    slot = SlotContext(layout, SimpleNamespace(transactional=False), None,
                       global_tables=held)
    timer_context = TimerContext(slot, Tasks({}, list), threading.Lock())
    assert in_tick(timer_context, lambda: (rates['eur'], rates['usd'], dict(rates.items()))) \
        == (1.1, 0.0, {'eur': 1.1})
    with pytest.raises(RuntimeError, match="global table 'rates' can only be changed by"):
        in_tick(timer_context, lambda: rates.__setitem__('eur', 1.2))
