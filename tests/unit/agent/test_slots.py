"""The payload-slot decision alone: recorded step results in, recorded steps and outcome out."""

from __future__ import annotations

import pytest

from anonmail.agent.slots import (
    BuildCover,
    BuildReal,
    NotBuilt,
    PayloadQueue,
    Send,
    SlotOutcome,
    payload_slot,
    retransmit_after,
)

A0, A1, B0 = (b"a" * 16, 0), (b"a" * 16, 1), (b"b" * 16, 0)


def run_slot(queue: PayloadQueue, replies: list[object], *, ready: bool = True) -> tuple[list[object], SlotOutcome]:
    """Drive one slot, answering each step with the next recorded reply; return the steps and the outcome."""
    steps: list[object] = []
    slot = payload_slot(queue, ready=ready)
    reply: object = None
    pending = list(replies)
    try:
        while True:
            step = slot.send(reply)
            steps.append(step)
            reply = pending.pop(0)
    except StopIteration as stop:
        assert not pending, f"replies left over: {pending}"
        return steps, stop.value


def queue_of(*items: tuple[bytes, int]) -> PayloadQueue:
    queue = PayloadQueue()
    queue.refill([(m, i, 0, None) for m, i in items], now=0.0, ack_timeout=10.0)
    return queue


@pytest.mark.parametrize(
    ("queued", "replies", "ready", "steps", "outcome", "left"),
    [
        # Not ready (no consensus, provider or session): nothing is built, the queue is untouched.
        ([A0], [], False, [], SlotOutcome.MISSED, [A0]),
        # A due fragment leaves in the slot.
        ([A0, A1], [b"pA0", True], True, [BuildReal(A0), Send(b"pA0")], SlotOutcome.REAL, [A1]),
        # Nothing due: drop cover.
        ([], [b"cover", True], True, [BuildCover(), Send(b"cover")], SlotOutcome.DROP, []),
        # The first fragment cannot be built now: the next one takes the slot; the first is forgotten.
        ([A0, B0], [NotBuilt.UNAVAILABLE, b"pB0", True], True, [BuildReal(A0), BuildReal(B0), Send(b"pB0")], SlotOutcome.REAL, []),
        # No fragment can be built: cover instead, so the slot is still filled.
        ([A0], [NotBuilt.UNAVAILABLE, b"cover", True], True, [BuildReal(A0), BuildCover(), Send(b"cover")], SlotOutcome.DROP, []),
        # No path for cover: the slot is missed.
        ([], [NotBuilt.UNAVAILABLE], True, [BuildCover()], SlotOutcome.MISSED, []),
        # A node's key failed while building the fragment: it waits in front, cover fills the slot.
        ([A0, B0], [NotBuilt.NODE_KEY, b"cover", True], True, [BuildReal(A0), BuildCover(), Send(b"cover")],
         SlotOutcome.DROP, [A0, B0]),
        # A node's key failed while building cover: cover once more (without that node).
        ([], [NotBuilt.NODE_KEY, b"cover", True], True, [BuildCover(), BuildCover(), Send(b"cover")],
         SlotOutcome.DROP, []),
        # Failed keys twice: the slot is missed, the fragment still waits in front.
        ([A0], [NotBuilt.NODE_KEY, NotBuilt.NODE_KEY, NotBuilt.NODE_KEY], True,
         [BuildReal(A0), BuildCover(), BuildCover()], SlotOutcome.MISSED, [A0]),
        # The session broke: the slot is lost, not the fragment, which goes back to the front.
        ([A0, A1], [b"pA0", False], True, [BuildReal(A0), Send(b"pA0")], SlotOutcome.MISSED, [A0, A1]),
        # A cover packet that did not leave: missed, and nothing to put back.
        ([], [b"cover", False], True, [BuildCover(), Send(b"cover")], SlotOutcome.MISSED, []),
    ],
)
def test_one_slot(queued, replies, ready, steps, outcome, left):
    queue = queue_of(*queued)
    assert run_slot(queue, replies, ready=ready) == (steps, outcome)
    assert queue.items() == left
    assert all(item in queue for item in left) and len(queue) == len(left)


def test_a_lost_slot_does_not_queue_a_fragment_twice():
    queue = queue_of(A0)
    slot = payload_slot(queue, ready=True)
    assert next(slot) == BuildReal(A0)
    assert slot.send(b"pA0") == Send(b"pA0")
    queue.refill([(A0[0], A0[1], 1, -100.0)], now=0.0, ack_timeout=10.0)  # the refiller re-queued it meanwhile
    with pytest.raises(StopIteration) as stop:
        slot.send(False)
    assert stop.value.value is SlotOutcome.MISSED
    assert queue.items() == [A0]


def test_refill_orders_new_fragments_last_and_overdue_ones_first():
    queue = queue_of(A0)
    rows = [
        (B0[0], B0[1], 0, None),  # never sent: back of the queue
        (A1[0], A1[1], 1, 0.0),  # sent once at t=0, timeout 10: overdue at t=11
        (A0[0], A0[1], 0, None),  # already queued: not twice
        (b"c" * 16, 0, 2, 5.0),  # sent twice, last at t=5: due after 15 s (1.5 × 10), not yet at t=11
    ]
    assert queue.refill(rows, now=11.0, ack_timeout=10.0) == 1
    assert queue.items() == [A1, A0, B0]


@pytest.mark.parametrize(("attempts", "after"), [(1, 10.0), (2, 15.0), (3, 20.0), (9, 20.0)])
def test_retransmission_backs_off_to_twice_the_timeout(attempts, after):
    assert retransmit_after(10.0, attempts) == after
