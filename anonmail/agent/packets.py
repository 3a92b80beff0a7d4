"""What an agent puts on the wire: real fragments and drop cover with ACK SURBs, loop cover (sans-IO).

Routes (docs/design.md, "Roles and the path of a message", "Cover traffic and ACKs")::

    forward:  my provider → mix L1 → L2 → L3 → recipient's provider      (delays on mixes only)
    ACK SURB: recipient's provider (holds it) → L1 → L2 → L3 → my provider (built here, used there)
    drop:     my provider → L1 → L2 → L3 → a random provider, which discards it and answers its
              ACK SURB (random provider (holds it) → L1 → L2 → L3 → my provider) exactly as mail
    loop:     a real fragment to myself; its ACK SURB leads to a random mailbox at a random
              provider (discarded there), so my provider sees one fragment, as for mail from others.

So every payload slot, mail or drop, returns exactly one ACK to my mailbox, after the same
number of Exp(delay_mean) holds: seven (three mixes out, the far provider, three mixes back).
The far provider's hold is the first hop of the SURB: chosen here, not by that provider.

Every hop's delay is drawn from :func:`anonmail.core.policy.sample_delay_ms` with the agent's
mean; each transmission (first or retransmitted) draws a fresh path, fresh delays and a fresh
SURB. Randomness: ``rng`` (paths, delays) and ``randbytes`` (key material) are passed in.
"""

from __future__ import annotations

import os
import random
import struct
from dataclasses import dataclass

from anonmail.core import fragments as F
from anonmail.core import sphinx
from anonmail.core.address import Address
from anonmail.core.keys import IdentityKey
from anonmail.core.pki import Consensus, NodeDescriptor
from anonmail.core.policy import NodeRef, choose_path, sample_delay_ms
from anonmail.core.sizes import MAILBOX_ID_BYTES
from anonmail.errors import PathError, StoreError

__all__ = [
    "Built",
    "forward_hops",
    "build_fragment_packet",
    "build_drop_packet",
    "random_provider",
    "surb_keys_to_bytes",
    "surb_keys_from_bytes",
]


@dataclass(frozen=True)
class Built:
    """A packet ready for the ingress provider, and the SURB keys to open its ACK (if any)."""

    packet: bytes
    surb_keys: sphinx.SurbKeys | None
    route: tuple[str, ...]  # node names, for tests and debugging (never logged at INFO)


def _hop(ref: NodeRef, delay_ms: int) -> sphinx.Hop:
    descriptor: NodeDescriptor = ref.data  # type: ignore[assignment]
    return sphinx.Hop(ref.node_id, descriptor.sphinx_key, delay_ms)


def forward_hops(rng: random.Random, consensus: Consensus, start: NodeDescriptor, end: NodeDescriptor,
                 delay_mean: float) -> tuple[list[sphinx.Hop], list[str]]:
    """Hops start → three mix layers → end; mixes hold Exp(delay_mean), providers nothing."""
    topology = consensus.topology()
    mixes = choose_path(rng, topology, ingress=start.node_ref(), egress=end.node_ref())
    cap = consensus.params.max_delay_ms  # mixes drop a longer hold
    hops = [_hop(start.node_ref(), 0)] + [_hop(m, sample_delay_ms(rng, delay_mean, cap)) for m in mixes]
    hops.append(_hop(end.node_ref(), 0))
    return hops, [start.name, *(m.name for m in mixes), end.name]


def _surb_hops(rng: random.Random, consensus: Consensus, start: NodeDescriptor, home: NodeDescriptor,
               delay_mean: float) -> list[sphinx.Hop]:
    """Hops of an ACK SURB: the answering provider (held Exp(delay_mean), like a mix), three mixes, our provider."""
    mixes = choose_path(rng, consensus.topology(), ingress=start.node_ref(), egress=home.node_ref())
    cap = consensus.params.max_delay_ms
    return [_hop(ref, sample_delay_ms(rng, delay_mean, cap)) for ref in (start.node_ref(), *mixes)] + [
        _hop(home.node_ref(), 0)]


def random_provider(rng: random.Random, consensus: Consensus) -> NodeDescriptor:
    """A provider drawn uniformly from the consensus (where drop cover and loop ACKs end)."""
    providers = [p for p in consensus.providers if p.schemes]
    if not providers:
        raise PathError("the consensus lists no provider")
    return providers[rng.randrange(len(providers))]


def build_fragment_packet(
    rng: random.Random,
    consensus: Consensus,
    *,
    home: NodeDescriptor,
    recipient_provider: NodeDescriptor,
    sender: IdentityKey,
    sender_address: Address,
    recipient: Address,
    recipient_identity: bytes,
    recipient_key: bytes,
    fragment: F.Fragment,
    delay_mean: float,
    ack_to: tuple[NodeDescriptor, bytes] | None = None,
    randbytes=os.urandom,
) -> Built:
    """A sealed, authenticated fragment for ``recipient`` with a fresh ACK SURB back to our mailbox.

    ``ack_to`` (provider, mailbox id) sends the ACK elsewhere: loops send it to a random mailbox.
    """
    ack_home, ack_mailbox = ack_to if ack_to is not None else (home, sender_address.mailbox_id)
    surb_keys, surb = sphinx.build_surb(
        _surb_hops(rng, consensus, recipient_provider, ack_home, delay_mean), ack_mailbox, randbytes)
    sealed = F.seal_fragment(fragment, sender=sender, sender_address=sender_address,
                             recipient_address=recipient, recipient_identity=recipient_identity,
                             recipient_key=recipient_key)
    hops, names = forward_hops(rng, consensus, home, recipient_provider, delay_mean)
    packet = sphinx.build_forward(hops, recipient.mailbox_id, F.encode_fragment_payload(surb, sealed), randbytes)
    return Built(packet, surb_keys, tuple(names))


def build_drop_packet(rng: random.Random, consensus: Consensus, *, home: NodeDescriptor, ack_mailbox: bytes,
                      delay_mean: float, randbytes=os.urandom) -> Built:
    """Drop cover: a full path to a random provider, which discards it and ACKs it to ``ack_mailbox`` (ours)."""
    target = random_provider(rng, consensus)
    surb_keys, surb = sphinx.build_surb(_surb_hops(rng, consensus, target, home, delay_mean), ack_mailbox, randbytes)
    hops, names = forward_hops(rng, consensus, home, target, delay_mean)
    payload = F.encode_cover_payload(F.KIND_DROP, randbytes, ack_surb=surb)
    packet = sphinx.build_forward(hops, randbytes(MAILBOX_ID_BYTES), payload, randbytes)
    return Built(packet, surb_keys, tuple(names))


_COUNT = struct.Struct(">B")


def surb_keys_to_bytes(keys: sphinx.SurbKeys) -> bytes:
    """Serialize SURB keys for the agent store (they open the ACK, so they stay local)."""
    return keys.surb_id + keys.ktilde + _COUNT.pack(len(keys.hop_keys)) + b"".join(keys.hop_keys)


def surb_keys_from_bytes(data: bytes) -> sphinx.SurbKeys:
    """Parse stored SURB keys; StoreError if damaged."""
    k = 16
    if len(data) < 2 * k + 1 or (len(data) - 2 * k - 1) != data[2 * k] * k:
        raise StoreError("stored SURB keys are damaged")
    count = data[2 * k]
    hops = tuple(data[2 * k + 1 + i * k : 2 * k + 1 + (i + 1) * k] for i in range(count))
    return sphinx.SurbKeys(data[:k], data[k : 2 * k], hops)
