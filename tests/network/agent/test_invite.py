"""Invitation codes between agents on the in-process network, in virtual time (docs/design.md, "Invitations")."""

from __future__ import annotations

import base64
from contextlib import AsyncExitStack

import anyio
import pytest
import trio.testing

from anonmail.agent.outbox import queue_mail
from anonmail.core.invite import MISMATCH_MESSAGE, parse_code, wordlist
from anonmail.provider.node import TokenBucket
from anonmail.provider.rendezvous import JOIN_BURST, JOIN_RATE, OPEN_BURST, OPEN_RATE, RendezvousTable
from tests.network.agent.test_agent import network, start_user, wait_until, wall_clock

pytestmark = pytest.mark.network


@pytest.fixture
def anyio_backend():
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def _row(agent, ident):
    return agent.store.invitation(ident)


async def invite(agent, name=None):
    """What `anonmail invite` does: ask the agent, wait for the code; (row id, code)."""
    ident = agent.store.request_invitation("invite", name, "", now=wall_clock())
    await wait_until(lambda: _row(agent, ident)["state"] != "requested" and _row(agent, ident)["state"] != "starting",
                     timeout=120)
    row = _row(agent, ident)
    assert row["state"] == "waiting", row
    return ident, row["code"]


def accept(agent, code, name=None):
    return agent.store.request_invitation("accept", name, code, now=wall_clock())


async def finished(agent, ident, timeout=900):
    await wait_until(lambda: _row(agent, ident)["state"] in ("done", "failed", "expired", "cancelled"),
                     timeout=timeout)
    return _row(agent, ident)


async def three_users(stack, tmp_path):
    net, tg = await network(stack, tmp_path)
    alice = await start_user(stack, net, tg, "alice", "alpha", 1)
    bob = await start_user(stack, net, tg, "bob", "beta", 2)
    return net, tg, alice, bob


@pytest.mark.anyio
async def test_invite_accept_then_mail_both_ways_without_a_key_or_bundle_lookup(tmp_path):
    async with AsyncExitStack() as stack:
        net, _tg, alice, bob = await three_users(stack, tmp_path)
        ident, code = await invite(alice, "bob")
        assert parse_code(code).provider == "alpha"
        theirs = accept(bob, code, "alice")
        mine, their_row = await finished(alice, ident), await finished(bob, theirs)
        assert (mine["state"], mine["contact"], their_row["state"], their_row["contact"]) == \
            ("done", "bob", "done", "alice")
        assert mine["code"] == "" and their_row["code"] == ""  # the code is wiped once used
        assert alice.store.contacts_verified() == [("bob", str(bob.address), True)]
        assert bob.store.contacts_verified() == [("alice", str(alice.address), True)]
        assert alice.store.contact_certs(bob.address.fingerprint)  # pinned keys: no lookup needed
        queue_mail(alice.store, to="bob", subject="hello", body=b"hi bob", now=wall_clock())
        queue_mail(bob.store, to="alice", subject="hello back", body=b"hi alice", now=wall_clock())
        await wait_until(lambda: len(bob.store.inbox()) == 1 and len(alice.store.inbox()) == 1)
        assert bob.store.inbox()[0].sender == str(alice.address) and bob.store.inbox()[0].body == b"hi bob"
        assert alice.store.inbox()[0].sender == str(bob.address) and alice.store.inbox()[0].body == b"hi alice"
        # Keys and prekey bundles rode in the introductions: no lookup of either kind.
        assert all(net.nodes[p].mail["key_lookups"] == 0 for p in ("alpha", "beta"))
        assert all(net.nodes[p].mail["bundle_lookups"] == 0 for p in ("alpha", "beta"))
        # The used code cannot be replayed: the nameplate is gone (and not handed out again for a while).
        again = await finished(bob, accept(bob, code, "alice-again"))
        assert again["state"] == "failed" and "no open invitation" in again["detail"]
        assert len(bob.store.contacts()) == 1
        assert len(net.nodes["alpha"].rendezvous) == 0


def _other_word(word: str) -> str:
    words = wordlist()
    return words[(words.index(word) + 1) % len(words)]


@pytest.mark.anyio
async def test_a_wrong_code_fails_on_both_sides_and_adds_nothing(tmp_path):
    async with AsyncExitStack() as stack:
        net, _tg, alice, bob = await three_users(stack, tmp_path)
        ident, code = await invite(alice, "bob")
        parsed = parse_code(code)
        wrong = f"{parsed.nameplate}-{parsed.words[0]}-{_other_word(parsed.words[1])}@{parsed.provider}"
        theirs = accept(bob, wrong, "alice")
        mine, their_row = await finished(alice, ident), await finished(bob, theirs)
        assert (mine["state"], mine["detail"]) == ("failed", MISMATCH_MESSAGE)
        assert (their_row["state"], their_row["detail"]) == ("failed", MISMATCH_MESSAGE)
        assert alice.store.contacts() == [] and bob.store.contacts() == []
        # One guess per code: the right code now finds no invitation.
        retry = await finished(bob, accept(bob, code, "alice"))
        assert retry["state"] == "failed" and "no open invitation" in retry["detail"]
        assert bob.store.contacts() == []
        assert len(net.nodes["alpha"].rendezvous) == 0


@pytest.mark.anyio
async def test_an_expired_code_ends_the_invitation_and_cannot_be_used(tmp_path):
    async with AsyncExitStack() as stack:
        net, _tg, alice, bob = await three_users(stack, tmp_path)
        # A one-minute lifetime (the default ten minutes are tested on the table itself) keeps the run short.
        now = anyio.current_time()
        net.nodes["alpha"].rendezvous = RendezvousTable(ttl=60, join_bucket=TokenBucket(JOIN_RATE, JOIN_BURST, now),
                                                        open_bucket=TokenBucket(OPEN_RATE, OPEN_BURST, now))
        ident, code = await invite(alice, "bob")
        assert _row(alice, ident)["expires_at"] == pytest.approx(wall_clock() + 60, abs=5)
        await anyio.sleep(61)
        mine = await finished(alice, ident)
        assert mine["state"] == "expired" and "expired" in mine["detail"]
        late = await finished(bob, accept(bob, code, "alice"))
        assert late["state"] == "failed" and "no open invitation" in late["detail"]
        assert alice.store.contacts() == [] and bob.store.contacts() == []
        assert len(net.nodes["alpha"].rendezvous) == 0


@pytest.mark.anyio
async def test_two_invitations_at_once(tmp_path):
    async with AsyncExitStack() as stack:
        net, tg, alice, bob = await three_users(stack, tmp_path)
        carol = await start_user(stack, net, tg, "carol", "alpha", 3)
        (first, code1), (second, code2) = await invite(alice, "bob"), await invite(alice, "carol")
        assert parse_code(code1).nameplate != parse_code(code2).nameplate
        rows = [accept(carol, code2, "alice"), accept(bob, code1, "alice")]
        for agent, ident in ((alice, first), (alice, second), (carol, rows[0]), (bob, rows[1])):
            assert (await finished(agent, ident))["state"] == "done"
        assert alice.store.contacts_verified() == [("bob", str(bob.address), True),
                                                   ("carol", str(carol.address), True)]
        assert bob.store.contacts() == [("alice", str(alice.address))]
        assert carol.store.contacts() == [("alice", str(alice.address))]


@pytest.mark.anyio
async def test_attack_the_provider_cannot_tie_the_join_to_its_own_user(tmp_path, monkeypatch):
    """Attack: alice's provider is also carol's. Had carol's join shared the Tor circuit (or I2P session) of her
    logged-in session, the provider would learn that carol accepted alice's invitation, i.e. that they know each
    other. The join must go on a connection of its own, like a key lookup."""
    async with AsyncExitStack() as stack:
        net, tg, alice, _bob = await three_users(stack, tmp_path)
        carol = await start_user(stack, net, tg, "carol", "alpha", 3)
        ident, code = await invite(alice, "carol")
        calls: list[tuple[str, bool]] = []
        connect = carol.router.connect

        async def recording_connect(address, *, isolated=False):
            calls.append((address, isolated))
            return await connect(address, isolated=isolated)

        monkeypatch.setattr(carol.router, "connect", recording_connect)
        theirs = accept(carol, code, "alice")
        assert (await finished(alice, ident))["state"] == "done"
        assert (await finished(carol, theirs))["state"] == "done"
        to_alpha = [isolated for address, isolated in calls if address == net.provider_address("alpha")]
        assert to_alpha and all(to_alpha), calls


@pytest.mark.anyio
async def test_the_rendezvous_stores_no_address_key_or_code_in_clear(tmp_path, monkeypatch):
    """Attack: an operator who reads the rendezvous table after every request learns nothing of either user."""
    snapshots = []
    handle = RendezvousTable.handle

    def recording(self, request, *, account, now):
        try:
            return handle(self, request, account=account, now=now)
        finally:
            snapshots.append(repr(self.stored()).encode())

    monkeypatch.setattr(RendezvousTable, "handle", recording)
    async with AsyncExitStack() as stack:
        _net, _tg, alice, bob = await three_users(stack, tmp_path)
        ident, code = await invite(alice, "bob")
        theirs = accept(bob, code, "alice")
        assert (await finished(alice, ident))["state"] == (await finished(bob, theirs))["state"] == "done"
        secrets = []
        for user in (alice, bob):
            certs = user.store.my_keys()
            for blob in [user.identity.public, user.address.fingerprint, user.address.mailbox_id,
                         *(c[2] for c in certs), *(c[0] for c in certs)]:
                secrets += [blob, blob.hex().encode(), base64.b64encode(blob)]
            secrets += [str(user.address).encode(), str(user.address).split("@")[0].encode()]
        parsed = parse_code(code)
        secrets += [w.encode() for w in parsed.words]
        assert len(snapshots) >= 6 and any(b"sealed" in s for s in snapshots)
        for snapshot in snapshots:
            for secret in secrets:
                assert secret not in snapshot
