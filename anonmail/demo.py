"""The in-memory demo: one message from Alice to Bob through every layer, with ACKs back.

Nodes are the real sans-IO packet code (:mod:`anonmail.core.sphinx`,
:mod:`anonmail.core.fragments`) wired together by an event queue in virtual time, so the
demo runs in a second and shows exactly what each hop does and learns. The later network
issues replace the event queue with real processes over Tor and I2P.
"""

from __future__ import annotations

import heapq
import os
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from anonmail.core import fragments as F
from anonmail.core import sphinx as S
from anonmail.core.address import Address
from anonmail.core.keys import EncryptionKey, IdentityKey, node_id
from anonmail.core.sizes import PACKET_BYTES

__all__ = ["run_memory_demo", "DemoNode"]


@dataclass
class DemoNode:
    """A provider or mix in the demo: its keys and what it saw."""

    name: str
    role: str
    identity: IdentityKey = field(default_factory=IdentityKey.generate)
    sphinx_secret: bytes = b""
    sphinx_public: bytes = b""
    processed: int = 0

    def __post_init__(self) -> None:
        self.sphinx_secret, self.sphinx_public = S.generate_node_keypair()
        self.node_id = node_id(self.identity.public)

    def hop(self, delay_ms: int = 0) -> S.Hop:
        """This node as a hop of a route."""
        return S.Hop(self.node_id, self.sphinx_public, delay_ms)


@dataclass
class _User:
    name: str
    provider: DemoNode
    identity: IdentityKey = field(default_factory=IdentityKey.generate)
    enc: EncryptionKey = field(default_factory=EncryptionKey.generate)

    @property
    def address(self) -> Address:
        return Address.for_key(self.identity.public, self.provider.name)


def run_memory_demo(
    *,
    extra_bytes: int = 200 * 1024,
    delay_mean_ms: float = 500.0,
    seed: int | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Send one message Alice → Bob through ingress, 3 mix layers and egress; return figures."""
    say = say or (lambda _msg: None)
    rnd = random.Random(seed)
    rng = rnd.randbytes if seed is not None else os.urandom

    provider_a = DemoNode("provider-a", "provider")
    provider_b = DemoNode("provider-b", "provider")
    mixes = [DemoNode(f"mix-{layer}", f"mix layer {layer}") for layer in (1, 2, 3)]
    nodes = {n.node_id: n for n in (provider_a, provider_b, *mixes)}
    alice, bob = _User("Alice", provider_a), _User("Bob", provider_b)
    say(f"Alice is {alice.address}")
    say(f"Bob   is {bob.address}")
    say("Network: provider-a (ingress) → mix-1 → mix-2 → mix-3 → provider-b (egress)")

    text = (
        "Hello Bob,\n\nthis message crossed three mix layers. No hop knew both "
        "where it came from and where it went.\n\n-- Alice\n"
    ).encode()
    message = text + rnd.randbytes(extra_bytes)
    message_id = rng(F.MESSAGE_ID_BYTES)
    frags = F.split_message(message, message_id)
    say(
        f"Alice writes {len(message):,} bytes → {len(frags)} fragments of ≤ {F.FRAGMENT_DATA_BYTES} bytes,"
        f" each sealed to Bob's key and carried as the {S.PAYLOAD_BYTES}-byte payload"
        f" of one {PACKET_BYTES:,}-byte packet"
    )

    def delay() -> int:
        return int(rnd.expovariate(1.0 / delay_mean_ms)) if delay_mean_ms > 0 else 0

    events: list[tuple[float, int, bytes, bytes, int]] = []  # time, seq, node, packet, fragment (-1: ACK)
    seq = 0
    pending_acks: dict[bytes, tuple[S.SurbKeys, int]] = {}
    sent_at: dict[int, float] = {}
    for frag in frags:
        ack_route = [mixes[0].hop(delay()), mixes[1].hop(delay()), mixes[2].hop(delay()), provider_a.hop()]
        surb_keys, surb = S.build_surb(ack_route, alice.address.mailbox_id, rng)
        pending_acks[surb_keys.surb_id] = (surb_keys, frag.index)
        sealed = F.seal_fragment(
            frag,
            sender=alice.identity,
            sender_address=alice.address,
            recipient_address=bob.address,
            recipient_key=bob.enc.public,
        )
        route = [provider_a.hop(), mixes[0].hop(delay()), mixes[1].hop(delay()), mixes[2].hop(delay()), provider_b.hop()]
        packet = S.build_forward(route, bob.address.mailbox_id, F.encode_fragment_payload(surb, sealed), rng)
        t0 = frag.index * 1000.0  # one packet per second from Alice's Poisson slots (simplified)
        sent_at[frag.index] = t0
        heapq.heappush(events, (t0, seq, provider_a.node_id, packet, frag.index))
        seq += 1

    mailbox_bob: list[tuple[float, bytes]] = []
    mailbox_alice: list[S.SurbDelivery] = []
    trace: list[str] = []
    while events:
        now, _, nid, packet, label = heapq.heappop(events)
        node = nodes[nid]
        node.processed += 1
        decision = S.process(packet, node.sphinx_secret)
        if isinstance(decision, S.Forward):
            if label == 0:
                trace.append(f"{node.name} holds {decision.delay_ms} ms → {nodes[decision.next_node].name}")
            heapq.heappush(events, (now + decision.delay_ms, seq, decision.next_node, decision.packet, label))
            seq += 1
        elif isinstance(decision, S.Deliver):
            payload = F.decode_payload(decision.payload)
            assert isinstance(payload, F.FragmentPayload)
            mailbox_bob.append((now, payload.sealed))  # stored first, then acknowledged
            ack = S.package_surb(payload.ack_surb, F.ACK_MESSAGE)
            heapq.heappush(events, (now, seq, payload.ack_surb.first_hop, ack, -1))
            seq += 1
        else:
            mailbox_alice.append(decision)
    say("Fragment 0's path: " + "; ".join(trace) + " (each hop sees only its neighbours)")

    reassembler = F.Reassembler()
    received = None
    sender = None
    latencies = []
    for stored_at, sealed in mailbox_bob:
        opened = F.open_fragment(sealed, recipient_keys=[bob.enc.secret], recipient_address=bob.address)
        sender = opened.sender
        latencies.append(stored_at - sent_at[opened.fragment.index])
        done = reassembler.add(opened)
        if done is not None:
            received = done
    acked = set()
    for delivery in mailbox_alice:
        keys, index = pending_acks.pop(delivery.surb_id)
        if S.open_surb_reply(keys, delivery.body) == F.ACK_MESSAGE:
            acked.add(index)
    ok = received == message and sender == alice.address
    if received is not None:
        say(f"Bob's agent fetched {len(mailbox_bob)} packets, reassembled {len(received):,} bytes from {sender}:")
        say("    " + received[: len(text)].decode().replace("\n", "\n    ").rstrip())
    say(f"Alice got {len(acked)}/{len(frags)} delivery ACKs through single-use reply blocks")
    return {
        "ok": ok and len(acked) == len(frags),
        "message_bytes": len(message),
        "fragments": len(frags),
        "packets": sum(n.processed for n in nodes.values()),
        "acks": len(acked),
        "mean_virtual_latency_s": round(statistics.fmean(latencies) / 1000, 3) if latencies else None,
        "delay_mean_ms_per_hop": delay_mean_ms,
    }
