"""Word count: split sentences into words, count each word in a table.

Run it from this directory with ``python ../runner.py -A wordcount --workers 2``
(or ``-A examples.wordcount`` from the repository root), send sentences with
``python ../runner.py -A wordcount send sentences "the quick brown fox"``,
and ask any slot for a count: ``curl localhost:6066/tables/counts/the``.
"""

import runner

app = runner.App('wordcount', broker='kafka://localhost:9092')

sentences = app.topic('sentences', partitions=4, value_serializer='str')
words = app.topic('words', partitions=4, value_serializer='str')
counts = app.Table('counts', default=int, partitions=4)


@app.agent(sentences)
def split(stream):
    """Re-key each word by itself, so one partition sees every copy of a word."""
    for sentence in stream:
        for word in sentence.lower().split():
            words.send(key=word, value=word)


@app.agent(words)
def count(stream):
    """Count words; the table lives in the partition of the word."""
    for word in stream:
        counts[word] += 1
