"""The provider's mailbox store: durability settings, ownership of deletes, quotas."""

from __future__ import annotations

import os

import pytest

from anonmail.core.mailproto import ENTRY_FRAGMENT, ENTRY_REPLY
from anonmail.errors import StoreError
from anonmail.provider.store import MailboxStore, NewEntry

A, B = b"A" * 16, b"B" * 16


@pytest.fixture
def store(tmp_path):
    s = MailboxStore(tmp_path / "mail.sqlite")
    yield s
    s.close()


def test_durability_pragmas_are_set(store):
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("secure_delete") == 1


def test_a_stored_entry_survives_reopening(tmp_path):
    path = tmp_path / "mail.sqlite"
    store = MailboxStore(path)
    assert store.register(A, b"i" * 32, 1.0) == "created"
    [entry_id] = store.store_many([NewEntry(A, ENTRY_FRAGMENT, b"sealed")], 2.0)
    # No close(): as after a crash, only what was committed counts.
    again = MailboxStore(path)
    entries, remaining = again.fetch(A, 16)
    assert [(e.entry_id, e.kind, e.data) for e in entries] == [(entry_id, ENTRY_FRAGMENT, b"sealed")]
    assert remaining == 0
    assert again.account(A).identity == b"i" * 32
    again.close()
    store.close()


def test_accounts(store):
    assert store.register(A, b"a" * 32, 1.0, 2) == "created"
    assert store.register(A, b"a" * 32, 1.0, 2) == "exists"
    assert store.register(B, b"b" * 32, 1.0, 2) == "created"
    assert store.register(b"C" * 16, b"c" * 32, 1.0, 2) == "full"
    assert store.mailbox_ids() == {A, B} and store.account_count() == 2
    assert store.account(b"Z" * 16) is None
    cert = os.urandom(145)
    store.set_certs(A, [cert, cert])
    assert store.account(A).certs == (cert, cert)
    with pytest.raises(ValueError):
        store.set_certs(A, [b"short"])


def test_fetch_oldest_first_with_remaining_and_delete_only_own_ids(store):
    ids_a = store.store_many([NewEntry(A, ENTRY_FRAGMENT, bytes([i])) for i in range(5)], 1.0)
    ids_b = store.store_many([NewEntry(B, ENTRY_REPLY, b"b")], 1.0)
    entries, remaining = store.fetch(A, 3)
    assert [e.data for e in entries] == [b"\x00", b"\x01", b"\x02"] and remaining == 2
    assert all(e.remaining == 2 for e in entries)
    assert store.delete(A, ids_b) == 0  # not A's
    assert store.delete(A, [ids_a[0], ids_a[1], 10**12, -5]) == 2
    assert store.delete(A, [ids_a[0]]) == 0  # already gone
    assert [e.data for e in store.fetch(A, 16)[0]] == [b"\x02", b"\x03", b"\x04"]
    assert store.fetch(B, 16)[0][0].entry_id == ids_b[0]
    # Ids are random, unique, and not in the order entries were stored (the order is kept apart).
    more = store.store_many([NewEntry(A, ENTRY_FRAGMENT, bytes([i])) for i in range(5, 40)], 2.0)
    every = ids_a + ids_b + more
    assert len(set(every)) == len(every) and all(0 < i < 2**63 for i in every)
    assert every != sorted(every) and max(every) > 2**40
    assert [e.data[0] for e in store.fetch(A, 64)[0]] == list(range(2, 40))


def test_a_store_from_before_random_ids_gets_them_and_keeps_its_order(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY AUTOINCREMENT, mailbox_id BLOB NOT NULL, "
                 "kind INTEGER NOT NULL, data BLOB NOT NULL, stored_at REAL NOT NULL)")
    conn.executemany("INSERT INTO entries (mailbox_id, kind, data, stored_at) VALUES (?, ?, ?, ?)",
                     [(A, ENTRY_FRAGMENT, bytes([i]), 1.0) for i in range(6)] + [(B, ENTRY_REPLY, b"b", 1.0)])
    conn.commit()
    conn.close()
    store = MailboxStore(path)
    entries, remaining = store.fetch(A, 4)
    assert [e.data for e in entries] == [bytes([i]) for i in range(4)] and remaining == 2
    ids = [e.entry_id for e in entries]
    assert all(i > 7 for i in ids) and len(set(ids)) == 4  # no longer the old counter 1..7
    assert store.delete(A, [1, 2, 3]) == 0  # the old ids mean nothing now
    assert store.delete(A, ids) == 4
    new = store.store_many([NewEntry(A, ENTRY_FRAGMENT, b"new")], 2.0)
    assert [e.data for e in store.fetch(A, 16)[0]] == [b"\x04", b"\x05", b"new"]
    assert store.fetch(A, 16)[0][-1].entry_id == new[0]
    store.close()
    again = MailboxStore(path)  # opening again changes nothing
    assert [e.entry_id for e in again.fetch(A, 16)[0]][-1] == new[0]
    again.close()


def test_usage_for_quotas(store):
    store.store_many([NewEntry(A, ENTRY_FRAGMENT, b"x" * 100), NewEntry(A, ENTRY_REPLY, b"y" * 50)], 1.0)
    store.store_many([NewEntry(B, ENTRY_FRAGMENT, b"z" * 7)], 1.0)
    assert (store.usage(A).entries, store.usage(A).bytes) == (2, 150)
    assert (store.usage(b"Q" * 16).entries, store.usage(b"Q" * 16).bytes) == (0, 0)
    assert (store.totals().entries, store.totals().bytes) == (3, 157)


def test_bad_entries_and_store_errors(store, tmp_path):
    with pytest.raises(ValueError):
        store.store_many([NewEntry(A, 0, b"dummy kinds are never stored")], 1.0)
    assert store.store_many([], 1.0) == []
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(StoreError, match="dir.sqlite"):
        MailboxStore(tmp_path / "dir.sqlite")


def test_a_full_mailbox_stores_the_new_entry_and_evicts_its_oldest_acks_first(store):
    from anonmail.provider.store import Usage

    store.register(A, b"i" * 32, 1.0)
    store.register(B, b"j" * 32, 1.0)
    store.store_many([NewEntry(A, ENTRY_FRAGMENT, b"f1"), NewEntry(A, ENTRY_REPLY, b"r1"),
                      NewEntry(A, ENTRY_FRAGMENT, b"f2"), NewEntry(B, ENTRY_FRAGMENT, b"b1")], 1.0)
    ids, evicted = store.store_within_quota([NewEntry(A, ENTRY_FRAGMENT, b"f3")], 2.0, Usage(3, 10**6))
    assert len(ids) == 1 and evicted == {A: Usage(1, 2)}
    assert [e.data for e in store.fetch(A, 10)[0]] == [b"f1", b"f2", b"f3"]  # the ACK went first
    _, evicted = store.store_within_quota([NewEntry(A, ENTRY_FRAGMENT, b"f4")], 3.0, Usage(3, 10**6))
    assert evicted == {A: Usage(1, 2)}
    assert [e.data for e in store.fetch(A, 10)[0]] == [b"f2", b"f3", b"f4"]  # then the oldest
    _, evicted = store.store_within_quota([NewEntry(A, ENTRY_FRAGMENT, b"f5" * 3)], 4.0, Usage(10, 8))
    assert [e.data for e in store.fetch(A, 10)[0]] == [b"f4", b"f5" * 3] and evicted[A].entries == 2
    assert [e.data for e in store.fetch(B, 10)[0]] == [b"b1"]  # other mailboxes untouched
