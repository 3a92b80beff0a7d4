"""The agent's durable state in one SQLite file: contacts, keys, outbox, inbox, ACK bookkeeping.

SQLite is the interface between the CLI and a running agent (docs/design.md, "Roles"): ``anonmail send``
inserts into the outbox and returns; the agent picks the message up, fragments it, sends the
fragments in its Poisson payload slots and marks them acknowledged as ACKs return. Both open the
same file (:func:`anonmail.daemon.sqlite.connect`: WAL, ``synchronous=FULL``, ``secure_delete=ON``,
a busy timeout), so either may run without the other and nothing is lost when one of them crashes:

* a message is in ``outbox`` before ``send`` returns; its fragments are acknowledged one by one
  and it is *acknowledged* when all are;
* every transmission's SURB keys are stored before the packet leaves, so an ACK that arrives
  after a restart still opens;
* a received fragment is committed (``partials``) before the agent confirms it to the provider,
  and a completed message moves to ``inbox`` and into ``received_digests`` in one transaction,
  so a retransmitted duplicate is merged, never shown twice. That table outlives ``delete``, so
  it holds only a hash of (sender, message id) and the day: no list of correspondents;
* incomplete messages are bounded per sender and in total (oldest evicted first) and expire
  (:meth:`AgentStore.expire_partials`), so strangers cannot fill the disk with first fragments.

Secrets: encryption-key secrets, end-to-end sessions and prekeys (:mod:`anonmail.agent.sessionstore`)
are stored encrypted under a key derived from the identity seed (which lives only in the
passphrase-sealed key file), so the database alone opens nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from anonmail.agent.sessionstore import SESSION_SCHEMA, SessionCommit, SessionTables
from anonmail.daemon.sqlite import PerThread, transaction, translated
from anonmail.errors import ReassemblyError, StoreError

__all__ = ["AgentStore", "OutboxMessage", "InboxMessage", "SCHEMA_VERSION", "STATES", "MAX_PARTIALS_PER_SENDER",
           "MAX_PARTIAL_BYTES_PER_SENDER", "MAX_PARTIAL_BYTES"]

SCHEMA_VERSION = 1
_STORE = "agent store"
#: Incomplete messages kept per sender (a stranger can only fill a few slots of their own).
MAX_PARTIALS_PER_SENDER = 8
#: Bytes of incomplete messages kept per sender (two of the largest messages).
MAX_PARTIAL_BYTES_PER_SENDER = 8 * 1024 * 1024
#: Bytes of incomplete messages kept in all (many throwaway senders evict each other, oldest first).
MAX_PARTIAL_BYTES = 64 * 1024 * 1024
#: Outbox states, in order.
STATES = ("queued", "sending", "acknowledged", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (
    name TEXT PRIMARY KEY, address TEXT NOT NULL UNIQUE, added_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS contact_certs (
    fingerprint BLOB NOT NULL, identity BLOB NOT NULL, cert BLOB NOT NULL,
    not_before INTEGER NOT NULL, not_after INTEGER NOT NULL, PRIMARY KEY (fingerprint, cert));
CREATE TABLE IF NOT EXISTS my_keys (
    public BLOB PRIMARY KEY, secret_box BLOB NOT NULL, cert BLOB NOT NULL,
    not_before INTEGER NOT NULL, not_after INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, message_id BLOB NOT NULL UNIQUE, recipient TEXT NOT NULL,
    kind TEXT NOT NULL, subject TEXT NOT NULL, body BLOB NOT NULL, size INTEGER NOT NULL,
    fragments INTEGER NOT NULL, acked INTEGER NOT NULL DEFAULT 0, transmissions INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL, created_at REAL NOT NULL, acked_at REAL, error TEXT);
CREATE TABLE IF NOT EXISTS fragments (
    message_id BLOB NOT NULL, idx INTEGER NOT NULL, acked INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, last_sent REAL, PRIMARY KEY (message_id, idx));
CREATE TABLE IF NOT EXISTS surbs (
    surb_id BLOB PRIMARY KEY, message_id BLOB NOT NULL, idx INTEGER NOT NULL, keys BLOB NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS partials (
    sender_fpr BLOB NOT NULL, message_id BLOB NOT NULL, idx INTEGER NOT NULL, count INTEGER NOT NULL,
    total INTEGER NOT NULL, sender TEXT NOT NULL, data BLOB NOT NULL, first_seen REAL NOT NULL,
    PRIMARY KEY (sender_fpr, message_id, idx));
CREATE TABLE IF NOT EXISTS received_digests (
    digest BLOB PRIMARY KEY, day INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sender TEXT NOT NULL, message_id BLOB NOT NULL,
    subject TEXT NOT NULL, body BLOB NOT NULL, sent_at INTEGER NOT NULL, received_at REAL NOT NULL,
    read INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS invitations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, role TEXT NOT NULL, name TEXT, code TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', contact TEXT, created_at REAL NOT NULL,
    expires_at REAL);
"""
#: Columns added after schema version 1 shipped: (table, column, definition), added on open when missing.
_ADDED_COLUMNS = (("inbox", "kind", "TEXT NOT NULL DEFAULT 'mail'"),
                  # 1 once the contact's keys were confirmed: by an invitation or a compared fingerprint.
                  ("contacts", "verified", "INTEGER NOT NULL DEFAULT 0"),
                  ("outbox", "wire", "BLOB"))  # the message as encrypted for its session


@dataclass(frozen=True)
class OutboxMessage:
    """A row of the outbox as the CLI shows it."""

    id: int
    message_id: bytes
    recipient: str
    kind: str
    subject: str
    size: int
    fragments: int
    acked: int
    transmissions: int
    state: str
    created_at: float
    acked_at: float | None
    error: str | None = None


@dataclass(frozen=True)
class InboxMessage:
    """A received message."""

    id: int
    sender: str
    message_id: bytes
    subject: str
    body: bytes
    sent_at: int
    received_at: float
    read: bool
    #: ``mail`` (subject and text body) or ``rfc822`` (the body is a whole RFC 5322 message).
    kind: str = "mail"


def received_digest(sender_fpr: bytes, message_id: bytes) -> bytes:
    """What the store keeps of a received message for good: enough to merge a duplicate, not who sent it.

    The message id is 16 random bytes only its sender and recipient know, so the digest names
    no correspondent to whoever reads the database; a duplicate still finds its row.
    """
    data = len(sender_fpr).to_bytes(2, "big") + sender_fpr + message_id
    return hashlib.blake2b(data, digest_size=16, person=b"anonmail-recvd").digest()


def _forget_correspondents(conn: sqlite3.Connection) -> None:
    """Move an older store's ``received`` rows (sender, message id, time) to digests; drop the table."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'received'").fetchone():
        return
    with conn:  # one transaction; secure_delete zeroes the dropped pages
        rows = conn.execute("SELECT sender_fpr, message_id, at FROM received").fetchall()
        conn.executemany("INSERT OR IGNORE INTO received_digests VALUES (?, ?)",
                         [(received_digest(bytes(f), bytes(m)), int(at // 86400)) for f, m, at in rows])
        conn.execute("DROP TABLE received")


class AgentStore(SessionTables):
    """One user's database; safe to use from several threads (one connection per thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conns = PerThread(self.path, store=_STORE, private=True)
        #: Incomplete messages evicted to respect the bounds above (since this store was opened).
        self.partials_evicted = 0
        conn = self._conn()
        with translated(_STORE, self.path, "create the tables"):
            conn.executescript(_SCHEMA + SESSION_SCHEMA)
            for table, column, definition in _ADDED_COLUMNS:
                if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            with conn:
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                             [str(SCHEMA_VERSION)])
            _forget_correspondents(conn)
        version = self.meta("schema_version")
        if version != str(SCHEMA_VERSION):
            raise StoreError(f"agent store {self.path} has schema version {version}; "
                             f"this anonmail understands {SCHEMA_VERSION}", reason="schema", path=str(self.path))

    # ------------------------------------------------------------------ plumbing

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def _tx(self):
        """A write transaction (BEGIN IMMEDIATE ... COMMIT), durable on commit."""
        return transaction(self._conn(), store=_STORE, path=self.path)

    def _query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with translated(_STORE, self.path, "read"):
            return self._conn().execute(sql, list(args)).fetchall()

    def close(self) -> None:
        """Close every connection (call once, when done)."""
        self._conns.close()

    # ------------------------------------------------------------------ meta

    def meta(self, key: str) -> str | None:
        """A settings value (address, provider, ...), or None."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", [key])
        return rows[0][0] if rows else None

    def set_meta(self, **values: str) -> None:
        """Set settings values."""
        with self._tx() as c:
            c.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))

    # ------------------------------------------------------------------ contacts

    def add_contact(self, name: str, address: str, *, now: float) -> None:
        """Remember a petname for an address (both must be new)."""
        with self._tx() as c:
            try:
                c.execute("INSERT INTO contacts (name, address, added_at) VALUES (?, ?, ?)", [name, address, int(now)])
            except sqlite3.IntegrityError:
                row = c.execute("SELECT name, address FROM contacts WHERE name = ? OR address = ?",
                                [name, address]).fetchone()
                raise StoreError(f"contact {row[0]!r} already exists for {row[1]}") from None

    def contacts(self) -> list[tuple[str, str]]:
        """(name, address) pairs, by name."""
        return [(r[0], r[1]) for r in self._query("SELECT name, address FROM contacts ORDER BY name")]

    def contacts_verified(self) -> list[tuple[str, str, bool]]:
        """(name, address, verified) of every contact, by name."""
        return [(r[0], r[1], bool(r[2])) for r in self._query("SELECT name, address, verified FROM contacts ORDER BY name")]

    def set_verified(self, name: str) -> bool:
        """Mark a contact verified (its fingerprint was compared); False if there is no such contact."""
        with self._tx() as c:
            return bool(c.execute("UPDATE contacts SET verified = 1 WHERE name = ?", [name]).rowcount)

    def add_invited_contact(self, name: str, address: str, fingerprint: bytes, identity: bytes,
                            certs: Iterable[tuple[bytes, int, int]], *, now: float) -> str:
        """Add (or confirm) a contact an invitation introduced, verified, with its keys; its name.

        An address already in the book keeps its name and becomes verified; a new one takes
        ``name``, or ``name-2``, ``name-3``... if another contact has that name.
        """
        with self._tx() as c:
            row = c.execute("SELECT name FROM contacts WHERE address = ?", [address]).fetchone()
            if row is not None:
                c.execute("UPDATE contacts SET verified = 1 WHERE address = ?", [address])
                chosen = row[0]
            else:
                chosen, n = name, 1
                while c.execute("SELECT 1 FROM contacts WHERE name = ?", [chosen]).fetchone():
                    n += 1
                    chosen = f"{name}-{n}"
                c.execute("INSERT INTO contacts (name, address, added_at, verified) VALUES (?, ?, ?, 1)",
                          [chosen, address, int(now)])
            for blob, not_before, not_after in certs:
                c.execute("INSERT OR IGNORE INTO contact_certs VALUES (?, ?, ?, ?, ?)",
                          [fingerprint, identity, blob, not_before, not_after])
            return chosen

    # ------------------------------------------------------------------ invitations (CLI <-> agent)

    def request_invitation(self, role: str, name: str | None, code: str, *, now: float) -> int:
        """The CLI asks the agent to invite (``role`` "invite") or accept a code ("accept"); the row id."""
        with self._tx() as c:
            return int(c.execute("INSERT INTO invitations (role, name, code, state, created_at) VALUES"
                                 " (?, ?, ?, 'requested', ?)", [role, name, code, now]).lastrowid)

    def invitations(self, *states: str) -> list[dict]:
        """Invitation rows (all, or those in ``states``), oldest first."""
        where = f"WHERE state IN ({', '.join('?' * len(states))})" if states else ""
        rows = self._query("SELECT id, role, name, code, state, detail, contact, created_at, expires_at FROM"
                           f" invitations {where} ORDER BY id", states)
        keys = ("id", "role", "name", "code", "state", "detail", "contact", "created_at", "expires_at")
        return [dict(zip(keys, r)) for r in rows]

    def invitation(self, ident: int) -> dict | None:
        """One invitation row."""
        found = [r for r in self.invitations() if r["id"] == ident]
        return found[0] if found else None

    def update_invitation(self, ident: int, *, state: str, only_from: tuple[str, ...] = (), **fields) -> bool:
        """Move an invitation to ``state`` (if it is in ``only_from``, when given); a final state wipes the code."""
        sets = {"state": state, **fields}
        if state in ("done", "failed", "expired", "cancelled"):
            sets["code"] = ""
        guard = f" AND state IN ({', '.join('?' * len(only_from))})" if only_from else ""
        with self._tx() as c:
            return bool(c.execute(f"UPDATE invitations SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?{guard}",
                                  [*sets.values(), ident, *only_from]).rowcount)

    def contact_address(self, name: str) -> str | None:
        """The address of a petname."""
        rows = self._query("SELECT address FROM contacts WHERE name = ?", [name])
        return rows[0][0] if rows else None

    def contact_name(self, address: str) -> str | None:
        """The petname of an address, if any."""
        rows = self._query("SELECT name FROM contacts WHERE address = ?", [address])
        return rows[0][0] if rows else None

    def add_contact_certs(self, fingerprint: bytes, identity: bytes, certs: Iterable[tuple[bytes, int, int]]) -> int:
        """Store verified encryption-key certificates of a contact; returns how many were new."""
        new = 0
        with self._tx() as c:
            for blob, not_before, not_after in certs:
                cur = c.execute("INSERT OR IGNORE INTO contact_certs VALUES (?, ?, ?, ?, ?)",
                                [fingerprint, identity, blob, not_before, not_after])
                new += cur.rowcount
        return new

    def forget_contact_certs(self, fingerprint: bytes) -> int:
        """Drop a contact's stored certificates (``contact refresh``: look them up again)."""
        with self._tx() as c:
            return c.execute("DELETE FROM contact_certs WHERE fingerprint = ?", [fingerprint]).rowcount

    def contact_certs(self, fingerprint: bytes) -> list[bytes]:
        """Certificates stored for a contact's fingerprint (newest first)."""
        rows = self._query("SELECT cert FROM contact_certs WHERE fingerprint = ? ORDER BY not_before DESC",
                           [fingerprint])
        return [bytes(r[0]) for r in rows]

    # ------------------------------------------------------------------ own keys

    def add_my_key(self, public: bytes, secret_box: bytes, cert: bytes, not_before: int, not_after: int) -> None:
        """Store one of our encryption keys (secret encrypted by the caller)."""
        with self._tx() as c:
            c.execute("INSERT INTO my_keys VALUES (?, ?, ?, ?, ?)", [public, secret_box, cert, not_before, not_after])

    def my_keys(self) -> list[tuple[bytes, bytes, bytes, int, int]]:
        """(public, secret_box, cert, not_before, not_after), newest first."""
        rows = self._query("SELECT public, secret_box, cert, not_before, not_after FROM my_keys "
                           "ORDER BY not_before DESC")
        return [(bytes(a), bytes(b), bytes(c), d, e) for a, b, c, d, e in rows]

    def drop_my_keys_before(self, not_after: int) -> int:
        """Delete our keys that expired before ``not_after`` (forward secrecy)."""
        with self._tx() as c:
            return c.execute("DELETE FROM my_keys WHERE not_after < ?", [not_after]).rowcount

    # ------------------------------------------------------------------ outbox

    def queue_message(self, *, message_id: bytes, recipient: str, kind: str, subject: str, body: bytes,
                      size: int, fragments: int, now: float, quota_bytes: int | None = None) -> int:
        """Put a message in the outbox (durably); StoreError(outbox_full) above ``quota_bytes``."""
        with self._tx() as c:
            if quota_bytes is not None:
                (pending,) = c.execute("SELECT COALESCE(SUM(size), 0) FROM outbox WHERE state IN ('queued', 'sending')"
                                       ).fetchone()
                if pending + size > quota_bytes:
                    raise OutboxFullError(pending, size, quota_bytes)
            cur = c.execute(
                "INSERT INTO outbox (message_id, recipient, kind, subject, body, size, fragments, state, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
                [message_id, recipient, kind, subject, body, size, fragments, now])
            c.executemany("INSERT INTO fragments (message_id, idx) VALUES (?, ?)",
                          [(message_id, i) for i in range(fragments)])
            return int(cur.lastrowid)

    def outbox(self, *, include_acknowledged: bool = True) -> list[OutboxMessage]:
        """Outbox rows, oldest first."""
        where = "" if include_acknowledged else "WHERE state != 'acknowledged'"
        rows = self._query(
            "SELECT id, message_id, recipient, kind, subject, size, fragments, acked, transmissions, state,"
            f" created_at, acked_at FROM outbox {where} ORDER BY id")
        return [OutboxMessage(r[0], bytes(r[1]), *r[2:]) for r in rows]

    def message_body(self, message_id: bytes) -> tuple[str, str, str, bytes, float] | None:
        """(recipient, kind, subject, body, created_at) of an outbox message."""
        rows = self._query("SELECT recipient, kind, subject, body, created_at FROM outbox WHERE message_id = ?",
                           [message_id])
        return (rows[0][0], rows[0][1], rows[0][2], bytes(rows[0][3]), rows[0][4]) if rows else None

    def fail_message(self, message_id: bytes, error: str) -> None:
        """Give up on a message that cannot be sent (the user sees ``error`` in the outbox)."""
        with self._tx() as c:
            c.execute("UPDATE outbox SET state = 'failed', error = ? WHERE message_id = ? AND state != 'acknowledged'",
                      [error, message_id])

    def unacked_fragments(self) -> list[tuple[bytes, int, int, float | None]]:
        """(message_id, idx, attempts, last_sent) of every fragment still waiting for its ACK, in order."""
        rows = self._query(
            "SELECT f.message_id, f.idx, f.attempts, f.last_sent FROM fragments f JOIN outbox o"
            " ON o.message_id = f.message_id WHERE f.acked = 0 AND o.state != 'failed' ORDER BY o.id, f.idx")
        return [(bytes(a), b, c, d) for a, b, c, d in rows]

    def record_transmission(self, message_id: bytes, idx: int, surb_id: bytes, keys: bytes, now: float) -> None:
        """Before a fragment's packet leaves: keep its SURB keys, count the attempt."""
        with self._tx() as c:
            c.execute("INSERT INTO surbs VALUES (?, ?, ?, ?, ?)", [surb_id, message_id, idx, keys, now])
            c.execute("UPDATE fragments SET attempts = attempts + 1, last_sent = ? WHERE message_id = ? AND idx = ?",
                      [now, message_id, idx])
            c.execute("UPDATE outbox SET transmissions = transmissions + 1,"
                      " state = CASE state WHEN 'queued' THEN 'sending' ELSE state END WHERE message_id = ?",
                      [message_id])

    def surb_keys(self, surb_id: bytes) -> tuple[bytes, int, bytes] | None:
        """(message_id, idx, keys) for a SURB we made, or None (unknown or already used)."""
        rows = self._query("SELECT message_id, idx, keys FROM surbs WHERE surb_id = ?", [surb_id])
        return (bytes(rows[0][0]), rows[0][1], bytes(rows[0][2])) if rows else None

    def acknowledge(self, message_id: bytes, idx: int, now: float) -> tuple[bool, bool]:
        """Mark a fragment acknowledged; returns (new ack, message now complete). Drops its SURBs."""
        with self._tx() as c:
            c.execute("DELETE FROM surbs WHERE message_id = ? AND idx = ?", [message_id, idx])
            changed = c.execute("UPDATE fragments SET acked = 1 WHERE message_id = ? AND idx = ? AND acked = 0",
                                [message_id, idx]).rowcount
            if not changed:
                return False, False
            c.execute("UPDATE outbox SET acked = acked + 1 WHERE message_id = ?", [message_id])
            done = c.execute("UPDATE outbox SET state = 'acknowledged', acked_at = ? WHERE message_id = ?"
                             " AND acked = fragments AND state != 'acknowledged'", [now, message_id]).rowcount
            return True, bool(done)

    # ------------------------------------------------------------------ inbox

    def add_fragment(self, *, sender_fpr: bytes, sender: str, message_id: bytes, idx: int, count: int,
                     total: int, data: bytes, now: float) -> str:
        """Keep a received fragment durably; 'duplicate' | 'stored' | 'complete'.

        ReassemblyError if it disagrees with the message's stored fragments on count or length.

        The first fragment of a new incomplete message makes room first: the sender's oldest
        incomplete messages go beyond :data:`MAX_PARTIALS_PER_SENDER` messages or
        :data:`MAX_PARTIAL_BYTES_PER_SENDER` bytes, everyone's oldest beyond
        :data:`MAX_PARTIAL_BYTES` (counted in :attr:`partials_evicted`).
        """
        with self._tx() as c:
            if c.execute("SELECT 1 FROM received_digests WHERE digest = ?",
                         [received_digest(sender_fpr, message_id)]).fetchone():
                return "duplicate"
            earlier = c.execute("SELECT count, total FROM partials WHERE sender_fpr = ? AND message_id = ? LIMIT 1",
                                [sender_fpr, message_id]).fetchone()
            if earlier is None:
                self._make_room(c, sender_fpr, len(data))
            elif tuple(earlier) != (count, total):
                raise ReassemblyError(f"fragment {idx} disagrees with earlier fragments on the message size")
            cur = c.execute("INSERT OR IGNORE INTO partials VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [sender_fpr, message_id, idx, count, total, sender, data, now])
            if not cur.rowcount:
                return "duplicate"
            (have,) = c.execute("SELECT COUNT(*) FROM partials WHERE sender_fpr = ? AND message_id = ?",
                                [sender_fpr, message_id]).fetchone()
            return "complete" if have == count else "stored"

    def _make_room(self, c: sqlite3.Connection, sender_fpr: bytes, size: int) -> None:
        """Evict whole incomplete messages, oldest first, until a new one of ``size`` bytes fits."""
        def oldest(where: str, args: list) -> tuple[bytes, bytes] | None:
            row = c.execute(f"SELECT sender_fpr, message_id FROM partials {where} GROUP BY sender_fpr, message_id"
                            " ORDER BY MIN(first_seen) LIMIT 1", args).fetchone()
            return (row[0], row[1]) if row else None

        def evict(victim: tuple[bytes, bytes] | None) -> bool:
            if victim is None:
                return False
            c.execute("DELETE FROM partials WHERE sender_fpr = ? AND message_id = ?", list(victim))
            self.partials_evicted += 1
            return True

        mine = "WHERE sender_fpr = ?"
        while True:
            (messages, held) = c.execute("SELECT COUNT(DISTINCT message_id), COALESCE(SUM(LENGTH(data)), 0)"
                                         f" FROM partials {mine}", [sender_fpr]).fetchone()
            if messages < MAX_PARTIALS_PER_SENDER and held + size <= MAX_PARTIAL_BYTES_PER_SENDER:
                break
            if not evict(oldest(mine, [sender_fpr])):
                break
        while True:
            (held,) = c.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM partials").fetchone()
            if held + size <= MAX_PARTIAL_BYTES or not evict(oldest("", [])):
                break

    def expire_partials(self, before: float) -> int:
        """Drop incomplete messages whose first fragment came before ``before``; how many went."""
        with self._tx() as c:
            stale = c.execute("SELECT sender_fpr, message_id FROM partials GROUP BY sender_fpr, message_id"
                              " HAVING MIN(first_seen) < ?", [before]).fetchall()
            c.executemany("DELETE FROM partials WHERE sender_fpr = ? AND message_id = ?", stale)
            return len(stale)

    def partial_messages(self) -> int:
        """How many incomplete messages wait for fragments."""
        ((n,),) = self._query("SELECT COUNT(*) FROM (SELECT 1 FROM partials GROUP BY sender_fpr, message_id)")
        return n

    def assemble(self, sender_fpr: bytes, message_id: bytes) -> tuple[str, bytes, float] | None:
        """(sender, message bytes, first fragment time) of a complete partial message."""
        rows = self._query("SELECT sender, data, count, total, first_seen FROM partials WHERE sender_fpr = ? AND"
                           " message_id = ? ORDER BY idx", [sender_fpr, message_id])
        if not rows or len(rows) != rows[0][2]:
            return None
        data = b"".join(bytes(r[1]) for r in rows)
        if len(data) != rows[0][3]:
            return None
        return rows[0][0], data, min(r[4] for r in rows)

    def finish_message(self, *, sender_fpr: bytes, sender: str, message_id: bytes, subject: str | None,
                       body: bytes, sent_at: int, now: float, kind: str = "mail",
                       session: SessionCommit | None = None) -> int | None:
        """Move a completed message to the inbox (or just mark it received when ``subject`` is None).

        ``session``: the sessions as opening the message moved them, kept in the same transaction.
        """
        with self._tx() as c:
            cur = c.execute("INSERT OR IGNORE INTO received_digests VALUES (?, ?)",
                            [received_digest(sender_fpr, message_id), int(now // 86400)])
            c.execute("DELETE FROM partials WHERE sender_fpr = ? AND message_id = ?", [sender_fpr, message_id])
            if cur.rowcount and session is not None:
                self._put_sessions(c, session)
            if not cur.rowcount or subject is None:
                return None
            return int(c.execute(
                "INSERT INTO inbox (sender, message_id, subject, body, sent_at, received_at, kind)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", [sender, message_id, subject, body, sent_at, now, kind]).lastrowid)

    def inbox(self) -> list[InboxMessage]:
        """Inbox messages, oldest first."""
        rows = self._query("SELECT id, sender, message_id, subject, body, sent_at, received_at, read, kind FROM inbox"
                           " ORDER BY id")
        return [InboxMessage(r[0], r[1], bytes(r[2]), r[3], bytes(r[4]), r[5], r[6], bool(r[7]), r[8]) for r in rows]

    def counts(self) -> dict[str, int]:
        """Mail in the outbox by state (``outbox_queued`` is queued or sending; key announcements not
        counted, as in ``anonmail outbox``) and messages in the inbox: ``outbox_queued``,
        ``outbox_acknowledged``, ``outbox_failed``, ``inbox``."""
        by_state = dict(self._query("SELECT state, COUNT(*) FROM outbox WHERE kind != 'keys' GROUP BY state"))
        ((inbox,),) = self._query("SELECT COUNT(*) FROM inbox")
        return {"outbox_queued": by_state.get("queued", 0) + by_state.get("sending", 0),
                "outbox_acknowledged": by_state.get("acknowledged", 0),
                "outbox_failed": by_state.get("failed", 0), "inbox": inbox}

    def inbox_message(self, ident: int) -> InboxMessage | None:
        """One inbox message by its local id."""
        found = [m for m in self.inbox() if m.id == ident]
        return found[0] if found else None

    def mark_read(self, ident: int) -> None:
        """Remember that the user has read a message."""
        with self._tx() as c:
            c.execute("UPDATE inbox SET read = 1 WHERE id = ?", [ident])

    def delete_inbox(self, ident: int) -> bool:
        """Delete an inbox message for good (secure_delete); its id stays in ``received``."""
        with self._tx() as c:
            return bool(c.execute("DELETE FROM inbox WHERE id = ?", [ident]).rowcount)


class OutboxFullError(StoreError):
    """The outbox holds too many unacknowledged bytes for another message."""

    def __init__(self, pending: int, size: int, quota: int) -> None:
        super().__init__(f"outbox full: {pending} bytes wait for acknowledgement and this message has {size};"
                         f" the limit is {quota} bytes", reason="outbox_full")
        self.pending, self.size, self.quota = pending, size, quota

