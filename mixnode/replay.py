"""The replay store: Sphinx tags seen per epoch, in memory and durably in SQLite.

A mix drops any packet whose tag it has already processed in the same epoch. Tags are checked
against an in-memory set (fast, thread-safe with a lock) and written to SQLite (WAL,
``synchronous=FULL``) in batches **before** the packets of that batch are forwarded, so a crash
or restart never reopens the window: on start, the current and previous epochs' tags are loaded
back. Epochs older than the previous one are purged (their keys are gone, so their packets
cannot be processed anyway), which keeps the store bounded.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

import sqlite_utils

from anonmail.errors import StoreError

__all__ = ["ReplayStore"]


class ReplayStore:
    """Tags per epoch; ``check_and_add`` is atomic across threads; ``persist`` is the durable step."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._tags: dict[int, set[bytes]] = {}
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        try:
            db = self._db()
            db["tags"].create({"epoch": int, "tag": bytes}, pk=("epoch", "tag"), if_not_exists=True)
        except sqlite3.Error as exc:
            raise StoreError(f"replay store {self.path}: {exc}") from exc

    def _db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            db = sqlite_utils.Database(conn)
            self._local.db = db
            with self._lock:
                self._conns.append(conn)
        return db

    def load(self, epochs: Iterable[int]) -> int:
        """Load the tags of these epochs into memory (on start); returns how many."""
        count = 0
        db = self._db()
        for epoch in epochs:
            rows = db.execute("SELECT tag FROM tags WHERE epoch = ?", [epoch]).fetchall()
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
        conn = self._db().conn
        try:
            with conn:
                conn.executemany("INSERT OR IGNORE INTO tags (epoch, tag) VALUES (?, ?)", [(epoch, t) for t in tags])
        except sqlite3.Error as exc:
            raise StoreError(f"replay store {self.path}: cannot record tags: {exc}") from exc

    def purge_before(self, epoch: int) -> None:
        """Forget epochs older than ``epoch`` (memory and disk)."""
        with self._lock:
            for old in [e for e in self._tags if e < epoch]:
                del self._tags[old]
        conn = self._db().conn
        try:
            with conn:
                conn.execute("DELETE FROM tags WHERE epoch < ?", [epoch])
        except sqlite3.Error as exc:
            raise StoreError(f"replay store {self.path}: cannot purge: {exc}") from exc

    def count(self, epoch: int) -> int:
        """Tags held in memory for an epoch."""
        with self._lock:
            return len(self._tags.get(epoch, ()))

    def close(self) -> None:
        """Close every connection this store opened (call once, when the node stops)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
