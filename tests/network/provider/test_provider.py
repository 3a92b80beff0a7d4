"""Providers on an in-process network (MemoryMixnet: 3 authorities, 3 layers x 2 mixes, 2 providers), virtual time."""

from __future__ import annotations

import base64
import json
import os

import anyio
import pytest

from anonmail.core import sphinx
from anonmail.core.address import Address
from anonmail.core.fragments import (
    ACK_MESSAGE,
    KIND_DROP,
    encode_cover_payload,
    encode_fragment_payload,
    open_fragment,
    seal_fragment,
    split_message,
)
from anonmail.core.keys import EncryptionKey, IdentityKey, certify_encryption_key
from anonmail.core.mailproto import ENTRY_FRAGMENT, ENTRY_REPLY, b64e, sign_auth
from anonmail.core.pki import Consensus
from anonmail.core.sizes import PACKET_BYTES
from anonmail.core.wire import Packet, Role
from anonmail.errors import ProtocolError
from anonmail.testnet.memory import LOCAL_RULES_PARAMS, MemoryMixnet
from anonmail.net.framed import FramedStream
from anonmail.clients.provider import ProviderClient, lookup_keys
from anonmail.provider.config import DEFAULT_FETCH_BATCH

pytestmark = [pytest.mark.network, pytest.mark.virtual_time]

EPOCH_SECONDS = 3600
#: Virtual Unix time at which the clock starts: 10 minutes into an epoch.
T0 = 1_800_000_000 - 1_800_000_000 % EPOCH_SECONDS + 600
QUIET = {"lambda_loop": 0.0}


def wall_clock() -> float:
    return T0 + anyio.current_time()


def start(tmp_path, **provider_overrides):
    return MemoryMixnet.start(
        tmp_path, wall_clock=wall_clock, mix_overrides=QUIET, provider_overrides={**QUIET, **provider_overrides},
        rng_seed=6, params=LOCAL_RULES_PARAMS,
    )


class User:
    """A test user: identity, encryption key, certificate, address at a provider."""

    def __init__(self, provider: str) -> None:
        self.identity = IdentityKey.generate()
        self.enc = EncryptionKey.generate()
        self.cert = certify_encryption_key(self.identity, self.enc.public, not_before=T0 - 60, lifetime_s=86400)
        self.address = Address.for_key(self.identity.public, provider)

    async def connect(self, net: MemoryMixnet, op: str = "register", **kw) -> ProviderClient:
        return await ProviderClient.connect(
            net.client_router("user"), net.provider_address(self.address.provider), self.identity,
            self.address.provider, op=op, **kw,
        )


def hops(consensus: Consensus, names: list[str], delay_ms: int = 50) -> list[sphinx.Hop]:
    """Hops through named nodes: mixes hold ``delay_ms``, providers none."""
    out = []
    for name in names:
        d = consensus.by_name(name)
        out.append(sphinx.Hop(d.node_id, d.sphinx_key, delay_ms if d.layer > 0 else 0))
    return out


def mail_packet(consensus, sender: User, recipient: User, text: bytes = b"hello bob", *, mailbox=None):
    """A fragment packet sender -> recipient along a full path, with an ACK SURB back to the sender."""
    ingress, egress = sender.address.provider, recipient.address.provider
    # The SURB starts at the egress provider, which holds the ACK for the delay chosen here (issue 15).
    back = hops(consensus, [egress, "mix-1-1", "mix-2-1", "mix-3-1", ingress])
    back[0] = sphinx.Hop(back[0].node_id, back[0].public_key, 50)
    keys, surb = sphinx.build_surb(back, sender.address.mailbox_id)
    frag = split_message(text, os.urandom(16))[0]
    sealed = seal_fragment(frag, sender=sender.identity, sender_address=sender.address,
                           recipient_address=recipient.address, recipient_identity=recipient.identity.public,
                           recipient_key=recipient.enc.public)
    route = hops(consensus, [ingress, "mix-1-0", "mix-2-0", "mix-3-0", egress])
    packet = sphinx.build_forward(route, mailbox or recipient.address.mailbox_id, encode_fragment_payload(surb, sealed))
    return packet, keys


async def until(predicate, timeout: float = 60.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_mail_is_stored_at_the_egress_and_its_ack_returns_to_the_sender(tmp_path):
    async with start(tmp_path) as net:
        consensus = await net.wait_consensus()
        alice, bob = User("alpha"), User("beta")
        a = await alice.connect(net)
        b = await bob.connect(net, certs=[bob.cert])
        packet, ack_keys = mail_packet(consensus, alice, bob, b"hello bob")
        await a.send_packets([packet])
        beta, alpha = net.providers["beta"], net.providers["alpha"]
        await until(lambda: alpha.mail["stored"] == 1)
        assert beta.mail["stored"] == 1 and beta.mail["acks_sent"] == 1

        fetched = await b.fetch()
        assert [e.kind for e in fetched.entries] == [ENTRY_FRAGMENT] and fetched.remaining == 0
        sealed = fetched.entries[0].data
        opened = open_fragment(sealed, recipient_keys=[bob.enc.secret], recipient_address=bob.address,
                               recipient=bob.identity)
        assert opened.sender == alice.address and opened.fragment.data == b"hello bob"
        # The egress provider holds nothing that names the sender in clear.
        for secret in (str(alice.address).encode(), alice.identity.public, alice.address.fingerprint):
            assert secret not in sealed
        with beta.store._lock:  # the whole mailbox file, too
            rows = beta.store._conn.execute("SELECT data FROM entries").fetchall()
        assert all(str(alice.address).encode() not in bytes(r[0]) for r in rows)

        reply = await a.fetch()
        assert [e.kind for e in reply.entries] == [ENTRY_REPLY]
        data = reply.entries[0].data
        assert data[:16] == ack_keys.surb_id
        assert sphinx.open_surb_reply(ack_keys, data[16:]) == ACK_MESSAGE

        assert await b.confirm([fetched.entries[0].entry_id]) == 1
        assert (await b.fetch()).entries == []
        # Status files carry counts, never a user's mailbox id or address.
        for provider in (alpha, beta):
            text = json.dumps(provider.status())
            for user in (alice, bob):
                assert user.address.mailbox_id.hex() not in text
                assert b64e(user.address.mailbox_id) not in text
                assert str(user.address).split("@")[0] not in text
        await a.aclose()
        await b.aclose()


@pytest.mark.anyio
async def test_auth_register_login_and_refusals(tmp_path):
    async with start(tmp_path) as net:
        alice = User("alpha")
        with pytest.raises(ProtocolError) as info:
            await alice.connect(net, op="login")
        assert info.value.reason == "unknown_account"
        client = await alice.connect(net, op="register")
        assert client.mailbox == alice.address.mailbox_id and client.limits["fetch_batch"] == 32
        await client.aclose()
        client = await alice.connect(net, op="login")
        await client.aclose()
        with pytest.raises(ProtocolError) as info:  # alpha's user at beta
            await ProviderClient.connect(net.client_router(), net.provider_address("beta"), alice.identity, "alpha")
        assert info.value.reason == "wrong_provider"

        # A signature over another nonce, provider or operation is refused, and the session ends.
        for nonce_for, provider_for, op_for in ((os.urandom(32), "alpha", "login"), (None, "beta", "login"),
                                                (None, "alpha", "register")):
            stream = await net.client_router().connect(net.provider_address("alpha"))
            framed = FramedStream(stream)
            await framed.hello(Role.CLIENT)
            await framed.expect_hello()
            challenge = (await framed.receive()).message
            nonce = nonce_for or base64.b64decode(challenge["nonce"])
            reply = await framed.request({
                "type": "auth", "op": "login", "identity": b64e(alice.identity.public),
                "signature": b64e(sign_auth(alice.identity, nonce, provider_for, op_for)), "certs": [],
            })
            assert reply["type"] == "error" and reply["reason"] == "bad_signature"
            assert await framed.receive() is None
            await framed.aclose()
        assert net.providers["alpha"].mail["refused_bad_signature"] == 3

    async with MemoryMixnet.start(tmp_path / "closed", wall_clock=wall_clock, mix_overrides=QUIET,
                                  provider_overrides={**QUIET, "registration": "closed"}, rng_seed=1,
                                  params=LOCAL_RULES_PARAMS) as net:
        with pytest.raises(ProtocolError) as info:
            await User("alpha").connect(net)
        assert info.value.reason == "registration_closed"


@pytest.mark.anyio
async def test_fetch_is_always_exactly_fetch_batch_entries_and_confirm_deletes(tmp_path):
    async with start(tmp_path) as net:
        bob = User("beta")
        client = await bob.connect(net)
        beta = net.providers["beta"]
        from anonmail.provider.store import NewEntry

        sizes = []

        async def fetch():
            before = client._framed.bytes_received
            result = await client.fetch()
            sizes.append(client._framed.bytes_received - before)
            return result

        assert (await fetch()).entries == []
        batch = client.fetch_batch
        assert batch == DEFAULT_FETCH_BATCH
        beta.store.store_many([NewEntry(bob.address.mailbox_id, ENTRY_FRAGMENT, bytes([i]) * 100)
                               for i in range(batch + 4)], 0.0)
        beta.store.store_many([NewEntry(os.urandom(16), ENTRY_FRAGMENT, b"other")], 0.0)
        first = await fetch()
        assert len(first.entries) == batch and first.remaining == 4
        assert [e.data[0] for e in first.entries] == list(range(batch))  # oldest first
        assert await client.confirm([e.entry_id for e in first.entries] + [10**9]) == batch
        second = await fetch()
        assert len(second.entries) == 4 and second.remaining == 0
        assert await client.confirm([e.entry_id for e in second.entries]) == 4
        assert (await fetch()).entries == []
        # The bytes on the wire do not depend on what the mailbox held.
        assert len(set(sizes)) == 1 and sizes[0] > batch * PACKET_BYTES
        # Another mailbox's entry is never deleted by our confirm.
        assert beta.store.totals().entries == 1
        await client.aclose()


@pytest.mark.anyio
async def test_stored_mail_survives_a_provider_crash_and_restart(tmp_path):
    async with start(tmp_path) as net:
        consensus = await net.wait_consensus()
        alice, bob = User("alpha"), User("beta")
        a, b = await alice.connect(net), await bob.connect(net)
        await b.aclose()
        packet, _ = mail_packet(consensus, alice, bob, b"durable")
        await a.send_packets([packet])
        await until(lambda: net.providers["beta"].mail["stored"] == 1)
        await net.kill_mix("beta")  # abrupt: cancelled, nothing flushed on the way out
        await net.restart_mix("beta")
        b = await bob.connect(net, op="login")
        fetched = await b.fetch()
        assert len(fetched.entries) == 1
        opened = open_fragment(fetched.entries[0].data, recipient_keys=[bob.enc.secret],
                               recipient_address=bob.address, recipient=bob.identity)
        assert opened.fragment.data == b"durable"
        await a.aclose()
        await b.aclose()


@pytest.mark.anyio
async def test_full_mailbox_evicts_and_acks_unknown_mailbox_cover_and_rate_limit_are_counted(tmp_path):
    async with start(tmp_path, quota_entries=2, send_rate=1.0, send_burst=5) as net:
        consensus = await net.wait_consensus()
        alice, bob = User("alpha"), User("beta")
        a, b = await alice.connect(net), await bob.connect(net)
        beta, alpha = net.providers["beta"], net.providers["alpha"]
        # Over quota: the third is stored and acknowledged like the others (an ACK never tells
        # whether the owner fetched); the oldest entry makes room, and the owner is told.
        for i in range(3):
            await a.send_packets([mail_packet(consensus, alice, bob, b"m%d" % i)[0]])
            await anyio.sleep(2)  # stay under the rate limit
        await until(lambda: beta.mail["evicted"] == 1)
        await anyio.sleep(5)
        assert beta.mail["stored"] == 3 and beta.mail["acks_sent"] == 3
        assert beta.store.usage(bob.address.mailbox_id).entries == 2
        assert alpha.mail["stored"] == 3  # three ACKs came back
        fetched = await b.fetch()
        assert fetched.full and fetched.evicted == 1 and len(fetched.entries) == 2
        # Unknown mailbox: dropped, no ACK.
        await a.send_packets([mail_packet(consensus, alice, bob, mailbox=os.urandom(16))[0]])
        await until(lambda: beta.stats.dropped["unknown_mailbox"] == 1)
        # Drop cover: discarded and counted.
        route = hops(consensus, ["alpha", "mix-1-0", "mix-2-0", "mix-3-0", "beta"])
        await anyio.sleep(2)
        await a.send_packets([sphinx.build_forward(route, os.urandom(16), encode_cover_payload(KIND_DROP))])
        await until(lambda: beta.stats.dropped["drop_cover"] == 1)
        assert beta.mail["acks_sent"] == 3
        # Rate limit: a burst of 12 at once; the bucket holds 5.
        await anyio.sleep(10)
        burst = [sphinx.build_forward(route, os.urandom(16), encode_cover_payload(KIND_DROP)) for _ in range(12)]
        await a.send_packets(burst)
        await until(lambda: alpha.stats.dropped["rate_limited"] == 7)
        await until(lambda: beta.stats.dropped["drop_cover"] == 6)
        assert alpha.status()["rate_limited"] == 7
        await a.aclose()
        await b.aclose()


@pytest.mark.anyio
async def test_garbage_from_a_client_is_counted_and_the_provider_keeps_serving(tmp_path):
    async with start(tmp_path) as net:
        alpha = net.providers["alpha"]
        # Bad framing: the session is closed and counted.
        stream = await net.client_router().connect(net.provider_address("alpha"))
        framed = FramedStream(stream)
        await framed.hello(Role.CLIENT)
        await framed.expect_hello()
        await framed.receive()  # challenge
        await stream.send(b"\x7f\x00\x00\x00\x01x")
        with anyio.fail_after(10):
            while alpha.stats.dropped["client_bad_frame"] == 0:
                await anyio.sleep(0.05)
        await stream.aclose()
        # Malformed requests get errors and the session goes on.
        stream = await net.client_router().connect(net.provider_address("alpha"))
        framed = FramedStream(stream)
        await framed.hello(Role.CLIENT)
        await framed.expect_hello()
        await framed.receive()  # challenge
        assert (await framed.request({"type": "auth", "op": "login"}))["reason"] == "malformed"
        assert (await framed.request({"type": "fetch"}))["reason"] == "not_authenticated"
        assert (await framed.request({"type": "keys", "address": "nobody"}))["reason"] == "malformed"
        assert (await framed.request({"type": "dance"}))["reason"] == "unknown_request"
        await framed.send(Packet(os.urandom(PACKET_BYTES)))  # before auth: dropped, counted
        assert (await framed.request({"type": "fetch"}))["reason"] == "not_authenticated"
        assert alpha.stats.dropped["unauthenticated_packet"] == 1
        await framed.aclose()
        # An authenticated client sending a garbage packet and a bad confirm.
        user = User("alpha")
        client = await user.connect(net)
        dropped_before = sum(alpha.stats.dropped.values())
        await client.send_packets([os.urandom(PACKET_BYTES)])
        with pytest.raises(ProtocolError) as info:
            await client._guard(client._request, {"type": "confirm", "ids": [1, 2]}, "confirmed")
        assert info.value.reason == "malformed"
        assert (await client.fetch()).entries == []
        await until(lambda: sum(alpha.stats.dropped.values()) == dropped_before + 1)  # bad MAC (or bad point)
        await client.aclose()
        # And it still serves.
        client = await User("alpha").connect(net)
        await client.aclose()


@pytest.mark.anyio
async def test_key_lookup_is_self_certifying(tmp_path):
    async with start(tmp_path) as net:
        bob = User("beta")
        client = await bob.connect(net, certs=[bob.cert])
        identity, certs = await lookup_keys(net.client_router(), net.provider_address("beta"), bob.address)
        assert identity == bob.identity.public and [c.to_bytes() for c in certs] == [bob.cert.to_bytes()]
        newer = certify_encryption_key(bob.identity, EncryptionKey.generate().public, not_before=T0, lifetime_s=86400)
        await client.publish_keys([newer])
        _, certs = await lookup_keys(net.client_router(), net.provider_address("beta"), bob.address)
        assert [c.to_bytes() for c in certs] == [newer.to_bytes(), bob.cert.to_bytes()]
        # Someone else's certificate is refused.
        mallory = User("beta")
        with pytest.raises(ProtocolError) as info:
            await client.publish_keys([mallory.cert])
        assert info.value.reason == "bad_cert"
        with pytest.raises(ProtocolError) as info:
            await lookup_keys(net.client_router(), net.provider_address("beta"), mallory.address)
        assert info.value.reason == "unknown_user"
        await client.aclose()


@pytest.mark.anyio
async def test_memory_network_mix_can_be_killed_and_restarted(tmp_path):
    async with start(tmp_path) as net:
        assert len(net.mixes) == 6 and set(net.providers) == {"alpha", "beta"} and net.threshold == 2
        assert len(net.pins) == 3
        consensus = await net.wait_consensus()
        assert all(node.directory.current() == consensus for node in net.nodes.values())
        alice, bob = User("alpha"), User("beta")
        a, b = await alice.connect(net), await bob.connect(net)
        await net.kill_mix("mix-2-0")
        packet, _ = mail_packet(consensus, alice, bob, b"while down")
        await a.send_packets([packet])
        await anyio.sleep(5)
        assert net.providers["beta"].mail["stored"] == 0
        restarted = await net.restart_mix("mix-2-0")
        assert net.mixes["mix-2-0"] is restarted
        await until(lambda: net.providers["beta"].mail["stored"] == 1, timeout=120)  # the link reconnects
        assert len((await b.fetch()).entries) == 1
        await a.aclose()
        await b.aclose()



@pytest.mark.anyio
async def test_attack_a_user_cannot_meter_the_providers_traffic_from_entry_ids(tmp_path):
    """Mallory, an ordinary user, reads the ids of her own entries while others' mail arrives between them."""
    from anonmail.provider.store import NewEntry

    async with start(tmp_path) as net:
        mallory = User("beta")
        client = await mallory.connect(net)
        beta = net.providers["beta"]
        others = [os.urandom(16) for _ in range(3)]
        for i in range(10):
            beta.store.store_many([NewEntry(mallory.address.mailbox_id, ENTRY_FRAGMENT, bytes([i]) * 50)], 0.0)
            beta.store.store_many([NewEntry(others[j % 3], ENTRY_REPLY, b"r" * 40) for j in range(i)], 0.0)
        result = await client.fetch()
        ids = [e.entry_id for e in result.entries]
        assert [e.data[0] for e in result.entries] == list(range(10))  # still oldest first
        gaps = [b - a for a, b in zip(ids, ids[1:])]
        # With a global counter the gaps are 1, 2, ..., 10: exactly the others' deliveries.
        assert gaps != list(range(1, 10))
        assert ids != sorted(ids) and min(ids) > 2**32  # random 63-bit ids carry no order, no count
        await client.aclose()


@pytest.mark.anyio
async def test_a_key_lookup_asks_for_a_connection_of_its_own_and_the_session_does_not(tmp_path):
    """The Tor circuit (or I2P destination) behind it is tested in tests/integration/test_lookup_isolation.py."""
    from anonmail.net.router import Router

    class RecordingRouter(Router):
        calls: list[bool] = []

        async def connect(self, address, *, isolated=False):
            self.calls.append(isolated)
            return await super().connect(address, isolated=isolated)

    async with start(tmp_path) as net:
        alice = User("beta")
        router = RecordingRouter(net.client_router("user").transports, production=False)
        session = await ProviderClient.connect(router, net.provider_address("beta"), alice.identity, "beta",
                                               op="register", certs=[alice.cert])
        await lookup_keys(router, net.provider_address("beta"), alice.address)
        await lookup_keys(router, net.provider_address("beta"), alice.address)
        await session.aclose()
        assert router.calls == [False, True, True]
