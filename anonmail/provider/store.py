"""The provider's mailbox store: accounts and stored entries in SQLite (sqlite-utils).

Durability is the point of this store: the provider sends a packet's ACK only after the entry
is committed here, so ``synchronous=FULL`` (WAL) makes a committed batch survive a crash or a
power cut. ``secure_delete=ON`` overwrites deleted entries, so a confirmed (deleted) message is
gone from the file, not merely unlinked.

Tables::

    accounts(mailbox_id BLOB PK, identity BLOB, created REAL, certs BLOB)
    entries(id INTEGER PK AUTOINCREMENT, mailbox_id BLOB, kind INTEGER, data BLOB, stored_at REAL,
            entry_id INTEGER UNIQUE)
    prekeys(mailbox_id BLOB PK, signed BLOB)                the user's latest upload, one-time prekeys removed
    one_time(mailbox_id BLOB, key_id INTEGER, key BLOB)     one-time prekeys, each handed out once, then deleted

``certs`` is the concatenation of the encryption-key certificates the user published (each
:attr:`EncryptionKeyCert.CERT_BYTES` long), verified by the caller.

Two ids per entry. ``id`` is internal: it orders a mailbox oldest first and is never shown.
``entry_id`` is what the user sees (in fetched entries, in confirms): a random number in
[1, 2**63) (SQLite integers are signed 64-bit), unique in the store. A global counter would let
any registered user read the provider's total delivery rate off the gaps between the ids of
their own entries; random ids tell nothing. A deleted id coming back for a newer entry, so that
a late ``confirm`` deletes it, takes a 63-bit collision. A store written before random ids
existed gets them when it is opened (:meth:`MailboxStore._migrate`); a client that fetched an
entry under its old id and confirms it late only fetches it again.

Methods block: the provider calls them from worker threads, or inline when ``workers = 0``.
One connection (:func:`anonmail.daemon.sqlite.connect`) is shared under a lock. Every SQLite
failure becomes a :class:`~anonmail.errors.StoreError` naming the store and the operation
(never user data).
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from anonmail.core.keys import EncryptionKeyCert
from anonmail.core.mailproto import ENTRY_FRAGMENT, ENTRY_ID_LIMIT, ENTRY_REPLY, Entry
from anonmail.daemon.sqlite import connect, transaction, translated

__all__ = ["MailboxStore", "Account", "NewEntry", "Usage"]

_CERT_BYTES = EncryptionKeyCert.CERT_BYTES
_STORE = "mailbox store"


@dataclass(frozen=True, slots=True)
class Account:
    """A registered user: mailbox id, identity public key, when registered, published certs."""

    mailbox_id: bytes
    identity: bytes
    created: float
    certs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to store: which mailbox, what kind (ENTRY_FRAGMENT / ENTRY_REPLY), the data."""

    mailbox_id: bytes
    kind: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Usage:
    """What a mailbox holds: entries and bytes of data (for quotas)."""

    entries: int
    bytes: int


class MailboxStore:
    """Accounts and mailbox entries; every write is one durable transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = connect(self.path, store=_STORE)
        with self._errors("create the tables"):
            self.db = sqlite_utils.Database(self._conn)
            self.db["accounts"].create(
                {"mailbox_id": bytes, "identity": bytes, "created": float, "certs": bytes},
                pk="mailbox_id", if_not_exists=True,
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "mailbox_id BLOB NOT NULL, kind INTEGER NOT NULL, data BLOB NOT NULL, stored_at REAL NOT NULL, "
                "entry_id INTEGER)"
            )
            self.db["entries"].create_index(["mailbox_id", "id"], if_not_exists=True)
            self._conn.execute("CREATE TABLE IF NOT EXISTS prekeys (mailbox_id BLOB PRIMARY KEY, signed BLOB NOT NULL)")
            self._conn.execute("CREATE TABLE IF NOT EXISTS one_time (mailbox_id BLOB NOT NULL, key_id INTEGER NOT NULL,"
                               " key BLOB NOT NULL, PRIMARY KEY (mailbox_id, key_id))")
        self._migrate()

    def _migrate(self) -> None:
        """Give a store from before random entry ids its ``entry_id`` column, filled at random."""
        with self._errors("add random entry ids"):
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(entries)")}
        with self._write("add random entry ids"):
            if "entry_id" not in columns:
                self._conn.execute("ALTER TABLE entries ADD COLUMN entry_id INTEGER")
            rows = self._conn.execute("SELECT id FROM entries WHERE entry_id IS NULL").fetchall()
            for (row_id,) in rows:
                self._insert_with_fresh_id(
                    lambda entry_id, row_id=row_id: self._conn.execute(
                        "UPDATE entries SET entry_id = ? WHERE id = ?", [entry_id, row_id]))
            self._conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS entries_entry_id ON entries (entry_id)")

    @staticmethod
    def _insert_with_fresh_id(write) -> int:
        """Call ``write(entry_id)`` with a fresh random id, drawing again on the (2**-63) collision."""
        while True:
            entry_id = secrets.randbelow(ENTRY_ID_LIMIT - 1) + 1
            try:
                write(entry_id)
            except sqlite3.IntegrityError:
                continue
            return entry_id

    def _errors(self, action: str):
        return translated(_STORE, self.path, action)

    def _write(self, action: str):
        return transaction(self._conn, store=_STORE, path=self.path, action=action)

    def pragma(self, name: str) -> object:
        """The value of a PRAGMA (tests check the durability settings)."""
        with self._lock:
            return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    def close(self) -> None:
        """Close the connection (once, when the provider stops)."""
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ accounts

    def register(self, mailbox_id: bytes, identity: bytes, created: float, max_accounts: int | None = None) -> str:
        """Create an account: "created", "exists" (already there) or "full" (``max_accounts`` reached)."""
        with self._lock, self._write("register an account"):
            if self._conn.execute("SELECT 1 FROM accounts WHERE mailbox_id = ?", [mailbox_id]).fetchone():
                return "exists"
            if max_accounts is not None:
                (count,) = self._conn.execute("SELECT count(*) FROM accounts").fetchone()
                if count >= max_accounts:
                    return "full"
            self._conn.execute(
                "INSERT INTO accounts (mailbox_id, identity, created, certs) VALUES (?, ?, ?, ?)",
                [mailbox_id, identity, created, b""],
            )
            return "created"

    def account(self, mailbox_id: bytes) -> Account | None:
        """The account of a mailbox, or None."""
        with self._lock, self._errors("read an account"):
            row = self._conn.execute(
                "SELECT mailbox_id, identity, created, certs FROM accounts WHERE mailbox_id = ?", [mailbox_id]
            ).fetchone()
        if row is None:
            return None
        blob = bytes(row[3] or b"")
        certs = tuple(blob[i : i + _CERT_BYTES] for i in range(0, len(blob) - _CERT_BYTES + 1, _CERT_BYTES))
        return Account(bytes(row[0]), bytes(row[1]), float(row[2]), certs)

    def mailbox_ids(self) -> set[bytes]:
        """Every registered mailbox id (the provider keeps this set in memory)."""
        with self._lock, self._errors("list accounts"):
            return {bytes(r[0]) for r in self._conn.execute("SELECT mailbox_id FROM accounts")}

    def account_count(self) -> int:
        """How many accounts exist."""
        with self._lock, self._errors("count accounts"):
            return int(self._conn.execute("SELECT count(*) FROM accounts").fetchone()[0])

    def set_certs(self, mailbox_id: bytes, certs: Sequence[bytes]) -> None:
        """Replace the published certificates of an account (already verified by the caller)."""
        if any(len(c) != _CERT_BYTES for c in certs):
            raise ValueError(f"a certificate is {_CERT_BYTES} bytes")
        with self._lock, self._write("store certificates"):
            self._conn.execute("UPDATE accounts SET certs = ? WHERE mailbox_id = ?", [b"".join(certs), mailbox_id])

    # ------------------------------------------------------------------ prekeys

    def publish_prekeys(self, mailbox_id: bytes, signed: bytes, one_time: Sequence[tuple[int, bytes]],
                        max_held: int) -> int:
        """Replace the signed prekeys, add one-time prekeys (ids already held are ignored) up to ``max_held``;
        returns how many one-time prekeys are held now."""
        with self._lock, self._write("store prekeys"):
            self._conn.execute("INSERT OR REPLACE INTO prekeys (mailbox_id, signed) VALUES (?, ?)", [mailbox_id, signed])
            (held,) = self._conn.execute("SELECT count(*) FROM one_time WHERE mailbox_id = ?", [mailbox_id]).fetchone()
            for key_id, key in one_time:
                if held >= max_held:
                    break
                held += self._conn.execute("INSERT OR IGNORE INTO one_time (mailbox_id, key_id, key) VALUES (?, ?, ?)",
                                           [mailbox_id, key_id, key]).rowcount
            return int(held)

    def take_prekeys(self, mailbox_id: bytes, *, one_time: bool = True) -> tuple[bytes, bytes | None] | None:
        """(signed part, one one-time prekey or None) of a user, the one-time prekey deleted in the same
        transaction (secure_delete), so it is handed out once; None if the user published none.
        ``one_time=False``: the signed part only, no one-time prekey used up."""
        with self._lock, self._write("hand out prekeys"):
            row = self._conn.execute("SELECT signed FROM prekeys WHERE mailbox_id = ?", [mailbox_id]).fetchone()
            if row is None:
                return None
            if not one_time:
                return bytes(row[0]), None
            one = self._conn.execute("SELECT key_id, key FROM one_time WHERE mailbox_id = ? ORDER BY key_id LIMIT 1",
                                     [mailbox_id]).fetchone()
            if one is not None:
                self._conn.execute("DELETE FROM one_time WHERE mailbox_id = ? AND key_id = ?", [mailbox_id, one[0]])
            return bytes(row[0]), (bytes(one[1]) if one is not None else None)

    # ------------------------------------------------------------------ entries

    def store_many(self, entries: Iterable[NewEntry], stored_at: float) -> list[int]:
        """Store entries in ONE transaction, committed durably before returning; their ids."""
        return self._insert(entries, stored_at, trim_to=None)[0]

    def store_within_quota(self, entries: Sequence[NewEntry], stored_at: float,
                           quota: Usage) -> tuple[list[int], dict[bytes, Usage]]:
        """Store entries, then trim each mailbox they went to back to ``quota``, in ONE transaction.

        Trimming evicts the mailbox's oldest ACK replies first (losing one only makes its owner
        retransmit), then its oldest entries. Returns the new ids and what was evicted per mailbox.
        """
        return self._insert(entries, stored_at, trim_to=quota)

    def _insert(self, entries: Iterable[NewEntry], stored_at: float,
                trim_to: Usage | None) -> tuple[list[int], dict[bytes, Usage]]:
        rows = [(e.mailbox_id, e.kind, e.data, stored_at) for e in entries]
        for mailbox_id, kind, _, _ in rows:
            if kind not in (ENTRY_FRAGMENT, ENTRY_REPLY) or len(mailbox_id) != 16:
                raise ValueError("entries need a 16-byte mailbox id and kind ENTRY_FRAGMENT or ENTRY_REPLY")
        evicted: dict[bytes, Usage] = {}
        if not rows:
            return [], evicted
        ids: list[int] = []
        with self._lock, self._write(f"store {len(rows)} entries"):
            for row in rows:
                ids.append(self._insert_with_fresh_id(lambda entry_id, row=row: self._conn.execute(
                    "INSERT INTO entries (mailbox_id, kind, data, stored_at, entry_id) VALUES (?, ?, ?, ?, ?)",
                    [*row, entry_id])))
            if trim_to is not None:
                for mailbox_id in dict.fromkeys(r[0] for r in rows):
                    gone = self._trim(mailbox_id, trim_to)
                    if gone.entries:
                        evicted[mailbox_id] = gone
        return ids, evicted

    def _trim(self, mailbox_id: bytes, quota: Usage) -> Usage:
        count, size = self._conn.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM entries WHERE mailbox_id = ?", [mailbox_id]
        ).fetchone()
        gone = gone_bytes = 0
        while count > quota.entries or size > quota.bytes:
            row = self._conn.execute(
                "SELECT id, length(data) FROM entries WHERE mailbox_id = ? ORDER BY kind = ? DESC, id LIMIT 1",
                [mailbox_id, ENTRY_REPLY]).fetchone()
            if row is None:
                break
            self._conn.execute("DELETE FROM entries WHERE id = ?", [row[0]])
            count, size = count - 1, size - int(row[1])
            gone, gone_bytes = gone + 1, gone_bytes + int(row[1])
        return Usage(gone, gone_bytes)

    def fetch(self, mailbox_id: bytes, n: int) -> tuple[list[Entry], int]:
        """The oldest ``n`` entries of a mailbox and how many more remain after them."""
        with self._lock, self._errors("fetch entries"):
            rows = self._conn.execute(
                "SELECT entry_id, kind, data FROM entries WHERE mailbox_id = ? ORDER BY id LIMIT ?", [mailbox_id, n]
            ).fetchall()
            (total,) = self._conn.execute("SELECT count(*) FROM entries WHERE mailbox_id = ?", [mailbox_id]).fetchone()
        remaining = max(0, int(total) - len(rows))
        return [Entry(int(k), int(i), remaining, bytes(d)) for i, k, d in rows], remaining

    def delete(self, mailbox_id: bytes, ids: Iterable[int]) -> int:
        """Delete those of ``ids`` that belong to this mailbox (others are ignored); how many."""
        wanted = sorted({int(i) for i in ids if 0 < int(i) < ENTRY_ID_LIMIT})
        if not wanted:
            return 0
        with self._lock, self._write("delete entries"):
            marks = ",".join("?" * len(wanted))
            cursor = self._conn.execute(
                f"DELETE FROM entries WHERE mailbox_id = ? AND entry_id IN ({marks})", [mailbox_id, *wanted]
            )
            return int(cursor.rowcount)

    def usage(self, mailbox_id: bytes) -> Usage:
        """Entries and data bytes a mailbox holds (for its quota)."""
        with self._lock, self._errors("measure a mailbox"):
            count, size = self._conn.execute(
                "SELECT count(*), coalesce(sum(length(data)), 0) FROM entries WHERE mailbox_id = ?", [mailbox_id]
            ).fetchone()
        return Usage(int(count), int(size))

    def totals(self) -> Usage:
        """Entries and data bytes over all mailboxes (for the status file)."""
        with self._lock, self._errors("measure the store"):
            count, size = self._conn.execute(
                "SELECT count(*), coalesce(sum(length(data)), 0) FROM entries"
            ).fetchone()
        return Usage(int(count), int(size))

