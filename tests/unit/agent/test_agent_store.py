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
