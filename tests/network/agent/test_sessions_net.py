"""End-to-end sessions between agents on the in-memory network (virtual time): migration, loss, a dead mix."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import pytest

from anonmail.agent.outbox import queue_mail
from tests.network.agent.test_agent import anyio_backend, network, start_user, wait_until, wall_clock  # noqa: F401

pytestmark = pytest.mark.network

N = 200


def _sessions(agent, peer):
    box = agent.store.sessions_box(peer.address.fingerprint)
    assert box is not None
    return agent.e2e._sessions(peer.address.fingerprint, box[0])


@pytest.mark.anyio
@pytest.mark.timeout(900)
async def test_200_each_way_with_loss_and_a_dead_mix_each_opens_exactly_once(tmp_path):
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path, loss=0.10, mix_overrides={"lambda_loop": 0.0},
                                provider_overrides={"lambda_loop": 0.0})
        settings = dict(link_loss=0.10, ack_timeout=5.0, lambda_payload=20.0, lambda_loop=0.2)
        alice = await start_user(stack, net, tg, "alice", "alpha", 1, **settings)
        bob = await start_user(stack, net, tg, "bob", "beta", 2, **settings)
        alice.store.add_contact("bob", str(bob.address), now=wall_clock())
        bob.store.add_contact("alice", str(alice.address), now=wall_clock())
        for i in range(N):  # both start at once: two sessions, one chosen by both
            queue_mail(alice.store, to="bob", subject=f"a{i}", body=f"from alice {i}".encode(), now=wall_clock())
            queue_mail(bob.store, to="alice", subject=f"b{i}", body=f"from bob {i}".encode(), now=wall_clock())
        await wait_until(lambda: len(bob.store.inbox()) >= N // 4, timeout=3600)
        await net.kill_mix("mix-2-0")  # what it holds is lost; paths through it lose everything until it is back
        await anyio.sleep(20)
        await net.restart_mix("mix-2-0")
        await wait_until(lambda: all(m.state == "acknowledged" for a in (alice, bob) for m in a.store.outbox()),
                         timeout=4 * 3600)
        await anyio.sleep(60)  # late duplicates of retransmitted fragments arrive and are merged
        for receiver, prefix in ((bob, "a"), (alice, "b")):
            subjects = [m.subject for m in receiver.store.inbox()]
            assert sorted(subjects) == sorted(f"{prefix}{i}" for i in range(N))  # none lost, none twice
            assert receiver.stats.bad_entries == 0  # nothing failed to open
        assert alice.stats.retransmissions > 0 and bob.stats.retransmissions > 0
        assert sum(n.stats.dropped.get("link_loss", 0) for n in net.nodes.values()) > 0
        a, b = _sessions(alice, bob), _sessions(bob, alice)
        assert a.sending().session_id == b.sending().session_id  # the tie-break agreed


@pytest.mark.anyio
async def test_an_existing_contact_moves_to_a_session_without_the_user_doing_anything(tmp_path):
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path)
        alice = await start_user(stack, net, tg, "alice", "alpha", 1)
        bob = await start_user(stack, net, tg, "bob", "beta", 2)
        # A contact from before the upgrade: its certificates are known, no session, no bundle.
        from anonmail.clients.provider import lookup_keys

        identity, certs = await lookup_keys(alice.router, net.provider_address("beta"), bob.address)
        alice.store.add_contact("bob", str(bob.address), now=wall_clock())
        alice.store.add_contact_certs(bob.address.fingerprint, identity,
                                      [(c.to_bytes(), c.not_before, c.not_after) for c in certs])
        assert alice.store.sessions_box(bob.address.fingerprint) is None
        queue_mail(alice.store, to="bob", subject="after the upgrade", body=b"hello", now=wall_clock())
        await wait_until(lambda: len(bob.store.inbox()) == 1)
        assert bob.store.inbox()[0].body == b"hello"
        assert alice.store.sessions_box(bob.address.fingerprint) is not None
        assert alice.store.bundle(bob.address.fingerprint) is None  # used up by the session it started
        # Bob's one-time prekey that alice's session used is gone from his store.
        used = {k for k, *_ in bob.store.prekeys("one_time")}
        assert len(used) == 99


@pytest.mark.anyio
async def test_forward_secrecy_recorded_fragments_stay_closed_after_the_keys_are_seized(tmp_path):
    """Record every fragment the providers hand out; after the users read and delete, seize everything."""
    from anonmail.agent import account
    from anonmail.agent.e2e import EndToEnd
    from anonmail.agent.store import AgentStore
    from anonmail.core import fragments as F
    from anonmail.core import mailproto
    from anonmail.errors import SessionError

    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path)
        alice = await start_user(stack, net, tg, "alice", "alpha", 1)
        bob = await start_user(stack, net, tg, "bob", "beta", 2)
        recorded: list[tuple[object, bytes]] = []
        for user in (alice, bob):
            handle = user.inbound.handle_entries

            def recording(entries, user=user, handle=handle):
                entries = list(entries)
                recorded.extend((user, e.data) for e in entries if e.kind == mailproto.ENTRY_FRAGMENT)
                return handle(entries)

            user.inbound.handle_entries = recording
        alice.store.add_contact("bob", str(bob.address), now=wall_clock())
        bob.store.add_contact("alice", str(alice.address), now=wall_clock())
        secrets = [f"secret number {i}".encode() for i in range(6)]
        for i, text in enumerate(secrets):
            sender, receiver = (alice, "bob") if i % 2 == 0 else (bob, "alice")
            queue_mail(sender.store, to=receiver, subject=f"s{i}", body=text, now=wall_clock())
            target = bob if sender is alice else alice
            await wait_until(lambda t=target, n=i // 2 + 1: len(t.store.inbox()) == n)
        await anyio.sleep(30)
        for user in (alice, bob):  # read, then deleted
            for message in user.store.inbox():
                user.store.delete_inbox(message.id)
        # The attacker now holds both identity keys and every current state (the stores).
        opened = 0
        for user, sealed in recorded:
            seized = AgentStore(user.store.path)
            stack.callback(seized.close)
            keys = account.my_secrets(seized, user.identity)
            try:
                fragment = F.open_fragment(sealed, recipient_keys=keys, recipient_address=user.address,
                                           recipient=user.identity)
            except F.FragmentError:
                continue  # a loop or an ACK path; nothing to read
            if fragment.sender == user.address:
                continue  # our own loop cover
            opened += 1
            assert fragment.fragment.count == 1
            with pytest.raises(SessionError):
                EndToEnd(seized, user.identity).open_incoming(fragment.sender, fragment.sender_identity,
                                                              fragment.fragment.message_id, fragment.fragment.data,
                                                              now=int(wall_clock()))
            assert not any(s in fragment.fragment.data for s in secrets)
        assert opened >= len(secrets)
