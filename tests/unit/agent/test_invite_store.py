"""The agent store's side of invitations: verified contacts, the migration, the CLI <-> agent rows."""

from __future__ import annotations

import sqlite3

import pytest

from anonmail.agent.store import AgentStore

pytestmark = pytest.mark.unit


def test_an_existing_contact_book_migrates_every_contact_unverified(tmp_path):
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)  # the version-1 tables as shipped before invitations
    old.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                      "INSERT INTO meta VALUES ('schema_version', '1');"
                      "CREATE TABLE contacts (name TEXT PRIMARY KEY, address TEXT NOT NULL UNIQUE,"
                      " added_at INTEGER NOT NULL);"
                      "INSERT INTO contacts VALUES ('bob', 'b@beta', 5);")
    old.commit()
    old.close()
    store = AgentStore(path)
    assert store.contacts_verified() == [("bob", "b@beta", False)]
    assert store.contacts() == [("bob", "b@beta")]
    assert store.invitations() == []
    assert store.set_verified("bob") and not store.set_verified("nobody")
    assert store.contacts_verified() == [("bob", "b@beta", True)]


def test_an_invitation_confirms_a_pasted_contact_and_names_a_new_one_without_clobbering(tmp_path):
    store = AgentStore(tmp_path / "a.sqlite")
    store.add_contact("bobby", "b@beta", now=0)
    store.add_contact("carol", "x@beta", now=0)
    assert store.add_invited_contact("bob", "b@beta", b"f" * 32, b"i" * 32, [(b"c", 1, 2)], now=1) == "bobby"
    assert store.add_invited_contact("carol", "c@alpha", b"g" * 32, b"j" * 32, [(b"d", 1, 2)], now=1) == "carol-2"
    assert store.contacts_verified() == [("bobby", "b@beta", True), ("carol", "x@beta", False),
                                         ("carol-2", "c@alpha", True)]
    assert store.contact_certs(b"f" * 32) == [b"c"]


def test_invitation_rows_move_on_guarded_and_lose_their_code_when_they_end(tmp_path):
    store = AgentStore(tmp_path / "a.sqlite")
    ident = store.request_invitation("accept", "alice", "12-orbit-velvet@alpha", now=3)
    assert store.invitations("requested")[0]["code"] == "12-orbit-velvet@alpha"
    assert store.update_invitation(ident, state="starting", only_from=("requested",))
    assert not store.update_invitation(ident, state="starting", only_from=("requested",))  # taken once
    assert store.update_invitation(ident, state="failed", detail="the code did not match")
    row = store.invitation(ident)
    assert (row["state"], row["code"], row["detail"]) == ("failed", "", "the code did not match")
    assert store.invitation(ident + 1) is None
