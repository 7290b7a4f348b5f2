"""Testing the word count app (``wordcount.py``) without Kafka, with :mod:`runner.testing`.

Run it from the repository root with ``python -m pytest examples/test_wordcount.py``.
Each ``t.send`` returns once the sentence, and every word it was split into, has
been processed: there is nothing to wait for.
"""

import pytest
import wordcount
from kafka.partitioner.default import murmur2

import runner.testing

pytest_plugins = ['runner.testing.pytest_plugin']      # the app_run fixture


def test_counts_every_word_of_every_sentence():
    with runner.testing.run(wordcount.app) as t:
        t.send('sentences', value='the quick brown fox')
        t.send('sentences', value='The lazy dog and the fox')
        counts = t.table('counts')
        assert counts['the'] == 3
        assert counts['fox'] == 2
        assert counts['cat'] == 0                   # the table's default


def test_each_word_is_sent_keyed_by_itself_to_the_partition_a_java_producer_picks():
    with runner.testing.run(wordcount.app) as t:
        t.send('sentences', value='to be or not to be')
        words = t.outputs('words')
        assert [(word.key, word.value) for word in words] == [
            ('to', 'to'), ('be', 'be'), ('or', 'or'), ('not', 'not'), ('to', 'to'),
            ('be', 'be')]
        for word in words:
            assert word.partition == (murmur2(word.key.encode()) & 0x7fffffff) % 4


def test_a_commit_writes_each_count_to_the_changelog(app_run):
    t = app_run(wordcount.app)
    t.send('sentences', value='one two two')
    t.commit()
    changelog = {record.key: record.value
                 for record in t.outputs('wordcount-counts-changelog')}
    assert changelog == {'one': 1, 'two': 2}


def test_a_sentence_that_is_not_text_is_dead_lettered():
    with runner.testing.run(wordcount.app) as t:
        t.send('sentences', value=b'\xff\xfe not utf-8')
        [letter] = t.outputs('wordcount-wordcount.split-dlq')
        assert dict(letter.headers)['runner-reason'] == b'unreadable'
        assert t.table('counts')['not'] == 0


@pytest.mark.parametrize('sentence', ['', '   '])
def test_an_empty_sentence_counts_nothing(sentence):
    with runner.testing.run(wordcount.app) as t:
        t.send('sentences', value=sentence)
        assert t.outputs('words') == []
