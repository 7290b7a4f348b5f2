"""One table partition's local state: a LevelDB directory (plyvel).

Values live under ``b'd' + key``; ``b'm:position'`` records which changelog
(topic id) and offset the stored values reflect.  Values and position are
written in one ``WriteBatch``, so the position never claims more than the
values hold.
"""

import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import plyvel

DATA = b'd'
DATA_END = b'e'  # first byte after the data prefix
POSITION = b'm:position'


class PartitionStore:
    """LevelDB for one partition of one table; safe to use from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = plyvel.DB(str(self.path), create_if_missing=True)

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(DATA + key)

    def items(self, start: bytes = b'') -> Iterator[tuple[bytes, bytes]]:
        """Stored (key, value) pairs in key order, from ``start`` on."""
        with self._db.iterator(start=DATA + start, stop=DATA_END) as iterator:
            for key, value in iterator:
                yield key[1:], value

    def iter_keys(self) -> Iterator[bytes]:
        """Stored keys in order."""
        with self._db.iterator(start=DATA, stop=DATA_END, include_value=False) as iterator:
            for key in iterator:
                yield key[1:]

    def position(self) -> tuple[str | None, int]:
        """(changelog topic id, next changelog offset) the values reflect; (None, 0) when new."""
        raw = self._db.get(POSITION)
        if raw is None:
            return None, 0
        position = json.loads(raw)
        return position['topic_id'], position['offset']

    def write(self, changes: Iterable[tuple[bytes, bytes | None]], topic_id: str | None,
              offset: int) -> None:
        """Apply changes (``None`` deletes) and the new position atomically."""
        with self._db.write_batch() as batch:
            for key, value in changes:
                if value is None:
                    batch.delete(DATA + key)
                else:
                    batch.put(DATA + key, value)
            batch.put(POSITION, json.dumps({'topic_id': topic_id, 'offset': offset}).encode())

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()

    def destroy(self) -> None:
        """Close and delete the files (state that can no longer be trusted)."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
