"""The command line: options anywhere, help, send, and one-line errors with their exit codes."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from harness import (
    RUNNER,
    alive,
    consume,
    end_offsets,
    free_port,
    run_cli,
    runner_env,
    wait_for,
    write_app,
)

from runner.main.control import status_path
from runner.platform import Pidfile

APP = '''
import runner
app = runner.App({app!r}, session_timeout=6)
source = app.topic({source!r}, partitions={partitions})

@app.agent(source)
def ignore(stream):
    for _ in stream:
        pass
'''


def one_line_error(result, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    assert 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def write_test_app(tmp_path, names, partitions=2):
    return write_app(tmp_path, APP.format(partitions=partitions, **names))


def test_help_lists_every_option_with_its_default(tmp_path):
    result = run_cli(['worker', '--help'], tmp_path)
    assert result.returncode == 0
    for option in ('-A APP, --app=APP', '-b URL, --broker=URL', '-D DIR, --datadir=DIR',
                   '--web-host=HOST', '-p PORT, --web-port=PORT', '-l LEVEL, --loglevel=LEVEL',
                   '-f FILE, --logfile=FILE', '-c FILE, --config=FILE', '--version',
                   '(default: 6066)', '(default: 127.0.0.1)', '(default: info)'):
        assert option in result.stdout


def test_version(tmp_path):
    result = run_cli(['--version'], tmp_path)
    assert result.returncode == 0 and result.stdout.startswith('runner ')


@pytest.mark.parametrize(('args', 'fragment'), [
    (['--bogus'], 'unknown option --bogus'),
    (['-A', 'x', 'work'], "unexpected argument 'work'"),
    (['-A'], '-A requires argument'),
    (['worker'], 'no app given'),
    (['-A', 'x', '--web-port=high'], "invalid web_port 'high'"),
    (['-A', 'x', '-l', 'loud'], "invalid loglevel 'loud'"),
    (['-A', 'x', '--json'], 'option --json goes only with status'),
    (['-A', 'x', '--timeout=5'], 'option --timeout goes only with stop or restart'),
    (['status', '--json', '--json'], 'option --json given more than once'),
])
def test_bad_usage_exits_64(tmp_path, args, fragment):
    one_line_error(run_cli(args, tmp_path), 64, fragment)


def test_unknown_module_exits_78(tmp_path):
    one_line_error(run_cli(['-A', 'nosuchmodule'], tmp_path), 78, "no module named 'nosuchmodule'")


def test_module_without_an_app_exits_78(tmp_path):
    write_app(tmp_path, 'x = 1\n', 'plain')
    one_line_error(run_cli(['-A', 'plain'], tmp_path), 78, 'defines no runner.App')
    one_line_error(run_cli(['-A', 'plain:x'], tmp_path), 78, "no App named 'x'")


def test_module_that_raises_exits_78_with_the_place(tmp_path):
    write_app(tmp_path, 'import runner\n1 / 0\n', 'broken')
    one_line_error(run_cli(['-A', 'broken'], tmp_path), 78, 'ZeroDivisionError', 'broken.py:2')
    write_app(tmp_path, 'def (:\n', 'syntax')
    one_line_error(run_cli(['-A', 'syntax'], tmp_path), 78, 'SyntaxError', 'syntax.py:1')


def test_bad_yaml_exits_78(tmp_path, names):
    write_test_app(tmp_path, names)
    (tmp_path / 'bad.yaml').write_text('web_port: [1,\n')
    one_line_error(run_cli(['-A', 'testapp', '-c', 'bad.yaml'], tmp_path), 78, 'bad YAML',
                   'line')
    (tmp_path / 'unknown.yaml').write_text('colour: blue\n')
    one_line_error(run_cli(['-A', 'testapp', '-c', 'unknown.yaml'], tmp_path), 78,
                   "unknown setting 'colour'")


def test_unreachable_broker_exits_69(tmp_path, names):
    write_test_app(tmp_path, names)
    args = ['-A', 'testapp', '-b', f'127.0.0.1:{free_port()}', '--broker-timeout=1',
            '-p', str(free_port()), '-D', str(tmp_path / 'data'), '-l', 'warning']
    one_line_error(run_cli(args, tmp_path), 69, 'cannot reach Kafka', 'within 1s')


def test_taken_port_exits_73(tmp_path, names, kafka_bootstrap):
    write_test_app(tmp_path, names)
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ['-A', 'testapp', '-b', kafka_bootstrap, '-p', str(port), '-D', str(tmp_path),
                '-l', 'warning']
        one_line_error(run_cli(args, tmp_path), 73, f'web port 127.0.0.1:{port} is already in use')


def test_data_directory_in_use_exits_73(tmp_path, names, workers):
    write_test_app(tmp_path, names)
    worker = workers('testapp')
    worker.wait_ready()
    args = ['-A', 'testapp', '-p', str(free_port()), '-D', str(worker.datadir), '-l', 'warning']
    holder = worker.get('/')[1]['pid']
    one_line_error(run_cli(args, tmp_path), 73, f'{worker.datadir}/slot-0 is in use by pid '
                   f'{holder}')


def test_declared_partitions_must_match_the_topic(tmp_path, names, kafka_bootstrap, admin):
    admin.create_topics({names['source']: {'num_partitions': 3, 'replication_factor': 1}})
    write_test_app(tmp_path, names, partitions=2)
    args = ['-A', 'testapp', '-b', kafka_bootstrap, '-p', str(free_port()), '-D',
            str(tmp_path / 'data'), '-l', 'warning']
    one_line_error(run_cli(args, tmp_path), 78, f"topic {names['source']!r} has 3 partitions "
                   'but the app declares 2')


def test_options_may_stand_before_and_after_the_command(tmp_path, names, kafka_bootstrap,
                                                       workers):
    write_test_app(tmp_path, names)
    port = free_port()
    worker = workers.raw([f'--datadir={tmp_path / "d"}', '-A', 'testapp', '-b', kafka_bootstrap,
                          '-l', 'info', 'worker', f'--web-port={port}'], port)
    worker.wait_ready()
    assert (tmp_path / 'd' / 'slot-0' / 'runner.lock').exists()


def test_send_writes_one_record(tmp_path, names, kafka_bootstrap, admin):
    admin.create_topics({names['source']: {'num_partitions': 2, 'replication_factor': 1}})
    write_test_app(tmp_path, names)
    result = run_cli(['-A', 'testapp', '-b', kafka_bootstrap, 'send', names['source'],
                      '{"n": 1}', '-k', 'alpha'], tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert written['topic'] == names['source'] and written['offset'] == 0
    [record] = consume(kafka_bootstrap, names['source'], 1)
    assert (record.key, json.loads(record.value)) == (b'alpha', {'n': 1})


@pytest.mark.parametrize('value', ['{"price": 3,}', '[1, 2', '"unterminated'])
def test_send_of_broken_json_to_a_json_topic_exits_65_and_sends_nothing(
        tmp_path, names, kafka_bootstrap, admin, value):
    admin.create_topics({names['source']: {'num_partitions': 2, 'replication_factor': 1}})
    write_test_app(tmp_path, names)
    result = run_cli(['-A', 'testapp', '-b', kafka_bootstrap, 'send', names['source'], value],
                     tmp_path)
    one_line_error(result, 65, f"VALUE is not valid JSON for topic {names['source']!r}")
    assert end_offsets(kafka_bootstrap, names['source']) == {0: 0, 1: 0}
    plain = run_cli(['-A', 'testapp', '-b', kafka_bootstrap, 'send', names['source'], 'plain'],
                    tmp_path)
    assert plain.returncode == 0, plain.stderr               # a bare word is a string
    [record] = consume(kafka_bootstrap, names['source'], 1)
    assert json.loads(record.value) == 'plain'


def test_send_to_a_missing_topic_exits_64(tmp_path, names, kafka_bootstrap):
    write_test_app(tmp_path, names)
    result = run_cli(['-A', 'testapp', '-b', kafka_bootstrap, 'send', 'no-such-topic', 'x'],
                     tmp_path)
    one_line_error(result, 64, "topic 'no-such-topic' does not exist")


def test_config_file_sets_options_and_the_command_line_wins(tmp_path, names, kafka_bootstrap,
                                                            workers):
    write_test_app(tmp_path, names)
    (tmp_path / 'runner.yaml').write_text(
        f'app: testapp\nbroker: {kafka_bootstrap}\nweb-port: 1\ndatadir: {tmp_path / "cfg"}\n')
    port = free_port()
    worker = workers.raw(['-c', 'runner.yaml', '-p', str(port)], port)
    worker.wait_ready()
    assert (tmp_path / 'cfg' / 'slot-0').is_dir()


def test_an_agent_that_takes_no_stream_exits_78(tmp_path):
    write_app(tmp_path, 'import runner\napp = runner.App("bad")\n\n@app.agent("t")\n'
              'def nothing():\n    pass\n', 'badagent')
    one_line_error(run_cli(['-A', 'badagent'], tmp_path), 78,
                   'agent nothing must take exactly one argument, the stream')


@pytest.mark.parametrize('args', [['--help'], ['status', '--pidfile', 'r.pid']])
def test_output_into_a_closed_pipe_exits_141_without_a_traceback(tmp_path, args):
    pidfile = Pidfile(tmp_path / 'r.pid')
    pidfile.acquire()                          # this test process "runs" the worker
    status_path(pidfile.path).write_text('{"pid": 1, "state": "running", "slots": []}')
    read_end, write_end = os.pipe()
    os.close(read_end)                         # like a `| head` that has already exited
    try:
        result = subprocess.run([sys.executable, str(RUNNER), *args], cwd=tmp_path,
                                env=runner_env(), stdout=write_end, stderr=subprocess.PIPE,
                                text=True, timeout=60, check=False)
    finally:
        os.close(write_end)
        pidfile.release()
    assert (result.returncode, result.stderr) == (141, '')


HANGING_IMPORT = '''import os, time
if 'RUNNER_SLOT_PID' not in os.environ and os.path.exists('hang'):
    time.sleep(1000)                   # the main process's check of the app hangs
'''


@pytest.mark.parametrize('stage', ['the app check', 'the first slot start'])
def test_ctrl_c_during_the_start_prints_no_traceback(tmp_path, names, kafka_bootstrap, stage):
    write_app(tmp_path, HANGING_IMPORT + APP.format(partitions=2, **names))
    if stage == 'the app check':
        (tmp_path / 'hang').touch()
    log = tmp_path / 'stderr'
    with log.open('w') as stderr:
        proc = subprocess.Popen([sys.executable, str(RUNNER), '-A', 'testapp', '-b',
                                 kafka_bootstrap, '-p', str(free_port()), '-D',
                                 str(tmp_path / 'd')], cwd=tmp_path, env=runner_env(),
                                stderr=stderr, start_new_session=True)
    try:
        if stage == 'the app check':
            wait_for(lambda: children(proc.pid), 30, 'the app check to start')
        else:
            wait_for(lambda: 'slot 0 started' in log.read_text(), 30, 'the first slot')
        checker = children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)             # Ctrl-C in a terminal
        code = proc.wait(60)
    finally:
        proc.kill()
    assert code == (130 if stage == 'the app check' else 0), log.read_text()
    assert 'Traceback' not in log.read_text()
    wait_for(lambda: not any(alive(pid) for pid in checker), 10, 'the children to be gone')


def children(pid):
    found = subprocess.run(['pgrep', '-P', str(pid)], capture_output=True, text=True,
                           check=False).stdout.split()
    return [int(child) for child in found]


@pytest.mark.parametrize(('setup', 'args', 'code', 'fragment'), [
    ({'c.yaml': b'web_port: 1\n\xff\n'}, ['-c', 'c.yaml'], 78, 'is not UTF-8 text'),
    ({'c.yaml': b'pidfile: [1, 2]\n'}, ['-c', 'c.yaml'], 78,
     'invalid pidfile in config file c.yaml: expected text, not list'),
    ({'c.yaml': b'a: &a [x, x, x]\nb: &b [*a, *a, *a]\nweb_port: [*b, *b, *b]\n'},
     ['-c', 'c.yaml'], 78, 'aliases (*name) are not allowed'),
    ({}, ['--logfile', 'no/such/dir/w.log'], 73, 'cannot use log file no/such/dir/w.log'),
    ({'theirs.log': b''}, ['--logfile', 'x.log'], 73,
     'cannot use log file x.log: it is a symbolic link'),
    ({'theirs.log': b''}, ['--logfile', 'x-%i.log', '-p', '0'], 73,
     'slot 0 could not start: cannot use log file x-0.log: it is a symbolic link'),
    ({}, ['--log-format', 'xml'], 64,
     "invalid log_format 'xml' in the command line: choose from text, json"),
    ({'c.yaml': b'web_port: 1\nweb-port: 2\n'}, ['-c', 'c.yaml'], 78,
     "at line 2: duplicate key 'web-port'"),
    ({'c.yaml': b'datadir: "a\\0b"\n'}, ['-c', 'c.yaml'], 78,
     "invalid datadir 'a\\x00b' in config file c.yaml: contains a NUL byte"),
    ({'c.yaml': b'commit_timeout: 1.0e+308\n'}, ['-c', 'c.yaml'], 78,
     'invalid commit_timeout 1e+308 in config file c.yaml: at most 31536000 seconds'),
    ({'c.yaml': b'#' * (1024 * 1024 + 1)}, ['-c', 'c.yaml'], 78,
     'config file c.yaml is larger than 1 MiB'),
    ({}, ['-w', '5000', '-p', '0'], 64, 'invalid workers 5000: at most'),
    ({}, ['stop', '--pidfile', 'w.pid', '--timeout', '1e308'], 64,
     "invalid --timeout '1e308': at most 31536000 seconds"),
    ({'dir/.keep': b''}, ['--pidfile', 'dir'], 73, 'dir: Is a directory'),
    ({}, ['-p', '65535', '-w', '2'], 64, 'would need port 65536'),
    ({}, ['-b', 'kafka://user:secret@host:9092'], 64, 'takes no user name or password'),
    ({'c.yaml': b'workers: .inf\n'}, ['-c', 'c.yaml'], 78, 'inf: expected a whole number'),
    ({'c.yaml': b'web_port: .nan\n'}, ['-c', 'c.yaml'], 78, 'invalid web_port nan'),
    ({'c.yaml': b'since: 2024-13-01\n'}, ['-c', 'c.yaml'], 78, 'month must be in 1..12'),
    ({'c.yaml': b"web_port: !!float ''\n"}, ['-c', 'c.yaml'], 78, 'cannot read (IndexError)'),
    ({'c.yaml': b'web_port: ' + b'[' * 5000 + b'\n'}, ['-c', 'c.yaml'], 78,
     'nested too deeply'),
    ({}, ['-c', 'a\nb.yaml'], 78, "cannot read config file 'a\\nb.yaml'"),
    ({}, ['kafka://user:secret@host:9092'], 64, "unexpected argument 'kafka://***@host:9092'"),
    ({}, ['--web-port', 'user:secret@h'], 64, 'expected a whole number'),
    ({}, ['send', 'bad topic!', 'x'], 64, "invalid topic name 'bad topic!'"),
])
def test_bad_files_and_values_get_one_line_and_their_exit_code(tmp_path, setup, args, code,
                                                               fragment):
    write_app(tmp_path, 'import runner\napp = runner.App("bad-input")\n')
    for name, content in setup.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    if 'theirs.log' in setup:       # the log file of the main process, or of slot 0
        (tmp_path / ('x-0.log' if 'x-%i.log' in args else 'x.log')).symlink_to('theirs.log')
    broker = [] if '-b' in args else ['-b', '127.0.0.1:1']
    result = run_cli(['-A', 'testapp', *broker, *args], tmp_path)
    one_line_error(result, code, fragment)
    assert 'secret' not in result.stderr
