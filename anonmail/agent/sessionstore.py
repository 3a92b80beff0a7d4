"""The agent store's end-to-end tables: sessions per correspondent, our prekeys, fetched bundles.

Mixed into :class:`anonmail.agent.store.AgentStore` (same file, same connections)::

    sessions(peer_fpr BLOB PK, peer_identity BLOB, box BLOB)     every session with one correspondent
    my_prekeys(kind TEXT, key_id INTEGER, box BLOB, public BLOB, not_after INTEGER, created REAL)
                                                                 kind: signed | pq | one_time
    bundles(peer_fpr BLOB PK, bundle BLOB, fetched_at REAL)      a correspondent's bundle, until a session starts
    outbox.wire BLOB                                             the message as encrypted for its session

Every ``box`` is sealed by the caller (:mod:`anonmail.agent.e2e`) under the vault key derived
from the identity seed, as the encryption keys are, so the database alone opens nothing. A
session is rewritten as its ratchet moves and a used one-time prekey is deleted in the same
transaction as the message it opened is stored; ``secure_delete`` overwrites what goes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SessionTables", "SESSION_SCHEMA", "SessionCommit"]

SESSION_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    peer_fpr BLOB PRIMARY KEY, peer_identity BLOB NOT NULL, box BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS my_prekeys (
    kind TEXT NOT NULL, key_id INTEGER NOT NULL, box BLOB NOT NULL, public BLOB NOT NULL,
    not_after INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (kind, key_id));
CREATE TABLE IF NOT EXISTS bundles (
    peer_fpr BLOB PRIMARY KEY, bundle BLOB NOT NULL, fetched_at REAL NOT NULL);
"""


@dataclass(frozen=True)
class SessionCommit:
    """What opening a message changed: the correspondent's sealed sessions and the one-time prekey it used."""

    peer_fpr: bytes
    peer_identity: bytes
    box: bytes
    used_one_time: int | None = None


class SessionTables:
    """Session, prekey and bundle rows of the agent store (needs ``_tx`` and ``_query``)."""

    def _tx(self):  # provided by AgentStore
        raise NotImplementedError

    def _query(self, sql: str, args: Sequence = ()) -> list[tuple]:  # provided by AgentStore
        raise NotImplementedError

    # ------------------------------------------------------------------ sessions

    def sessions_box(self, peer_fpr: bytes) -> tuple[bytes, bytes] | None:
        """(peer identity, sealed sessions) with a correspondent, or None."""
        rows = self._query("SELECT peer_identity, box FROM sessions WHERE peer_fpr = ?", [peer_fpr])
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    @staticmethod
    def _put_sessions(c: sqlite3.Connection, commit: SessionCommit) -> None:
        c.execute("INSERT OR REPLACE INTO sessions (peer_fpr, peer_identity, box) VALUES (?, ?, ?)",
                  [commit.peer_fpr, commit.peer_identity, commit.box])
        if commit.used_one_time is not None:
            c.execute("DELETE FROM my_prekeys WHERE kind = 'one_time' AND key_id = ?", [commit.used_one_time])

    def seal_outgoing(self, message_id: bytes, wire: bytes, fragments: int, commit: SessionCommit,
                      *, drop_bundle: bool) -> bool:
        """Keep a message's encrypted form and the moved sessions in one transaction; False if it was sealed already.

        If the encrypted length needs another fragment count than queued, the fragment rows follow it
        (nothing of the message has left yet); rows that stay keep their state.
        """
        with self._tx() as c:
            row = c.execute("SELECT fragments FROM outbox WHERE message_id = ? AND wire IS NULL",
                            [message_id]).fetchone()
            if row is None:
                return False
            c.execute("UPDATE outbox SET wire = ?, fragments = ? WHERE message_id = ?", [wire, fragments, message_id])
            if row[0] != fragments:
                c.execute("DELETE FROM fragments WHERE message_id = ? AND idx >= ?", [message_id, fragments])
                c.executemany("INSERT OR IGNORE INTO fragments (message_id, idx) VALUES (?, ?)",
                              [(message_id, i) for i in range(fragments)])
            self._put_sessions(c, commit)
            if drop_bundle:
                c.execute("DELETE FROM bundles WHERE peer_fpr = ?", [commit.peer_fpr])
            return True

    def message_wire(self, message_id: bytes) -> bytes | None:
        """The encrypted form of an outbox message, once sealed."""
        rows = self._query("SELECT wire FROM outbox WHERE message_id = ?", [message_id])
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    # ------------------------------------------------------------------ bundles

    def put_bundle(self, peer_fpr: bytes, bundle: bytes, now: float) -> None:
        """Keep a fetched (verified) bundle until a session starts on it."""
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO bundles VALUES (?, ?, ?)", [peer_fpr, bundle, now])

    def bundle(self, peer_fpr: bytes) -> bytes | None:
        """A correspondent's fetched bundle, if any."""
        rows = self._query("SELECT bundle FROM bundles WHERE peer_fpr = ?", [peer_fpr])
        return bytes(rows[0][0]) if rows else None

    def drop_bundle(self, peer_fpr: bytes) -> None:
        """Forget a bundle that no longer verifies."""
        with self._tx() as c:
            c.execute("DELETE FROM bundles WHERE peer_fpr = ?", [peer_fpr])

    # ------------------------------------------------------------------ our prekeys

    def add_prekeys(self, rows: Sequence[tuple[str, int, bytes, bytes, int, float]]) -> None:
        """Keep new prekeys: (kind, key id, sealed secret, public, not_after, created)."""
        with self._tx() as c:
            c.executemany("INSERT INTO my_prekeys (kind, key_id, box, public, not_after, created)"
                          " VALUES (?, ?, ?, ?, ?, ?)", rows)

    def prekeys(self, kind: str) -> list[tuple[int, bytes, bytes, int]]:
        """(key id, sealed secret, public, not_after) of our prekeys of a kind, newest id first."""
        rows = self._query("SELECT key_id, box, public, not_after FROM my_prekeys WHERE kind = ? ORDER BY key_id DESC",
                           [kind])
        return [(r[0], bytes(r[1]), bytes(r[2]), r[3]) for r in rows]

    def prekey_box(self, kind: str, key_id: int) -> bytes | None:
        """The sealed secret of one prekey, or None if it is gone."""
        rows = self._query("SELECT box FROM my_prekeys WHERE kind = ? AND key_id = ?", [kind, key_id])
        return bytes(rows[0][0]) if rows else None

    def next_prekey_id(self) -> int:
        """A prekey id not used before by any kind (ids only grow)."""
        ((n,),) = self._query("SELECT COALESCE(MAX(key_id), 0) FROM my_prekeys")
        stored = self._query("SELECT value FROM meta WHERE key = 'prekey_id'")
        return max(int(n), int(stored[0][0]) if stored else 0) + 1

    def note_prekey_id(self, key_id: int) -> None:
        """Remember the highest prekey id handed out, so deleted ids are never reused."""
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('prekey_id', ?)", [str(key_id)])

    def drop_prekeys(self, kind: str, *, not_after_before: int) -> int:
        """Delete our prekeys of a kind that expired before a time (forward secrecy); how many went."""
        with self._tx() as c:
            return c.execute("DELETE FROM my_prekeys WHERE kind = ? AND not_after < ?",
                             [kind, not_after_before]).rowcount

    def drop_oldest_one_time(self, keep: int) -> int:
        """Delete the oldest unused one-time prekeys beyond ``keep``; how many went."""
        with self._tx() as c:
            return c.execute("DELETE FROM my_prekeys WHERE kind = 'one_time' AND key_id NOT IN (SELECT key_id FROM"
                             " my_prekeys WHERE kind = 'one_time' ORDER BY key_id DESC LIMIT ?)", [keep]).rowcount
