"""What a waiting command says: a progress line on a terminal, plain lines into a pipe."""

import io

from runner.progress import PLAIN_EVERY, Waiting


class Stream(io.StringIO):
    def __init__(self, terminal):
        super().__init__()
        self.terminal = terminal

    def isatty(self):
        return self.terminal


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def wait(terminal):
    stream, clock = Stream(terminal), Clock()
    with Waiting(stream, clock) as waiting:
        for step in range(25):
            clock.now = 100.0 + step
            waiting.say('pid 7 to stop (stopping, 1 of 2 slots ready)' if step < 20
                        else 'pid 7 to stop (stopping, 0 of 2 slots ready)')
    return stream.getvalue()


def test_into_a_pipe_a_line_when_the_wait_changes_and_every_10_seconds_while_it_does_not():
    assert PLAIN_EVERY == 10.0
    assert wait(terminal=False).splitlines() == [
        'runner: waiting for pid 7 to stop (stopping, 1 of 2 slots ready) (0s)',
        'runner: waiting for pid 7 to stop (stopping, 1 of 2 slots ready) (10s)',
        'runner: waiting for pid 7 to stop (stopping, 0 of 2 slots ready) (20s)']


def test_on_a_terminal_one_line_rewritten_in_place_and_cleared_at_the_end():
    text = wait(terminal=True)
    assert '\n' not in text and text.endswith('\r\x1b[K')
    shown = [part for part in text.split('\r\x1b[K') if part]
    assert len(shown) == 25 and shown[-1] == ('runner: waiting for pid 7 to stop '
                                              '(stopping, 0 of 2 slots ready) (24s)')


def test_a_wait_that_never_said_anything_leaves_nothing_on_a_terminal():
    stream = Stream(terminal=True)
    with Waiting(stream, Clock()):
        pass
    assert stream.getvalue() == ''
