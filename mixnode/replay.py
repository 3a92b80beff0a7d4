"""The replay store: Sphinx tags seen per epoch, in memory and durably in SQLite.

A mix drops any packet whose tag it has already processed in the same epoch. Tags are checked
against an in-memory set (fast, thread-safe with a lock) and written to SQLite
(:func:`anonmail.daemon.sqlite.connect`: WAL, ``synchronous=FULL``) in batches **before** the packets of that batch are forwarded, so a crash
or restart never reopens the window: on start, the current and previous epochs' tags are loaded
back. Epochs older than the previous one are purged (their keys are gone, so their packets
cannot be processed anyway), which keeps the store bounded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from anonmail.daemon.sqlite import PerThread, transaction, translated

__all__ = ["ReplayStore"]

_STORE = "replay store"


class ReplayStore:
    """Tags per epoch; ``check_and_add`` is atomic across threads; ``persist`` is the durable step."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._tags: dict[int, set[bytes]] = {}
        # secure_delete: a purged tag is overwritten, so a seized disk cannot show which packets passed.
        self._conns = PerThread(self.path, store=_STORE)
        with translated(_STORE, self.path, "create the table"):
            self._conns.get().execute(
                "CREATE TABLE IF NOT EXISTS [tags] ([epoch] INTEGER, [tag] BLOB, PRIMARY KEY ([epoch], [tag]))"
            )

    def load(self, epochs: Iterable[int]) -> int:
        """Load the tags of these epochs into memory (on start); returns how many."""
        count = 0
        conn = self._conns.get()
        for epoch in epochs:
            with translated(_STORE, self.path, "load tags"):
                rows = conn.execute("SELECT tag FROM tags WHERE epoch = ?", [epoch]).fetchall()
            with self._lock:
                bucket = self._tags.setdefault(epoch, set())
                bucket.update(bytes(r[0]) for r in rows)
            count += len(rows)
        return count

    def check_and_add(self, epoch: int, tag: bytes) -> bool:
        """True if ``tag`` was already seen in ``epoch`` (a replay); otherwise remember it."""
        with self._lock:
            bucket = self._tags.setdefault(epoch, set())
            if tag in bucket:
                return True
            bucket.add(tag)
            return False

    def persist(self, epoch: int, tags: list[bytes]) -> None:
        """Durably record tags (one transaction, fsynced) before their packets move on."""
        if not tags:
            return
        with transaction(self._conns.get(), store=_STORE, path=self.path, action="record tags") as conn:
            conn.executemany("INSERT OR IGNORE INTO tags (epoch, tag) VALUES (?, ?)", [(epoch, t) for t in tags])

    def purge_before(self, epoch: int) -> None:
        """Forget epochs older than ``epoch`` (memory and disk)."""
        with self._lock:
            for old in [e for e in self._tags if e < epoch]:
                del self._tags[old]
        with transaction(self._conns.get(), store=_STORE, path=self.path, action="purge") as conn:
            conn.execute("DELETE FROM tags WHERE epoch < ?", [epoch])

    def count(self, epoch: int) -> int:
        """Tags held in memory for an epoch."""
        with self._lock:
            return len(self._tags.get(epoch, ()))

    def close(self) -> None:
        """Close every connection this store opened (call once, when the node stops)."""
        self._conns.close()
