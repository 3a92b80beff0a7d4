"""The IMAP view of the agent's store: folders, UIDs and flags beside the agent's inbox and outbox.

The bridge adds three tables to the user's ``agent.sqlite`` (the same file the CLI and the agent
use, so all three agree)::

    imap_folders   id, name, uid_validity, next_uid, subscribed
    imap_messages  (folder, uid) -> one of: inbox_id (a received message), outbox_id +
                   shown_state (a sent one, as it stood), raw (APPENDed by a client); flags
    imap_marks     how far the inbox and outbox were imported (their ids only grow)

:meth:`MailStore.sync` brings the view up to date: new inbox rows appear in INBOX, new outbox
rows in Sent; an inbox row deleted with ``anonmail delete`` vanishes from every folder; ``read``
shows as ``\\Seen`` and ``\\Seen`` marks the inbox row read; a sent message whose delivery state
changed is expunged and appended again under a new UID (IMAP message content never changes
under a UID, so clients re-fetch and show the new ``X-Anonmail-Delivery`` header). Expunging a
received message deletes it from the inbox (secure_delete) once no folder shows it any more.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass

from anonmail.agent.store import AgentStore
from anonmail.bridge.message import render_received, render_sent
from anonmail.core.envelope import decode_envelope
from anonmail.errors import FragmentError

__all__ = ["MailStore", "MailRow", "INBOX", "SENT", "SEEN"]

INBOX = "INBOX"
SENT = "Sent"
SEEN = "\\Seen"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS imap_folders (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, uid_validity INTEGER NOT NULL,
    next_uid INTEGER NOT NULL DEFAULT 1, subscribed INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS imap_messages (
    folder INTEGER NOT NULL, uid INTEGER NOT NULL, inbox_id INTEGER, outbox_id INTEGER, shown_state TEXT,
    raw BLOB, flags TEXT NOT NULL DEFAULT '', internal_date REAL NOT NULL, PRIMARY KEY (folder, uid));
CREATE INDEX IF NOT EXISTS imap_messages_inbox ON imap_messages (inbox_id);
CREATE INDEX IF NOT EXISTS imap_messages_outbox ON imap_messages (outbox_id);
CREATE TABLE IF NOT EXISTS imap_marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- Covering indexes: sync reads read/state without walking past the message bodies stored before them.
CREATE INDEX IF NOT EXISTS imap_inbox_read ON inbox (id, read);
CREATE INDEX IF NOT EXISTS imap_outbox_state ON outbox (id, state);
"""


@dataclass(frozen=True)
class MailRow:
    """What IMAP needs to list a message without its content."""

    uid: int
    flags: frozenset[str]
    internal_date: float


def _flags_text(flags: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(flags))


def _flags(text: str) -> frozenset[str]:
    return frozenset(text.split())


class MailStore(AgentStore):
    """The agent store plus the bridge's folders; every method is blocking (call it from a thread)."""

    def __init__(self, path, *, own_address: str) -> None:
        super().__init__(path)
        self.own_address = own_address
        self._watch: sqlite3.Connection | None = None
        self._watch_lock = threading.Lock()
        self._conn().executescript(_SCHEMA)
        with self._tx() as c:
            for name in (INBOX, SENT):
                c.execute("INSERT OR IGNORE INTO imap_folders (name, uid_validity) VALUES (?, ?)",
                          [name, _uid_validity()])

    # ------------------------------------------------------------------ folders

    def folder_names(self, *, subscribed_only: bool = False) -> list[str]:
        """Every folder name (INBOX first)."""
        where = " WHERE subscribed = 1" if subscribed_only else ""
        return [r[0] for r in self._query(f"SELECT name FROM imap_folders{where} ORDER BY name != 'INBOX', name")]

    def folder(self, name: str) -> tuple[int, int, int] | None:
        """(id, uid_validity, next_uid) of a folder, or None."""
        name = INBOX if name.upper() == INBOX else name
        rows = self._query("SELECT id, uid_validity, next_uid FROM imap_folders WHERE name = ?", [name])
        return tuple(rows[0]) if rows else None

    def folder_by_id(self, folder: int) -> tuple[int, int, int] | None:
        """(id, uid_validity, next_uid) of a folder by id, or None."""
        rows = self._query("SELECT id, uid_validity, next_uid FROM imap_folders WHERE id = ?", [folder])
        return tuple(rows[0]) if rows else None

    def create_folder(self, name: str) -> int:
        """A new folder's id; ValueError if it exists."""
        if self.folder(name) is not None:
            raise ValueError(name)
        with self._tx() as c:
            return int(c.execute("INSERT INTO imap_folders (name, uid_validity) VALUES (?, ?)",
                                 [name, _uid_validity()]).lastrowid)

    def delete_folder(self, name: str) -> None:
        """Delete a folder and what it shows (KeyError if absent; INBOX and Sent stay)."""
        found = self.folder(name)
        if found is None:
            raise KeyError(name)
        uids = [row.uid for row in self.rows(found[0])]
        self.expunge(found[0], uids)
        if name.upper() != INBOX and name != SENT:
            with self._tx() as c:
                c.execute("DELETE FROM imap_folders WHERE id = ?", [found[0]])

    def rename_folder(self, before: str, after: str) -> None:
        """Rename a folder (KeyError: no such folder; ValueError: the new name exists)."""
        if self.folder(before) is None:
            raise KeyError(before)
        if self.folder(after) is not None:
            raise ValueError(after)
        with self._tx() as c:
            c.execute("UPDATE imap_folders SET name = ? WHERE name = ?", [after, before])

    def set_subscribed(self, name: str, subscribed: bool) -> None:
        """Remember whether the client subscribed to a folder."""
        with self._tx() as c:
            c.execute("UPDATE imap_folders SET subscribed = ? WHERE name = ?", [int(subscribed), name])

    # ------------------------------------------------------------------ messages

    def rows(self, folder: int) -> list[MailRow]:
        """The messages of a folder by UID (no content)."""
        return [MailRow(r[0], _flags(r[1]), r[2]) for r in self._query(
            "SELECT uid, flags, internal_date FROM imap_messages WHERE folder = ? ORDER BY uid", [folder])]

    def row(self, folder: int, uid: int) -> MailRow | None:
        """One message's listing (no content), or None if it is gone."""
        rows = self._query("SELECT uid, flags, internal_date FROM imap_messages WHERE folder = ? AND uid = ?",
                           [folder, uid])
        return MailRow(rows[0][0], _flags(rows[0][1]), rows[0][2]) if rows else None

    def content(self, folder: int, uid: int) -> bytes | None:
        """The RFC 5322 bytes of a message, or None if it is gone."""
        rows = self._query("SELECT inbox_id, outbox_id, shown_state, raw FROM imap_messages WHERE folder = ? AND uid = ?",
                           [folder, uid])
        if not rows:
            return None
        inbox_id, outbox_id, shown_state, raw = rows[0]
        if raw is not None:
            return bytes(raw)
        if inbox_id is not None:
            return self._render_inbox(inbox_id)
        return self._render_outbox(outbox_id, shown_state)

    def _render_inbox(self, inbox_id: int) -> bytes | None:
        m = self.inbox_message(inbox_id)
        if m is None:
            return None
        trust = {address: verified for _name, address, verified in self.contacts_verified()}
        return render_received(kind=m.kind, sender=m.sender, sender_name=self.contact_name(m.sender),
                               own=self.own_address, subject=m.subject, body=m.body, sent_at=m.sent_at,
                               message_id=m.message_id, verified=trust.get(m.sender))

    def _render_outbox(self, outbox_id: int, state: str) -> bytes | None:
        rows = self._query("SELECT message_id, recipient, kind, subject, body, created_at FROM outbox WHERE id = ?",
                           [outbox_id])
        if not rows:
            return None
        message_id, recipient, kind, subject, envelope, created_at = rows[0]
        try:
            decoded = decode_envelope(bytes(envelope))
        except FragmentError:
            return None
        return render_sent(kind=kind, state=state, own=self.own_address, recipient=recipient,
                           recipient_name=self.contact_name(recipient), subject=subject, body=decoded.body,
                           created_at=created_at, message_id=bytes(message_id))

    def _insert(self, c, folder: int, *, flags: frozenset[str], when: float, inbox_id: int | None = None,
                outbox_id: int | None = None, state: str | None = None, raw: bytes | None = None) -> int:
        (uid,) = c.execute("SELECT next_uid FROM imap_folders WHERE id = ?", [folder]).fetchone()
        c.execute("UPDATE imap_folders SET next_uid = ? WHERE id = ?", [uid + 1, folder])
        c.execute("INSERT INTO imap_messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  [folder, uid, inbox_id, outbox_id, state, raw, _flags_text(flags), when])
        return int(uid)

    def append(self, folder: int, raw: bytes, flags: frozenset[str], when: float) -> int:
        """Store a message a client uploaded; its UID."""
        with self._tx() as c:
            return self._insert(c, folder, flags=flags, when=when, raw=raw)

    def copy(self, folder: int, uid: int, dest: int, *, move: bool = False) -> int | None:
        """Copy (or move) a message to another folder; its new UID, or None if it is gone."""
        with self._tx() as c:
            row = c.execute("SELECT inbox_id, outbox_id, shown_state, raw, flags, internal_date FROM imap_messages"
                            " WHERE folder = ? AND uid = ?", [folder, uid]).fetchone()
            if row is None:
                return None
            inbox_id, outbox_id, state, raw, flags, when = row
            new = self._insert(c, dest, flags=_flags(flags), when=when, inbox_id=inbox_id, outbox_id=outbox_id,
                               state=state, raw=raw)
            if move:
                c.execute("DELETE FROM imap_messages WHERE folder = ? AND uid = ?", [folder, uid])
            return new

    def set_flags(self, folder: int, uid: int, flags: frozenset[str]) -> bool:
        """Replace a message's flags (``\\Seen`` also marks the inbox row read or unread)."""
        with self._tx() as c:
            row = c.execute("SELECT inbox_id FROM imap_messages WHERE folder = ? AND uid = ?", [folder, uid]).fetchone()
            if row is None:
                return False
            c.execute("UPDATE imap_messages SET flags = ? WHERE folder = ? AND uid = ?", [_flags_text(flags), folder, uid])
            if row[0] is not None:
                c.execute("UPDATE inbox SET read = ? WHERE id = ?", [int(SEEN in flags), row[0]])
            return True

    def expunge(self, folder: int, uids) -> None:
        """Remove messages from a folder; a received message no folder shows any more is deleted."""
        with self._tx() as c:
            for uid in uids:
                row = c.execute("SELECT inbox_id FROM imap_messages WHERE folder = ? AND uid = ?",
                                [folder, uid]).fetchone()
                c.execute("DELETE FROM imap_messages WHERE folder = ? AND uid = ?", [folder, uid])
                if row is not None and row[0] is not None and not c.execute(
                        "SELECT 1 FROM imap_messages WHERE inbox_id = ?", [row[0]]).fetchone():
                    c.execute("DELETE FROM inbox WHERE id = ?", [row[0]])

    # ------------------------------------------------------------------ sync with the agent's tables

    def sync(self) -> bool:
        """Bring the folders up to date with the inbox and outbox; True if anything changed."""
        changed = False
        with self._tx() as c:
            marks = dict(c.execute("SELECT name, value FROM imap_marks").fetchall())
            inbox = c.execute("SELECT id FROM imap_folders WHERE name = ?", [INBOX]).fetchone()[0]
            sent = c.execute("SELECT id FROM imap_folders WHERE name = ?", [SENT]).fetchone()[0]
            for ident, read, received_at in c.execute("SELECT id, read, received_at FROM inbox WHERE id > ? ORDER BY id",
                                                      [marks.get("inbox", 0)]).fetchall():
                self._insert(c, inbox, flags=frozenset({SEEN} if read else ()), when=received_at, inbox_id=ident)
                marks["inbox"] = ident
                changed = True
            for ident, state, created_at in c.execute(
                    "SELECT id, state, created_at FROM outbox WHERE id > ? AND kind != 'keys' ORDER BY id",
                    [marks.get("outbox", 0)]).fetchall():
                self._insert(c, sent, flags=frozenset({SEEN}), when=created_at, outbox_id=ident, state=state)
                marks["outbox"] = ident
                changed = True
            c.executemany("INSERT OR REPLACE INTO imap_marks VALUES (?, ?)", list(marks.items()))
            gone = c.execute("DELETE FROM imap_messages WHERE inbox_id IS NOT NULL AND inbox_id NOT IN"
                             " (SELECT id FROM inbox INDEXED BY imap_inbox_read)").rowcount
            changed = changed or gone > 0
            for folder, uid, flags in c.execute(
                    "SELECT m.folder, m.uid, m.flags FROM imap_messages m JOIN inbox i INDEXED BY imap_inbox_read"
                    " ON i.id = m.inbox_id WHERE i.read = 1").fetchall():
                have = _flags(flags)
                if SEEN not in have:
                    c.execute("UPDATE imap_messages SET flags = ? WHERE folder = ? AND uid = ?",
                              [_flags_text(have | {SEEN}), folder, uid])
                    changed = True
            for folder, uid, outbox_id, flags, when, state in c.execute(
                    "SELECT m.folder, m.uid, m.outbox_id, m.flags, m.internal_date, o.state FROM imap_messages m"
                    " JOIN outbox o INDEXED BY imap_outbox_state ON o.id = m.outbox_id"
                    " WHERE m.shown_state != o.state").fetchall():
                c.execute("DELETE FROM imap_messages WHERE folder = ? AND uid = ?", [folder, uid])
                self._insert(c, folder, flags=_flags(flags), when=when, outbox_id=outbox_id, state=state)
                changed = True
        return changed

    def data_version(self) -> int:
        """SQLite's counter of commits by *other* connections (cheap to poll; one connection of its own,
        since the counter means something only on the same connection)."""
        with self._watch_lock:
            if self._watch is None:
                self._watch = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            return int(self._watch.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        """Close every connection."""
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
        super().close()


def _uid_validity() -> int:
    return (int(time.time()) << 8 | secrets.randbelow(256)) & 0x7FFFFFFF or 1
