"""The kafka-python workarounds are applied only to the versions they were verified on."""

import pytest

from runner.errors import ConfigError
from runner.kafka import fixes


def test_other_kafka_python_versions_are_refused_with_one_line(monkeypatch):
    monkeypatch.setattr(fixes.kafka, '__version__', '3.1.0')
    with pytest.raises(ConfigError, match='^kafka-python 3.1.0 is installed, but runner is '
                                          r'verified with 3\.0\.12 only: pip install '
                                          '"kafka-python==3.0.12"$'):
        fixes.install()
