"""The identity a slot keeps in its data directory: made once, durably, then read back."""

import os
import re

import pytest

from runner import platform


def test_the_identity_is_made_once_then_read_back(tmp_path):
    identity = platform.stable_identity(tmp_path)
    assert re.fullmatch('[0-9a-f]{32}', identity)
    assert platform.stable_identity(tmp_path) == identity
    assert sorted(path.name for path in tmp_path.iterdir()) == ['identity']


@pytest.mark.parametrize('text', ['', ' \n'])
def test_a_blank_identity_file_counts_as_missing(tmp_path, text):
    (tmp_path / 'identity').write_text(text)
    identity = platform.stable_identity(tmp_path)
    assert re.fullmatch('[0-9a-f]{32}', identity)
    assert (tmp_path / 'identity').read_text() == identity + '\n'


def test_a_new_identity_is_synced_before_and_after_it_is_renamed_into_place(tmp_path,
                                                                          monkeypatch):
    steps = []
    sync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: steps.append(('sync', os.readlink(
        f'/proc/self/fd/{fd}'))) or sync(fd))
    monkeypatch.setattr(os, 'replace', lambda source, target: steps.append(
        ('rename', str(target))) or replace(source, target))
    platform.stable_identity(tmp_path)
    scratch = f'{tmp_path}/.identity.{os.getpid()}.tmp'
    assert steps == [('sync', scratch), ('rename', f'{tmp_path}/identity'),
                     ('sync', str(tmp_path))]
