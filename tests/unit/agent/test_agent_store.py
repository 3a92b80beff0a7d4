"""The agent's SQLite store: durability settings, outbox/ACK bookkeeping, exactly-once inbox."""

from __future__ import annotations

import os

import pytest

from anonmail.agent.store import AgentStore, OutboxFullError
from anonmail.errors import StoreError


@pytest.fixture
def store(tmp_path):
    s = AgentStore(tmp_path / "agent.sqlite")
    yield s
    s.close()


def test_pragmas_and_file_mode(store):
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


def test_outbox_progress_and_acknowledgement(store):
    mid = os.urandom(16)
    store.queue_message(message_id=mid, recipient="r@beta", kind="mail", subject="s", body=b"x" * 10, size=10,
                        fragments=3, now=1.0)
    assert [r[:2] for r in store.unacked_fragments()] == [(mid, 0), (mid, 1), (mid, 2)]
    store.record_transmission(mid, 1, b"S" * 16, b"keys", now=2.0)
    assert store.outbox()[0].state == "sending" and store.outbox()[0].transmissions == 1
    assert store.surb_keys(b"S" * 16) == (mid, 1, b"keys")
    assert store.acknowledge(mid, 1, now=3.0) == (True, False)
    assert store.acknowledge(mid, 1, now=3.0) == (False, False)  # a second ACK changes nothing
    assert store.surb_keys(b"S" * 16) is None
    store.acknowledge(mid, 0, now=4.0)
    assert store.acknowledge(mid, 2, now=5.0) == (True, True)
    message = store.outbox()[0]
    assert message.state == "acknowledged" and message.acked == 3 and message.acked_at == 5.0
    assert store.unacked_fragments() == []


def test_outbox_quota_counts_only_unacknowledged_mail(store):
    store.queue_message(message_id=b"a" * 16, recipient="r@b", kind="mail", subject="", body=b"", size=60,
                        fragments=1, now=0, quota_bytes=100)
    with pytest.raises(OutboxFullError):
        store.queue_message(message_id=b"b" * 16, recipient="r@b", kind="mail", subject="", body=b"", size=60,
                            fragments=1, now=0, quota_bytes=100)
    assert len(store.outbox()) == 1  # nothing stored by the refused call
    store.acknowledge(b"a" * 16, 0, now=1)
    store.queue_message(message_id=b"b" * 16, recipient="r@b", kind="mail", subject="", body=b"", size=60,
                        fragments=1, now=0, quota_bytes=100)


def test_fragments_reassemble_once_even_after_delete(store, tmp_path):
    sender, mid = b"F" * 32, b"m" * 16
    args = dict(sender_fpr=sender, sender="s@alpha", message_id=mid, count=2, total=5, now=1.0)
    assert store.add_fragment(idx=1, data=b"lo", **args) == "stored"
    assert store.add_fragment(idx=1, data=b"lo", **args) == "duplicate"
    assert store.add_fragment(idx=0, data=b"hel", **args) == "complete"
    assert store.assemble(sender, mid)[1] == b"hello"
    ident = store.finish_message(sender_fpr=sender, sender="s@alpha", message_id=mid, subject="hi", body=b"hello",
                                 sent_at=0, now=2.0)
    assert ident is not None and len(store.inbox()) == 1
    # Survives reopening (committed), and a late copy is merged even after the user deleted it.
    store.close()
    again = AgentStore(tmp_path / "agent.sqlite")
    assert again.inbox()[0].body == b"hello"
    assert again.delete_inbox(ident)
    assert again.add_fragment(idx=0, data=b"hel", **args) == "duplicate"
    assert again.finish_message(sender_fpr=sender, sender="s@alpha", message_id=mid, subject="hi", body=b"x",
                                sent_at=0, now=3.0) is None
    assert again.inbox() == []
    again.close()


def _file_bytes(path) -> bytes:
    """Every byte of the database and its WAL/SHM files, as someone who seizes the disk reads them."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_attack_a_seized_store_does_not_list_past_correspondents(tmp_path):
    """Deleted mail leaves no sender or message id behind, yet a late copy is still merged."""
    path = tmp_path / "agent.sqlite"
    store = AgentStore(path)
    sender, mid = os.urandom(32), os.urandom(16)
    args = dict(sender_fpr=sender, sender="s@alpha", message_id=mid, count=1, total=5, now=86400 * 3 + 5.0)
    assert store.add_fragment(idx=0, data=b"hello", **args) == "complete"
    ident = store.finish_message(sender_fpr=sender, sender="s@alpha", message_id=mid, subject="hi", body=b"hello",
                                 sent_at=0, now=86400 * 3 + 6.0)
    assert store.delete_inbox(ident)
    store.close()
    seized = _file_bytes(path)
    assert sender not in seized and mid not in seized
    assert b"s@alpha" not in seized
    again = AgentStore(path)
    assert again.add_fragment(idx=0, data=b"hello", **args) == "duplicate"
    (day,) = again._conn().execute("SELECT day FROM received_digests").fetchone()
    assert day == 3  # the day, not the second
    again.close()


def test_an_older_stores_received_table_becomes_digests(tmp_path):
    """A store from before the digests: its (sender, message id, time) rows are hashed and dropped on open."""
    import sqlite3

    path = tmp_path / "agent.sqlite"
    AgentStore(path).close()
    sender, mid = os.urandom(32), os.urandom(16)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE received (sender_fpr BLOB NOT NULL, message_id BLOB NOT NULL, at REAL NOT NULL,"
                   " PRIMARY KEY (sender_fpr, message_id))")
        db.execute("INSERT INTO received VALUES (?, ?, ?)", [sender, mid, 86400 * 7 + 1.5])
    db.close()
    store = AgentStore(path)
    conn = store._conn()
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'received'").fetchone() is None
    assert store.add_fragment(sender_fpr=sender, sender="s@alpha", message_id=mid, idx=0, count=1, total=1,
                              data=b"x", now=1e6) == "duplicate"
    store.close()
    seized = _file_bytes(path)
    assert sender not in seized and mid not in seized


def test_contacts_are_unique(store):
    store.add_contact("bob", "b@beta", now=0)
    with pytest.raises(StoreError, match="already exists"):
        store.add_contact("bob", "c@beta", now=0)
    with pytest.raises(StoreError, match="already exists"):
        store.add_contact("bobby", "b@beta", now=0)
    assert store.contacts() == [("bob", "b@beta")]


def test_a_newer_schema_is_refused(tmp_path):
    s = AgentStore(tmp_path / "a.sqlite")
    s.set_meta(schema_version="99")
    s.close()
    with pytest.raises(StoreError, match="schema version 99"):
        AgentStore(tmp_path / "a.sqlite")


def _fragment(store, sender: bytes, message: int, now: float, *, idx: int = 0, count: int = 2, total: int = 3000):
    return store.add_fragment(sender_fpr=sender, sender="s@alpha", message_id=message.to_bytes(16, "big"), idx=idx,
                              count=count, total=total, data=b"d" * 100, now=now)


def test_incomplete_messages_are_bounded_per_sender_oldest_first(store):
    from anonmail.agent.store import MAX_PARTIALS_PER_SENDER

    for i in range(MAX_PARTIALS_PER_SENDER + 3):
        assert _fragment(store, b"m" * 20, i, now=float(i)) == "stored"
    _fragment(store, b"a" * 20, 100, now=0.0)  # someone else's is not touched
    assert store.partial_messages() == MAX_PARTIALS_PER_SENDER + 1
    assert store.partials_evicted == 3
    kept = {bytes(r[0]) for r in store._query("SELECT DISTINCT message_id FROM partials WHERE sender_fpr = ?",
                                              [b"m" * 20])}
    assert kept == {i.to_bytes(16, "big") for i in range(3, MAX_PARTIALS_PER_SENDER + 3)}


def test_incomplete_messages_are_bounded_in_total(store, monkeypatch):
    from anonmail.agent import store as store_module

    monkeypatch.setattr(store_module, "MAX_PARTIAL_BYTES", 450)
    for i in range(6):
        _fragment(store, bytes([i]) * 20, i, now=float(i))  # six strangers, 100 bytes each
    assert store.partial_messages() == 4 and store.partials_evicted == 2


def test_incomplete_messages_expire_and_contradictions_are_refused(store):
    from anonmail.errors import ReassemblyError

    _fragment(store, b"m" * 20, 1, now=10.0)
    _fragment(store, b"m" * 20, 2, now=50.0)
    with pytest.raises(ReassemblyError):
        _fragment(store, b"m" * 20, 1, now=60.0, idx=1, total=2999)
    assert store.expire_partials(before=20.0) == 1
    assert store.partial_messages() == 1
    assert _fragment(store, b"m" * 20, 2, now=70.0, idx=1) == "complete"
