"""Who may send to whom: the stratified order, enforced on both ends of every link (pure).

::

    users ──▶ provider (layer 0) ──▶ layer 1 ──▶ layer 2 ──▶ layer 3 ──▶ provider (layer 0)

A node accepts an authenticated link only from the layer before its own (layer 1 from
providers, layer k from layer k-1, a provider from the last mix layer; users reach a provider
in a client session) and forwards only to the layer after it. A node is found by the link key
its descriptor publishes, in the consensus the node holds.
"""

from __future__ import annotations

from collections.abc import Iterable

from anonmail.core.pki import Consensus, NodeDescriptor
from anonmail.errors import LinkAuthError

__all__ = ["previous_layer", "next_layer_of", "next_hops", "authorize_peer", "by_link_key"]


def _mix_layers(consensus: Consensus) -> int:
    return len(consensus.topology().layers)


def previous_layer(layer: int, mix_layers: int) -> int:
    """The layer whose nodes may send to a node of ``layer`` (0 is the providers)."""
    return mix_layers if layer == 0 else layer - 1


def next_layer_of(layer: int, mix_layers: int) -> int:
    """The layer a node of ``layer`` forwards to (0 is the providers)."""
    return 0 if layer >= mix_layers else layer + 1


def next_hops(consensus: Consensus, me: bytes) -> frozenset[bytes]:
    """Node ids ``me`` may forward to in this consensus (empty if ``me`` is not in it)."""
    descriptor = consensus.by_id(me)
    if descriptor is None:
        return frozenset()
    target = next_layer_of(descriptor.layer, _mix_layers(consensus))
    return frozenset(n.node_id for n in consensus.nodes if n.layer == target and n.node_id != me)


def by_link_key(consensuses: Iterable[Consensus | None], link_key: bytes) -> NodeDescriptor | None:
    """The node publishing ``link_key`` in the first of these consensuses that lists one."""
    for consensus in consensuses:
        if consensus is None:
            continue
        for node in consensus.nodes:
            if node.link_key == link_key:
                return node
    return None


def authorize_peer(consensuses: Iterable[Consensus | None], me: bytes, link_key: bytes) -> NodeDescriptor:
    """The node behind an authenticated link key, if it may send to ``me``; LinkAuthError if not.

    ``consensuses`` are those the node holds (current first, then the next one), so a link
    made across an epoch boundary is judged by whichever lists both ends.
    """
    held = [c for c in consensuses if c is not None]
    if not held:
        raise LinkAuthError("no consensus yet: cannot tell who the peer is", reason="no_consensus")
    known = False
    for consensus in held:
        mine = consensus.by_id(me)
        peer = by_link_key([consensus], link_key)
        if peer is None:
            continue
        known = True
        if mine is not None and peer.layer == previous_layer(mine.layer, _mix_layers(consensus)):
            return peer
    if not known:
        raise LinkAuthError("the peer's link key is not in the consensus", reason="unknown_peer")
    raise LinkAuthError("the peer is not in the layer that sends to this node", reason="wrong_layer")
