"""Fuzzing: config files, command lines and serialized bytes that no one meant.

Whatever comes in, the config loader and the command line either accept it or raise
ConfigError or UsageError with one short line that shows no password, and a codec's
``loads`` raises nothing but ValueError.  Runs are derandomized, so every run (and CI)
tries the same inputs.
"""

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.app.codecs import CODECS
from runner.app.windows import WINDOW_KEYS
from runner.cli import parse, worker_options
from runner.config import FIELDS, SUPERVISOR_KEYS
from runner.errors import ConfigError, UsageError

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Config files are slower to try (YAML written and read): fewer of them.
FUZZ_FILES = settings(FUZZ, max_examples=60)
#: The password in every secret the inputs carry; no message may show it.
PASSWORD = 'Pw0rdZq9'
SECRETS = st.sampled_from([f'kafka://user:{PASSWORD}@host:9092', f'user:{PASSWORD}@h',
                           f'h1:9092,kafka://u:{PASSWORD}@h2'])
HUGE = st.sampled_from(['x' * 1000, '9' * 4000, 'kafka://' + 'h' * 1000 + ':1'])
NUMBERS = st.one_of(st.integers(), st.floats(), st.sampled_from([
    float('inf'), float('-inf'), float('nan'), -0.0, 1e308, 2 ** 70, 0, -1, 65536]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20), SECRETS, HUGE)
KEYS = st.one_of(st.sampled_from(sorted(FIELDS) + list(SUPERVISOR_KEYS)),
                 st.sampled_from(sorted(FIELDS)).map(lambda name: name.replace('_', '-')),
                 st.text(max_size=10), HUGE, SECRETS, st.integers(), st.booleans())
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)), max_leaves=8)
SLOTS = st.dictionaries(st.one_of(st.integers(), st.text(max_size=5), st.just(10 ** 400)),
                        st.one_of(st.dictionaries(KEYS, VALUES, max_size=3), SCALARS),
                        max_size=3)
CONFIGS = st.dictionaries(KEYS, st.one_of(VALUES, SLOTS), max_size=6)
#: Pieces of YAML, put together at random: tags, anchors, dates, numbers, nesting.
YAML_TOKENS = ['web_port', 'workers', 'slots', 'broker', 'loglevel', 'x', ': ', '\n', '  ',
               '- ', '[', ']', '{', '}', ',', '? ', '!!int ', '!!float ', '!!binary ',
               '!!timestamp ', '!!set ', '!!python/object ', '!<tag:x> ', '!x!y ',
               '2001-13-45', '2001-02-03', '.inf', '-.nan', '1.0e400', '-0', '0x1F', '1_000',
               '9' * 4400, '&a ', '*a', '<<: ', '|', '>', '"', "'", '#', '%YAML 1.1\n', '---\n',
               '...\n', '\t', '\\', '\x00', '\ufeff', f'kafka://u:{PASSWORD}@h', '[' * 500]
YAML_TEXTS = st.lists(st.sampled_from(YAML_TOKENS), max_size=15).map(''.join)
#: Command-line text: anything an argv may hold (no NUL), no '/' so that every --config
#: stays inside the working directory, and a few surrogate-escaped non-UTF-8 bytes.
ARG_TEXT = st.text(st.characters(exclude_characters='\x00/', exclude_categories=['Cs'])
                   | st.sampled_from(['\udcff', '\udc80']), max_size=30)
OPTION_VALUES = st.one_of(ARG_TEXT, SECRETS, st.sampled_from(['x' * 5000, '0', '-1']),
                          NUMBERS.map(str), st.sampled_from(['good.yaml', 'bad.yaml', '.', '']))
VALUED_OPTIONS = ['-w', '--workers', '-p', '--web-port', '-b', '--broker', '--broker-timeout',
                  '--graceful-timeout', '-l', '--loglevel', '-f', '--logfile', '--pidfile', '-c',
                  '--config', '-D', '--datadir', '--web-host', '--web-advertise',
                  '--processing-guarantee', '-A', '--app']
OPTIONS = st.tuples(st.sampled_from(VALUED_OPTIONS), OPTION_VALUES, st.booleans()).map(
    lambda given: [f'{given[0]}={given[1]}'] if given[2] else [given[0], given[1]])


@pytest.fixture(scope='module')
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A working directory of its own, with a good and a bad config file in it."""
    path = tmp_path_factory.mktemp('fuzz')
    (path / 'good.yaml').write_text('workers: 2\nweb_port: 7000\n')
    (path / 'bad.yaml').write_text('web_port: [1,\n')
    before = os.getcwd()
    os.chdir(path)
    yield path
    os.chdir(before)


def outcome(call: Any) -> Any:
    """What ``call`` returns, or the ConfigError or UsageError it raises; any other
    exception fails the test."""
    try:
        return call()
    except (ConfigError, UsageError) as exc:
        return exc


def assert_clear(result: Any) -> None:
    """An error, if that is what ``result`` is, says one short line without the password."""
    if isinstance(result, Exception):
        message = str(result)
        assert message and message.splitlines() == [message], message
        assert len(message) <= 300, message
        assert PASSWORD not in message, message


def options_from(path: Path) -> Any:
    """What the worker makes of ``-A app -c PATH``, as its command starts."""
    return outcome(lambda: worker_options(parse(['-A', 'app', '-c', str(path)])))


@FUZZ_FILES
@given(config=CONFIGS)
def test_generated_config_files_give_options_or_one_clear_line(workdir, config):
    path = workdir / 'gen.yaml'
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    result = options_from(path)
    assert_clear(result)
    if not isinstance(result, Exception):
        options, _ = result
        for index in range(min(options.workers, 3)):
            options.settings_for({}, index)


@FUZZ_FILES
@given(text=YAML_TEXTS)
def test_yaml_pieces_give_options_or_one_clear_line(workdir, text):
    path = workdir / 'pieces.yaml'
    path.write_text(text, encoding='utf-8', errors='surrogatepass')
    assert_clear(options_from(path))


@FUZZ_FILES
@given(data=st.binary(max_size=200))
def test_any_bytes_as_a_config_file_give_one_clear_line(workdir, data):
    path = workdir / 'bytes.yaml'
    path.write_bytes(data)
    assert_clear(options_from(path))


@FUZZ
@given(options=st.lists(OPTIONS, max_size=6), detach=st.booleans())
def test_any_option_values_give_options_or_one_clear_line(workdir, options, detach):
    argv = ['-A', 'app', *(arg for option in options for arg in option), *(['--detach'] if detach else [])]
    assert_clear(outcome(lambda: worker_options(parse(argv))))


@FUZZ
@given(argv=st.lists(st.one_of(ARG_TEXT, st.sampled_from(
    ['send', 'status', 'stop', 'restart', 'worker', '--json', '--cold', '--timeout', '-k',
     '--key=', '-wp', '--w', '--web', '-', '--', *VALUED_OPTIONS])), max_size=8))
def test_any_command_line_parses_or_gives_one_clear_line(workdir, argv):
    with contextlib.redirect_stdout(io.StringIO()):     # --help and --version print
        try:
            assert_clear(outcome(lambda: parse(argv)))
        except SystemExit as done:
            assert done.code in (None, 0)


DECODERS = [*CODECS.values(), WINDOW_KEYS]
JSON_PIECES = st.lists(st.sampled_from(
    ['[', ']', '{', '}', '"', ':', ',', '1', '-', '.', 'e', '9' * 5000, 'NaN', 'Infinity',
     'null', 'true', '\\u', '\\ud800', '\\', ' ', '\x00', 'é']), max_size=30).map(
    lambda pieces: ''.join(pieces).encode())
ENCODED = st.one_of(st.binary(max_size=100), JSON_PIECES,
                    st.sampled_from([b'[' * 100_000, b'{"a":' * 50_000, b'\xef\xbb\xbf[1,2]',
                                     '[1, 2]'.encode('utf-16'), b'\xff\xfe\x00']))


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@FUZZ
@given(value=JSON_VALUES)
def test_json_values_round_trip(value):
    codec = CODECS['json']
    assert codec.loads(codec.dumps(value)) == value


@FUZZ
@given(text=st.text(), data=st.binary())
def test_text_and_bytes_round_trip(text, data):
    assert CODECS['str'].loads(CODECS['str'].dumps(text)) == text
    assert CODECS['raw'].loads(CODECS['raw'].dumps(data)) == data


@FUZZ
@given(key=JSON_VALUES, start=st.floats(allow_nan=False) | st.integers())
def test_window_keys_round_trip(key, start):
    assert WINDOW_KEYS.loads(WINDOW_KEYS.dumps((key, start))) == (key, start)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


UNENCODABLE = st.one_of(st.sets(st.integers(), min_size=1), st.builds(object),
                        st.binary(min_size=1).map(lambda data: {'b': data}),
                        st.just({(1, 2): 'tuple key'}), st.just(nested(100_000)),
                        st.just(10 ** 5000), st.just('\ud800'), st.complex_numbers())


@FUZZ
@pytest.mark.parametrize('codec', DECODERS, ids=lambda codec: codec.name)
@given(data=ENCODED, value=UNENCODABLE)
def test_codecs_raise_value_errors_for_bad_bytes_and_type_or_value_errors_for_bad_values(
        codec, data, value):
    try:
        codec.loads(data)
    except ValueError as exc:
        assert len(str(exc)) <= 200
    with contextlib.suppress(TypeError, ValueError):
        codec.dumps(value)
