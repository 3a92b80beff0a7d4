"""The packet pipeline's decision step: pure functions from packets to typed decisions.

A node (mix or provider) moves bytes and time; everything it *decides* about a packet is made
here, without I/O, so it can be tested with recorded inputs and outputs::

    packets ──unwrap_batch──▶ Unwrapped ──(node persists fresh tags)──▶ decide ──▶ Decision
                  │                                                        │
      sphinxbatch.process_batch over the epoch window's keys,          Forward(next_node, packet, delay_ms)
      replay check (a callback over an in-memory set)      LoopReturned(mailbox_id)
                                                           Stored(size, ack)   (providers)
                                                           Answered(ack)       (providers)
                                                           Drop(reason)

Every drop carries a :class:`DropReason`, the one vocabulary of the node's ``dropped``
counters (a ``str`` enum, so counters and ``status.json`` keep the plain names).
Deliveries (:class:`sphinx.Deliver`, :class:`sphinx.SurbDelivery`) that a node's delivery
service does not turn into :class:`Stored` or :class:`Drop` reach :func:`decide`, which keeps
the node's own returning loops and drops the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeAlias

from anonmail.core import sphinx
from anonmail.core.sphinxbatch import process_batch
from anonmail.errors import PacketError

__all__ = [
    "DropReason",
    "Refusal",
    "Rules",
    "Forward",
    "LoopReturned",
    "Stored",
    "Answered",
    "Drop",
    "Decision",
    "Unwrapped",
    "UnwrapResult",
    "unwrap_batch",
    "fail_batch",
    "check_forward",
    "decide",
]


class DropReason(StrEnum):
    """Why a packet, frame or connection was dropped (the names of the ``dropped`` counters)."""

    # Sphinx processing (the ``reason`` of each PacketError subclass)
    MALFORMED = "malformed"
    BAD_SIZE = "bad_size"
    BAD_MAC = "bad_mac"
    BAD_ALPHA = "bad_alpha"
    BAD_ROUTING = "bad_routing"
    BAD_BODY = "bad_body"
    REPLAY = "replay"
    TOO_LARGE = "too_large"
    # the node's own state
    STORE_ERROR = "store_error"
    QUEUE_FULL = "queue_full"
    NOT_FOR_A_MIX = "not_for_a_mix"
    UNKNOWN_NEXT_HOP = "unknown_next_hop"
    LINK_FULL = "link_full"
    LINK_LOSS = "link_loss"
    LOOP_NO_PATH = "loop_no_path"
    LOOP_BAD_KEY = "loop_bad_key"
    UNEXPECTED_ERROR = "unexpected_error"  # a bug one item triggered: contained, counted, logged once
    DELAY_TOO_LONG = "delay_too_long"  # the sender asked for a longer hold than the consensus allows
    # connections and frames
    TOO_MANY_CONNECTIONS = "too_many_connections"
    NO_HELLO = "no_hello"
    BAD_FRAME = "bad_frame"
    UNEXPECTED_FRAME = "unexpected_frame"
    # providers
    BAD_PAYLOAD = "bad_payload"
    DROP_COVER = "drop_cover"
    FOREIGN_LOOP = "foreign_loop"
    UNKNOWN_MAILBOX = "unknown_mailbox"
    UNAUTHENTICATED_PACKET = "unauthenticated_packet"
    RATE_LIMITED = "rate_limited"
    CLIENT_BAD_FRAME = "client_bad_frame"
    CLIENT_UNEXPECTED_FRAME = "client_unexpected_frame"
    # the rules every node enforces
    WRONG_NEXT_HOP = "wrong_next_hop"
    EPOCH_KEY_GONE = "epoch_key_gone"
    PEER_RATE_LIMITED = "peer_rate_limited"


class Refusal(StrEnum):
    """Why an inbound connection was closed before or instead of serving it (``refused`` counters)."""

    TOO_MANY_UNAUTHENTICATED = "too_many_unauthenticated"
    TOO_MANY_NODE_LINKS = "too_many_node_links"
    TOO_MANY_CLIENTS = "too_many_clients"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    BAD_FRAME = "bad_frame"
    CLIENT_AT_MIX = "client_at_mix"
    BAD_ROLE = "bad_role"
    # a failed handshake (the LinkAuthError reasons)
    TRUNCATED = "truncated"
    OVERSIZED = "oversized"
    BAD_MESSAGE = "bad_message"
    WRONG_KEY = "wrong_key"
    UNEXPECTED = "unexpected"
    CLOSED = "closed"
    # the peer is authenticated but may not send here
    NO_CONSENSUS = "no_consensus"
    UNKNOWN_PEER = "unknown_peer"
    WRONG_LAYER = "wrong_layer"


@dataclass(frozen=True, slots=True)
class Forward:
    """Hold ``packet`` for ``delay_ms`` (0: not at all), then queue it on the link to ``next_node``."""

    next_node: bytes
    packet: bytes
    delay_ms: int = 0
    #: The epoch whose key unwrapped it (held packets of an epoch whose key is gone are purged).
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class LoopReturned:
    """One of this node's own loop cover packets came back (mailbox id of the loop)."""

    mailbox_id: bytes


@dataclass(frozen=True, slots=True)
class Stored:
    """A provider committed a delivery of ``size`` data bytes; its ``ack`` (if any) exists only now.

    ``ack`` is the reply packet whose first hop is this provider: it re-enters the node's own
    inbound queue, so the hold its *sender* put in the header for this hop decides when it leaves.
    """

    size: int
    ack: bytes | None = None


@dataclass(frozen=True, slots=True)
class Answered:
    """A provider discarded drop cover and answers its SURB: ``ack`` re-enters the inbound queue like a stored fragment's."""

    ack: bytes


@dataclass(frozen=True, slots=True)
class Drop:
    """Discard the packet and count it under ``reason``."""

    reason: DropReason


Decision: TypeAlias = Forward | LoopReturned | Stored | Answered | Drop
#: What unwrapping one packet gives: Sphinx's own result, or a drop.
Unwrapped: TypeAlias = sphinx.Forward | sphinx.Deliver | sphinx.SurbDelivery | Drop


@dataclass(frozen=True, slots=True)
class UnwrapResult:
    """One result per packet, in order, the epoch each unwrapped under, and the new tags to persist first."""

    results: list[Unwrapped]
    fresh_tags: dict[int, list[bytes]] = field(default_factory=dict)
    epochs: list[int | None] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Rules:
    """What a node enforces on every packet it would forward.

    ``next_hops``: the node ids of the next layer in the consensus held (None: no consensus
    yet, the link pool then drops unknown hops); ``max_delay_ms``: the longest hold allowed, the
    consensus's ``max_delay`` (None: no consensus yet); a sender must not make its packets stand
    out by their hold time, nor fill a queue with packets held for weeks;
    ``foreign_final``: what a final-hop packet that is none of our loops is dropped as.
    """

    foreign_final: DropReason = DropReason.NOT_FOR_A_MIX
    max_delay_ms: int | None = None
    next_hops: Container[bytes] | None = None


def unwrap_batch(
    packets: Sequence[bytes],
    keys: Sequence[tuple[int, bytes]],
    is_replay: Callable[[int, bytes], bool],
    on_fault: Callable[[Exception], None] | None = None,
) -> UnwrapResult:
    """Unwrap each packet with the first key of ``keys`` ((epoch, secret) pairs) whose MAC fits.

    ``is_replay(epoch, tag)`` answers (and remembers) whether a tag was seen in that epoch. A
    packet no key opens is ``Drop(BAD_MAC)``; every other rejection is the PacketError's reason.
    The caller must persist ``fresh_tags`` before it acts on any result (else :func:`fail_batch`).
    Any other exception one packet raises is contained: ``on_fault(exc)``, ``Drop(UNEXPECTED_ERROR)``.
    """
    results: list[Unwrapped] = []
    epochs: list[int | None] = []
    fresh: dict[int, list[bytes]] = {}
    outcomes = process_batch(packets, [secret for _, secret in keys], lambda i, tag: is_replay(keys[i][0], tag))
    for index, outcome in outcomes:
        opened: int | None = None
        if isinstance(outcome, PacketError):
            outcome = Drop(DropReason(outcome.reason))
        elif isinstance(outcome, Exception):  # containment: one packet never stops the node
            if on_fault is not None:
                on_fault(outcome)
            outcome = Drop(DropReason.UNEXPECTED_ERROR)
        elif index is not None:
            opened = keys[index][0]
            fresh.setdefault(opened, []).append(outcome.tag)
        results.append(outcome)
        epochs.append(opened)
    return UnwrapResult(results, fresh, epochs)


def fail_batch(results: Sequence[Unwrapped | Decision], reason: DropReason) -> list[Drop]:
    """Every result that is not already a drop becomes ``Drop(reason)`` (nothing of it may go on)."""
    return [r if isinstance(r, Drop) else Drop(reason) for r in results]


def check_forward(forward: Forward, rules: Rules) -> Forward | Drop:
    """Enforce the per-hop delay bound and the stratified order on one packet to forward."""
    if rules.max_delay_ms is not None and forward.delay_ms > rules.max_delay_ms:
        return Drop(DropReason.DELAY_TOO_LONG)
    if rules.next_hops is not None and forward.next_node not in rules.next_hops:
        return Drop(DropReason.WRONG_NEXT_HOP)
    return forward


def decide(result: Unwrapped | Decision, pending_loops: Container[bytes], rules: Rules,
           epoch: int | None = None) -> Decision:
    """The decision for one result after delivery: forward (within the rules), count our loop, or drop.

    ``pending_loops`` holds the mailbox ids of this node's loops in flight; a final-hop packet
    that is none of them is dropped as ``rules.foreign_final``. (A provider's ACK in
    ``Stored.ack`` or ``Answered.ack`` re-enters its inbound queue and is decided here like any
    packet, so these rules bound its hold too; the entry is stored either way.)
    """
    if isinstance(result, sphinx.Forward):
        return check_forward(Forward(result.next_node, result.packet, result.delay_ms, epoch), rules)
    if isinstance(result, sphinx.Deliver):
        if result.mailbox_id in pending_loops:
            return LoopReturned(result.mailbox_id)
        return Drop(rules.foreign_final)
    if isinstance(result, sphinx.SurbDelivery):
        return Drop(rules.foreign_final)
    return result
