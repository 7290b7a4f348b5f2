"""Word count: split sentences into words, then count each word.

Run it with ``python runner.py -A wordcount worker`` from this directory
(or ``-A examples.wordcount`` from the repository root).
"""

import runner

app = runner.App('wordcount', broker='kafka://localhost:9092')

sentences = app.topic('sentences', partitions=4, value_serializer='str')
words = app.topic('words', partitions=4, value_serializer='str')
word_counts = app.topic('word-counts', partitions=4, config={'cleanup.policy': 'compact'})

#: Counts kept by this slot for the words of its partitions.
counts: dict[str, int] = {}


@app.agent(sentences)
def split(stream):
    """Re-key each sentence's words so that one partition sees every copy of a word."""
    for sentence in stream:
        for word in sentence.lower().split():
            words.send(key=word, value=word)


@app.agent(words, sink=[word_counts])
def count(stream):
    """Count words; each new count goes to ``word-counts`` under the word's key."""
    for word in stream:
        counts[word] = counts.get(word, 0) + 1
        yield counts[word]
