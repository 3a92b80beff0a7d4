"""The replay store: Sphinx tags seen per epoch, in a bounded filter and durably in SQLite.

A mix drops any packet whose tag it has already processed in the same epoch. Tags are checked
against one :class:`~mixnode.bloom.BloomFilter` per epoch (fixed memory, sized for
``capacity`` tags at ``fp_rate``; thread-safe with a lock) and written to SQLite
(:func:`anonmail.daemon.sqlite.connect`: WAL, ``synchronous=FULL``) in batches **before** the
packets of that batch are forwarded (threads persisting at once share one commit,
:meth:`ReplayStore.persist_many`; a commit is one row per epoch, its tags concatenated, which
costs SQLite a twentieth of a row per tag), so a crash
or restart never reopens the window: on start, the current and previous epochs' tags are loaded
back into fresh filters. Epochs older than the previous one are purged (their keys are gone, so
their packets cannot be processed anyway), which keeps memory and disk bounded.

Memory: three epochs' filters at most, e.g. 3 x 7.0 MiB at the default 2,000,000 tags per epoch
and 1e-6 false positives (an honest packet dropped as a replay once in a million); beyond its
capacity a filter's false-positive rate rises, and :meth:`ReplayStore.over_capacity` says so.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from anonmail.daemon.sqlite import PerThread, transaction, translated
from anonmail.errors import StoreError
from mixnode.bloom import BloomFilter

__all__ = ["ReplayStore", "DEFAULT_CAPACITY", "FP_RATE"]

#: Tags per epoch a filter is sized for (about 555 packets per second for an hour).
DEFAULT_CAPACITY = 2_000_000
#: False-positive rate of a filter at its capacity.
FP_RATE = 1e-6

_STORE = "replay store"


class ReplayStore:
    """Tags per epoch; ``check_and_add`` is atomic across threads; ``persist`` is the durable step."""

    def __init__(self, path: str | Path, *, capacity: int = DEFAULT_CAPACITY, fp_rate: float = FP_RATE) -> None:
        self.path = Path(path)
        self.capacity = capacity
        self.fp_rate = fp_rate
        self._lock = threading.Lock()
        self._tags: dict[int, BloomFilter] = {}
        # Group commit (persist_many): rows queued for generation _next; _done: last committed.
        self._group = threading.Condition()
        self._queued: list[tuple[int, bytes]] = []
        self._next, self._done, self._committing = 1, 0, False
        self._failed: dict[int, StoreError] = {}
        # secure_delete: a purged tag is overwritten, so a seized disk cannot show which packets passed.
        self._conns = PerThread(self.path, store=_STORE)
        with translated(_STORE, self.path, "create the tables"):
            conn = self._conns.get()
            # One row per commit and tag size, the tags concatenated: a row costs what a tag did.
            conn.execute("CREATE TABLE IF NOT EXISTS [tag_batches] ([epoch] INTEGER, [size] INTEGER, [tags] BLOB)")
            # One row per tag: what files written before tag_batches hold (still loaded and purged).
            conn.execute("CREATE TABLE IF NOT EXISTS [tags] ([epoch] INTEGER, [tag] BLOB, PRIMARY KEY ([epoch], [tag]))")

    def load(self, epochs: Iterable[int]) -> int:
        """Load the tags of these epochs into memory (on start); returns how many."""
        count = 0
        conn = self._conns.get()
        for epoch in epochs:
            with translated(_STORE, self.path, "load tags"):
                tags = [bytes(row[0]) for row in conn.execute("SELECT tag FROM tags WHERE epoch = ?", [epoch])]
                for size, blob in conn.execute("SELECT size, tags FROM tag_batches WHERE epoch = ? AND size > 0",
                                               [epoch]):
                    tags += [bytes(blob[i : i + size]) for i in range(0, len(blob), size)]
            with self._lock:
                bucket = self._filter(epoch)
                for tag in tags:
                    if not bucket.add(tag):
                        count += 1
        return count

    def _filter(self, epoch: int) -> BloomFilter:
        bucket = self._tags.get(epoch)
        if bucket is None:
            bucket = self._tags[epoch] = BloomFilter(self.capacity, self.fp_rate)
        return bucket

    def check_and_add(self, epoch: int, tag: bytes) -> bool:
        """True if ``tag`` was already seen in ``epoch`` (a replay); otherwise remember it."""
        with self._lock:
            return self._filter(epoch).add(tag)

    def persist(self, epoch: int, tags: list[bytes]) -> None:
        """Durably record tags (fsynced) before their packets move on; StoreError if they are not."""
        self.persist_many({epoch: tags})

    def persist_many(self, tags: dict[int, list[bytes]]) -> None:
        """Durably record tags of several epochs; returns once they are committed (group commit).

        Threads that persist at the same time share one transaction: the first to find no commit
        running commits every row queued so far, the others wait for the commit that holds
        theirs. Each caller still returns only after its own tags are on disk.
        """
        rows = [(epoch, tag) for epoch, batch in tags.items() for tag in batch]
        if not rows:
            return
        with self._group:
            self._queued.extend(rows)
            mine = self._next
            while self._done < mine:
                if not self._committing:
                    self._committing = True
                    batch, self._queued = self._queued, []
                    self._next += 1
                    break
                self._group.wait()
            else:
                error = self._failed.get(mine)
                if error is not None:
                    raise error
                return
        error = None
        try:
            groups: dict[tuple[int, int], list[bytes]] = {}
            for epoch, tag in batch:
                groups.setdefault((epoch, len(tag)), []).append(tag)
            with transaction(self._conns.get(), store=_STORE, path=self.path, action="record tags") as conn:
                conn.executemany("INSERT INTO tag_batches (epoch, size, tags) VALUES (?, ?, ?)",
                                 [(epoch, size, b"".join(group)) for (epoch, size), group in groups.items()])
        except StoreError as exc:
            error = exc
        with self._group:
            self._committing = False
            self._done = mine
            if error is not None:
                self._failed[mine] = error
            for old in [g for g in self._failed if g < mine - 1000]:
                del self._failed[old]
            self._group.notify_all()
        if error is not None:
            raise error

    def purge_before(self, epoch: int) -> None:
        """Forget epochs older than ``epoch`` (memory and disk)."""
        with self._lock:
            for old in [e for e in self._tags if e < epoch]:
                del self._tags[old]
        with transaction(self._conns.get(), store=_STORE, path=self.path, action="purge") as conn:
            conn.execute("DELETE FROM tags WHERE epoch < ?", [epoch])
            conn.execute("DELETE FROM tag_batches WHERE epoch < ?", [epoch])

    def count(self, epoch: int) -> int:
        """Distinct tags added to an epoch's filter."""
        with self._lock:
            bucket = self._tags.get(epoch)
            return bucket.count if bucket is not None else 0

    def memory_bytes(self) -> int:
        """Bytes held by the filters (fixed per epoch, whatever the traffic)."""
        with self._lock:
            return sum(b.nbytes for b in self._tags.values())

    def over_capacity(self) -> list[int]:
        """Epochs whose filter holds more tags than it is sized for."""
        with self._lock:
            return sorted(e for e, b in self._tags.items() if b.over_capacity)

    def close(self) -> None:
        """Close every connection this store opened (call once, when the node stops)."""
        self._conns.close()
