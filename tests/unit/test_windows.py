"""Which windows an event falls in, and how long changelogs keep them."""

import pytest

from runner.app.windows import Windowing, WindowKeyCodec
from runner.errors import ConfigError


def test_tumbling_windows_do_not_overlap():
    windows = Windowing(60, 60, None)
    assert windows.starts(125) == [120.0]
    assert windows.starts(120) == [120.0] and windows.starts(119.9) == [60.0]


def test_hopping_windows_contain_the_event_and_start_on_steps():
    windows = Windowing(10, 3, None)
    assert windows.starts(10) == [3.0, 6.0, 9.0]
    assert windows.current(10) == 9.0
    assert all(start <= 10 < start + 10 for start in windows.starts(10))


@pytest.mark.parametrize(('size', 'step', 'expires'), [
    (0, 0, None), (10, 0, None), (10, 11, None), (-1, -1, None), (10, 10, -1), ('x', 1, None)])
def test_bad_windows_are_refused_as_config_errors(size, step, expires):
    with pytest.raises(ConfigError):
        Windowing(size, step, expires)


def test_window_keys_round_trip_and_share_a_prefix_per_key():
    codec = WindowKeyCodec()
    assert codec.loads(codec.dumps(('word', 60.0))) == ('word', 60.0)
    assert codec.dumps(('a', 1000.0)) == b'["a",1000.0]'
    assert codec.dumps(('a', 5.0)).startswith(codec.prefix('a'))
    assert not codec.dumps(('ab', 5.0)).startswith(codec.prefix('a'))
    assert codec.dumps((7, 5.0)).startswith(codec.prefix(7))


def test_the_changelog_keeps_windows_until_they_expire():
    assert Windowing(60, 60, 3600).retention_ms() == 2 * (60 + 3600) * 1000
