"""The mix's decision step alone: recorded packets in, typed decisions out (no node, no I/O)."""

from __future__ import annotations

import random

import pytest

from anonmail import errors
from anonmail.core import sphinx
from anonmail.core.sizes import MAILBOX_ID_BYTES, PACKET_BYTES
from mixnode.decisions import (
    Drop,
    DropReason,
    Forward,
    LoopReturned,
    Rules,
    Stored,
    UnwrapResult,
    check_forward,
    decide,
    fail_batch,
    unwrap_batch,
)

pytestmark = pytest.mark.unit

EPOCH = 500


def _rng(seed: int):
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def _keys(seed: int) -> tuple[bytes, bytes]:
    return sphinx.generate_node_keypair(_rng(seed))


ME_SECRET, ME_PUBLIC = _keys(1)
OLD_SECRET, OLD_PUBLIC = _keys(2)
NEXT_SECRET, NEXT_PUBLIC = _keys(3)
ME, NEXT = b"M" * 16, b"N" * 16
MAILBOX = b"\x07" * MAILBOX_ID_BYTES


def _relay(public: bytes, delay_ms: int, seed: int) -> bytes:
    route = [sphinx.Hop(ME, public, delay_ms), sphinx.Hop(NEXT, NEXT_PUBLIC, 0)]
    return sphinx.build_forward(route, MAILBOX, b"hello", rng=_rng(seed))


def _final(mailbox: bytes, seed: int) -> bytes:
    return sphinx.build_forward([sphinx.Hop(ME, ME_PUBLIC, 0)], mailbox, b"loop", rng=_rng(seed))


class SeenSet:
    """The replay check as the node runs it, recording every question it is asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, bytes]] = []
        self.seen: set[tuple[int, bytes]] = set()

    def __call__(self, epoch: int, tag: bytes) -> bool:
        self.asked.append((epoch, tag))
        if (epoch, tag) in self.seen:
            return True
        self.seen.add((epoch, tag))
        return False


def test_recorded_batch_gives_exactly_these_decisions():
    relay = _relay(ME_PUBLIC, 250, seed=10)
    loop = _final(MAILBOX, seed=11)
    stranger = _final(b"\x09" * MAILBOX_ID_BYTES, seed=12)
    not_for_me = _relay(NEXT_PUBLIC, 0, seed=13)
    inputs = [relay, relay, b"\x00" * 100, not_for_me, loop, stranger]
    seen = SeenSet()

    unwrapped = unwrap_batch(inputs, [(EPOCH, ME_SECRET)], seen)
    decisions = [decide(r, {MAILBOX}, Rules(), e) for r, e in zip(unwrapped.results, unwrapped.epochs)]

    expected_out = sphinx.process(relay, ME_SECRET)
    assert decisions == [
        Forward(NEXT, expected_out.packet, 250, EPOCH),
        Drop(DropReason.REPLAY),
        Drop(DropReason.BAD_SIZE),
        Drop(DropReason.BAD_MAC),
        LoopReturned(MAILBOX),
        Drop(DropReason.NOT_FOR_A_MIX),
    ]
    # Only packets that unwrapped leave fresh tags, under their epoch, in order; the replay none.
    tags = [t for _, t in seen.asked]
    assert unwrapped.fresh_tags == {EPOCH: [tags[0], tags[2], tags[3]]}
    assert [e for e, _ in seen.asked] == [EPOCH] * 4 and tags[0] == tags[1]


def test_packet_of_the_previous_epoch_opens_with_its_key_and_its_tag_is_filed_there():
    packet = _relay(OLD_PUBLIC, 0, seed=20)
    result = unwrap_batch([packet], [(EPOCH, ME_SECRET), (EPOCH - 1, OLD_SECRET)], SeenSet())
    assert isinstance(result.results[0], sphinx.Forward)
    assert list(result.fresh_tags) == [EPOCH - 1]
    # The same packet without that key: no epoch opens it.
    assert unwrap_batch([packet], [(EPOCH, ME_SECRET)], SeenSet()) == UnwrapResult([Drop(DropReason.BAD_MAC)], {}, [None])
    assert result.epochs == [EPOCH - 1]


def test_a_store_failure_turns_everything_that_would_move_into_store_error():
    results = [sphinx.Forward(NEXT, 5, 0, b"p", b"t"), Drop(DropReason.REPLAY), Stored(10, None),
               sphinx.Deliver(MAILBOX, b"x", b"t")]
    assert fail_batch(results, DropReason.STORE_ERROR) == [
        Drop(DropReason.STORE_ERROR), Drop(DropReason.REPLAY), Drop(DropReason.STORE_ERROR),
        Drop(DropReason.STORE_ERROR)]


def test_decide_passes_decisions_through_and_drops_final_hops_that_are_not_ours():
    surb = sphinx.SurbDelivery(MAILBOX, b"i" * 16, b"b", b"t")
    stored = Stored(3, b"ack")
    assert decide(surb, {MAILBOX}, Rules(DropReason.FOREIGN_LOOP)) == Drop(DropReason.FOREIGN_LOOP)
    assert decide(stored, set(), Rules()) is stored
    assert decide(Drop(DropReason.BAD_ALPHA), set(), Rules()) == Drop(DropReason.BAD_ALPHA)


def test_every_packet_error_reason_is_a_drop_reason():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    reasons = {errors.PacketError.reason} | {c.reason for c in subclasses(errors.PacketError)}
    assert reasons <= {r.value for r in DropReason}
    # A malformed packet of the right size is one of them, not an exception out of the step.
    result = unwrap_batch([b"\xff" * PACKET_BYTES], [(EPOCH, ME_SECRET)], SeenSet()).results
    assert isinstance(result[0], Drop)


def test_the_rules_bound_the_delay_and_keep_the_layer_order():
    relay = _relay(ME_PUBLIC, 60_001, seed=30)
    [result] = unwrap_batch([relay], [(EPOCH, ME_SECRET)], SeenSet()).results
    assert decide(result, set(), Rules(max_delay_ms=60_000)) == Drop(DropReason.DELAY_TOO_LONG)
    assert decide(result, set(), Rules(max_delay_ms=60_001, next_hops={b"O" * 16})) == Drop(DropReason.WRONG_NEXT_HOP)
    allowed = decide(result, set(), Rules(max_delay_ms=60_001, next_hops={NEXT}), EPOCH)
    assert allowed == Forward(NEXT, sphinx.process(relay, ME_SECRET).packet, 60_001, EPOCH)
    # No consensus yet: no published maximum to enforce.
    assert decide(result, set(), Rules(), EPOCH) == allowed
    ack = Forward(b"O" * 16, b"ack")
    assert check_forward(ack, Rules(next_hops={NEXT})) == Drop(DropReason.WRONG_NEXT_HOP)
    assert check_forward(ack, Rules()) is ack
