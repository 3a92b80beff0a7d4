"""Agent packets, sans-IO: a fragment travels provider → 3 mixes → provider and its ACK comes back."""

from __future__ import annotations

import random

from anonmail.agent.packets import build_drop_packet, build_fragment_packet, surb_keys_from_bytes, surb_keys_to_bytes
from anonmail.core import fragments as F
from anonmail.core import sphinx
from anonmail.core.address import Address
from anonmail.core.keys import EncryptionKey, IdentityKey
from anonmail.core.pki import build_consensus, sign_descriptor
from anonmail.core.sizes import PACKET_BYTES

EPOCH = 5


def network():
    nodes, secrets = [], {}
    for name, role, layer in [("alpha", "provider", 0), ("beta", "provider", 0)] + [
            (f"mix-{l}-{i}", "mix", l) for l in (1, 2, 3) for i in (0, 1)]:
        identity = IdentityKey.generate()
        secret, public = sphinx.generate_node_keypair()
        d = sign_descriptor(identity, name=name, role=role, layer=layer, epoch=EPOCH, sphinx_key=public,
                            addresses=[f"mem://{name}"], production=False)
        nodes.append(d)
        secrets[d.node_id] = secret
    return build_consensus(EPOCH, 3600, nodes), secrets


def deliver(packet, first, secrets):
    """Run a packet through the nodes; return (names visited, final decision)."""
    node, visited = first, []
    while True:
        result = sphinx.process(packet, secrets[node.node_id])
        visited.append(node.name)
        if isinstance(result, sphinx.Forward):
            node, packet = CONSENSUS.by_id(result.next_node), result.packet
            continue
        return visited, result


CONSENSUS, SECRETS = network()


def test_fragment_goes_through_every_layer_and_its_ack_comes_home():
    rng = random.Random(1)
    alice, bob = IdentityKey.generate(), IdentityKey.generate()
    alice_addr, bob_addr = Address.for_key(alice.public, "alpha"), Address.for_key(bob.public, "beta")
    bob_key = EncryptionKey.generate()
    fragment = F.split_message(b"hello bob", b"i" * 16)[0]
    built = build_fragment_packet(rng, CONSENSUS, home=CONSENSUS.by_name("alpha"),
                                  recipient_provider=CONSENSUS.by_name("beta"), sender=alice,
                                  sender_address=alice_addr, recipient=bob_addr, recipient_identity=bob.public,
                                  recipient_key=bob_key.public,
                                  fragment=fragment, delay_mean=0.5)
    assert len(built.packet) == PACKET_BYTES
    visited, final = deliver(built.packet, CONSENSUS.by_name("alpha"), SECRETS)
    assert visited[0] == "alpha" and visited[-1] == "beta"
    assert [int(n.split("-")[1]) for n in visited[1:-1]] == [1, 2, 3]
    assert isinstance(final, sphinx.Deliver) and final.mailbox_id == bob_addr.mailbox_id
    payload = F.decode_payload(final.payload)
    opened = F.open_fragment(payload.sealed, recipient_keys=[bob_key.secret], recipient_address=bob_addr,
                             recipient=bob)
    assert opened.sender == alice_addr and opened.fragment.data == b"hello bob"
    # beta answers on the SURB: beta itself holds it first (the delay Alice chose), then three mixes to
    # alpha, which files it for Alice.
    assert payload.ack_surb.first_hop == CONSENSUS.by_name("beta").node_id
    reply = sphinx.package_surb(payload.ack_surb, F.ACK_MESSAGE)
    held = sphinx.process(reply, SECRETS[payload.ack_surb.first_hop])
    assert isinstance(held, sphinx.Forward) and held.delay_ms > 0
    visited, final = deliver(reply, CONSENSUS.by_id(payload.ack_surb.first_hop), SECRETS)
    assert visited[0] == "beta" and [int(n.split("-")[1]) for n in visited[1:-1]] == [1, 2, 3]
    assert visited[-1] == "alpha"
    assert isinstance(final, sphinx.SurbDelivery) and final.mailbox_id == alice_addr.mailbox_id
    keys = surb_keys_from_bytes(surb_keys_to_bytes(built.surb_keys))
    assert final.surb_id == keys.surb_id
    assert sphinx.open_surb_reply(keys, final.body) == F.ACK_MESSAGE


ALICE_MAILBOX = b"a" * 16


def drop(rng, consensus=CONSENSUS):
    return build_drop_packet(rng, consensus, home=consensus.by_name("alpha"), ack_mailbox=ALICE_MAILBOX,
                             delay_mean=0.1)


def test_drop_cover_reaches_a_provider_that_answers_it_to_our_mailbox_like_mail():
    built = drop(random.Random(2))
    visited, final = deliver(built.packet, CONSENSUS.by_name("alpha"), SECRETS)
    assert len(visited) == 5 and visited[-1] in ("alpha", "beta")
    cover = F.decode_payload(final.payload)
    assert isinstance(cover, F.CoverPayload) and cover.kind == F.KIND_DROP
    # Its provider answers the SURB: held there, three mixes, then alpha files it for Alice.
    assert cover.ack_surb.first_hop == CONSENSUS.by_name(visited[-1]).node_id
    visited, final = deliver(sphinx.package_surb(cover.ack_surb, F.ACK_MESSAGE),
                             CONSENSUS.by_id(cover.ack_surb.first_hop), SECRETS)
    assert len(visited) == 5 and visited[-1] == "alpha"
    assert isinstance(final, sphinx.SurbDelivery) and final.mailbox_id == ALICE_MAILBOX
    assert sphinx.open_surb_reply(built.surb_keys, final.body) == F.ACK_MESSAGE


def test_every_transmission_draws_fresh_delays_and_paths():
    rng = random.Random(3)
    routes = {drop(rng).route for _ in range(40)}
    assert len(routes) > 4


def test_attack_a_small_order_key_in_a_held_consensus_is_a_typed_error_naming_the_node():
    """Even a consensus that slipped a weak key past parsing cannot crash a builder: NodeKeyError names the node."""
    import dataclasses

    import pytest

    from anonmail.core.pki import Consensus
    from anonmail.errors import NodeKeyError

    weak = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
    nodes = tuple(dataclasses.replace(n, sphinx_key=weak) if n.role == "mix" and n.layer == 2 else n
                  for n in CONSENSUS.nodes)
    poisoned = Consensus(CONSENSUS.epoch, CONSENSUS.epoch_seconds, nodes)
    with pytest.raises(NodeKeyError) as info:
        drop(random.Random(3), poisoned)
    assert poisoned.by_id(info.value.node_id).layer == 2
