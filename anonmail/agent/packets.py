"""What an agent puts on the wire: real fragments with ACK SURBs, drop cover, loop cover (sans-IO).

Routes (docs/design.md, "Roles and the path of a message")::

    forward:  my provider → mix L1 → L2 → L3 → recipient's provider      (delays on mixes only)
    ACK SURB: recipient's provider → L1 → L2 → L3 → my provider          (built here, used there)
    drop:     my provider → L1 → L2 → L3 → a random provider (discarded there)
    loop:     a real fragment to myself, with its own ACK SURB: to every provider and mix it is
              indistinguishable from mail, so loops measure exactly the path mail takes.

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
    """Hops of an ACK SURB: mixes (from the recipient's provider) back to our provider."""
    mixes = choose_path(rng, consensus.topology(), ingress=start.node_ref(), egress=home.node_ref())
    cap = consensus.params.max_delay_ms
    return [_hop(m, sample_delay_ms(rng, delay_mean, cap)) for m in mixes] + [_hop(home.node_ref(), 0)]


def build_fragment_packet(
    rng: random.Random,
    consensus: Consensus,
    *,
    home: NodeDescriptor,
    recipient_provider: NodeDescriptor,
    sender: IdentityKey,
    sender_address: Address,
    recipient: Address,
    recipient_key: bytes,
    fragment: F.Fragment,
    delay_mean: float,
    randbytes=os.urandom,
) -> Built:
    """A sealed, signed fragment for ``recipient`` with a fresh ACK SURB back to our mailbox."""
    surb_keys, surb = sphinx.build_surb(
        _surb_hops(rng, consensus, recipient_provider, home, delay_mean), sender_address.mailbox_id, randbytes)
    sealed = F.seal_fragment(fragment, sender=sender, sender_address=sender_address,
                             recipient_address=recipient, recipient_key=recipient_key)
    hops, names = forward_hops(rng, consensus, home, recipient_provider, delay_mean)
    packet = sphinx.build_forward(hops, recipient.mailbox_id, F.encode_fragment_payload(surb, sealed), randbytes)
    return Built(packet, surb_keys, tuple(names))


def build_drop_packet(rng: random.Random, consensus: Consensus, *, home: NodeDescriptor, delay_mean: float,
                      randbytes=os.urandom) -> Built:
    """Drop cover: a full path to a random provider, which discards it."""
    providers = [p for p in consensus.providers if p.schemes]
    if not providers:
        raise PathError("the consensus lists no provider")
    target = providers[rng.randrange(len(providers))]
    hops, names = forward_hops(rng, consensus, home, target, delay_mean)
    packet = sphinx.build_forward(hops, randbytes(MAILBOX_ID_BYTES), F.encode_cover_payload(F.KIND_DROP, randbytes),
                                  randbytes)
    return Built(packet, None, tuple(names))


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
