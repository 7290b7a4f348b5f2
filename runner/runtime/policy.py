"""What happens to a record an agent cannot process: dead-lettered, skipped, or counted.

Every record taken off the normal path is logged and counted (``GET /``
shows the counts per agent, and the last few such records).  A dead letter
keeps the record's key, value and headers, and adds headers saying why and
where it came from; a record too large for the producer is dead-lettered cut
to fit, with headers saying so and giving its original size (:func:`fitted`).
A dead letter is sent through the record's own context, so it is written (or,
under exactly-once, committed) before the record's offset is, and dropped with
the record's other outputs if its partition moves away before the next commit.
"""

import logging
import threading
import time
from collections import deque
from typing import Any

from ..app.agents import Agent
from ..errors import OutputRefused
from .context import AgentContext

log = logging.getLogger(__name__)

#: The longest error text a dead letter's header carries.
MAX_ERROR_TEXT = 1000
#: Bytes a dead letter cut to fit leaves for the framing of the record and its batch.
FRAMING = 1024
#: Records taken off the normal path that an agent's policy remembers (see ``recent``).
RECENT_KEPT = 20


def error_text(exc: BaseException) -> str:
    """One line naming the exception, cut to MAX_ERROR_TEXT characters."""
    text = ' '.join(f'{type(exc).__name__}: {exc}'.split())
    return text[:MAX_ERROR_TEXT]


def where(record: Any) -> str:
    return f'{record.topic}[{record.partition}]@{record.offset}'


class ErrorPolicy:
    """One agent's way with failing records, and its counts (shared by its threads)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._lock = threading.Lock()
        self.counts = {'failed': 0, 'dead_lettered': 0, 'skipped': 0, 'retried': 0}
        #: The last :data:`RECENT_KEPT` records retried, skipped or dead-lettered, oldest
        #: first: ``at`` (Unix time), ``agent``, ``record`` (``topic[p]@offset``),
        #: ``action`` (what the count is called) and ``error``.
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)

    def unreadable(self, context: AgentContext, record: Any, exc: Exception) -> None:
        """A record the topic's serializers cannot decode: never retried."""
        self.set_aside(context, record, exc, 'unreadable')

    def set_aside(self, context: AgentContext, record: Any, exc: BaseException,
                  reason: str) -> None:
        """Dead-letter ``record`` (or skip it, if the agent says so), logged and counted."""
        if self.agent.on_error == 'skip':
            self._count('skipped', record, f'{reason}: {error_text(exc)}')
            log.warning('agent %s skipped %s (%s): %s', self.agent.name, where(record), reason,
                        error_text(exc))
            return
        self._dead_letter(context, record, error_text(exc), reason)

    def skipped_by_operator(self, context: AgentContext, record: Any, error: str) -> None:
        """The record its partition stopped at (``error``), skipped with ``runner skip``."""
        self._dead_letter(context, record, error, 'skipped by operator')

    def _dead_letter(self, context: AgentContext, record: Any, error: str, reason: str) -> None:
        topic = self.agent.dead_letter_topic
        headers = self._headers(record, error, reason)
        try:
            context.send(topic, record.key, record.value, headers)
        except OutputRefused:          # too large for the producer: never loop on it
            context.send(topic, *fitted(record.key, record.value, headers,
                                        context.slot.producer.max_request_size))
            log.warning('agent %s: %s is too large to dead-letter whole; its copy is cut to '
                        'fit (header runner-cut)', self.agent.name, where(record))
        self._count('dead_lettered', record, f'{reason}: {error}')
        log.warning('agent %s sent %s to %s (%s): %s', self.agent.name, where(record),
                    topic.name, reason, error)

    def raised(self) -> None:
        """The agent raised on a record (counted once per try)."""
        self._count('failed')

    def retried(self, record: Any, exc: BaseException, attempt: int) -> None:
        self._count('retried', record, error_text(exc))
        log.warning('agent %s raised on %s (attempt %d of %d), trying it again: %s',
                    self.agent.name, where(record), attempt, self.agent.retries + 1,
                    error_text(exc))

    def _count(self, what: str, record: Any = None, error: str = '') -> None:
        """Count one ``what``; a ``record`` is remembered in ``recent`` too."""
        with self._lock:
            self.counts[what] += 1
            if record is not None:
                self.recent.append({'at': round(time.time(), 3), 'agent': self.agent.name,
                                    'record': where(record), 'action': what, 'error': error})

    def _headers(self, record: Any, error: str, reason: str) -> list:
        own = [('runner-reason', reason), ('runner-error', error),
               ('runner-agent', self.agent.name), ('runner-topic', record.topic),
               ('runner-partition', str(record.partition)),
               ('runner-offset', str(record.offset)),
               ('runner-timestamp', str(record.timestamp))]
        kept = [(k, v) for k, v in (record.headers or ()) if not k.startswith('runner-')]
        return kept + [(k, v.encode()) for k, v in own]


def fitted(key: bytes | None, value: bytes | None, headers: list,
           limit: int) -> tuple[bytes | None, bytes | None, list]:
    """A record's key, value and headers cut to fit in ``limit`` bytes: the value is cut
    (and the key too, if it alone takes more than half the room), and headers
    ``runner-cut`` (``value`` or ``key, value``), ``runner-value-size`` and
    ``runner-key-size`` (when cut) give what was cut and the original sizes."""
    room = max(0, limit - FRAMING - sum(len(k) + len(v or b'') for k, v in headers))
    cut_key = key is not None and len(key) > room // 2
    kept_key = key[:room // 2] if cut_key else key
    kept_value = None if value is None else value[:room - len(kept_key or b'')]
    notes = [('runner-cut', b'key, value' if cut_key else b'value'),
             ('runner-value-size', str(len(value or b'')).encode())]
    if cut_key:
        notes.append(('runner-key-size', str(len(key)).encode()))
    return kept_key, kept_value, headers + notes
