"""The provider's delivery plan alone: recorded unwrap results in, entries and decisions out."""

from __future__ import annotations

import random

import pytest

from anonmail.core import sphinx
from anonmail.core.fragments import (
    ACK_MESSAGE,
    KIND_DROP,
    KIND_LOOP,
    SEALED_FRAGMENT_BYTES,
    encode_cover_payload,
    encode_fragment_payload,
)
from anonmail.core.mailproto import ENTRY_FRAGMENT, ENTRY_REPLY
from anonmail.core.sizes import MAILBOX_ID_BYTES
from anonmail.provider.delivery import Candidate, admit, classify, settle
from anonmail.provider.store import NewEntry
from mixnode.decisions import Drop, DropReason, Forward, Stored

pytestmark = pytest.mark.unit

BOB, CAROL, NOBODY = (bytes([i]) * MAILBOX_ID_BYTES for i in (1, 2, 3))


def _surb() -> sphinx.Surb:
    r = random.Random(5)
    _, public = sphinx.generate_node_keypair(lambda n: r.randbytes(n))
    _, surb = sphinx.build_surb([sphinx.Hop(b"F" * 16, public, 0)], b"\x04" * MAILBOX_ID_BYTES,
                                rng=lambda n: r.randbytes(n))
    return surb


def _fragment(mailbox: bytes, surb: sphinx.Surb, fill: int) -> sphinx.Deliver:
    return sphinx.Deliver(mailbox, encode_fragment_payload(surb, bytes([fill]) * SEALED_FRAGMENT_BYTES), b"t")


def test_classify_recorded_results():
    surb = _surb()
    fragment = _fragment(BOB, surb, 7)
    loop = sphinx.Deliver(BOB, encode_cover_payload(KIND_LOOP), b"t")
    reply = sphinx.SurbDelivery(CAROL, b"i" * 16, b"body", b"t")
    forward = sphinx.Forward(b"N" * 16, 0, 0, b"p", b"t")
    steps = [classify(r) for r in [fragment, loop, reply, forward,
                                   sphinx.Deliver(BOB, encode_cover_payload(KIND_DROP), b"t"),
                                   sphinx.Deliver(BOB, b"\x99" * 10, b"t")]]
    assert steps[0] == Candidate(NewEntry(BOB, ENTRY_FRAGMENT, fragment.payload[1 + sphinx.SURB_BYTES:]), surb)
    assert steps[1] is loop and steps[3] is forward  # the node decides about its loops and forwards
    assert steps[2] == Candidate(NewEntry(CAROL, ENTRY_REPLY, b"i" * 16 + b"body"))
    assert steps[4:] == [Drop(DropReason.DROP_COVER), Drop(DropReason.BAD_PAYLOAD)]


def test_admit_drops_only_unknown_mailboxes_never_for_quota():
    # A full mailbox is trimmed by the store, not refused here: an ACK must not say "owner has not fetched".
    steps = [Candidate(NewEntry(BOB, ENTRY_REPLY, b"x" * 10)) for _ in range(3)]
    steps += [Candidate(NewEntry(NOBODY, ENTRY_REPLY, b"y")), Drop(DropReason.DROP_COVER)]
    out = admit(steps, {BOB, CAROL})
    assert out == steps[:3] + [Drop(DropReason.UNKNOWN_MAILBOX), Drop(DropReason.DROP_COVER)]


def test_settle_packages_the_ack_only_after_a_commit():
    surb = _surb()
    steps = [Candidate(NewEntry(BOB, ENTRY_FRAGMENT, b"s" * 40), surb),
             Candidate(NewEntry(CAROL, ENTRY_REPLY, b"r" * 20)),
             Drop(DropReason.UNKNOWN_MAILBOX)]
    assert settle(steps, committed=True) == [
        Stored(40, Forward(surb.first_hop, sphinx.package_surb(surb, ACK_MESSAGE))),
        Stored(20),
        Drop(DropReason.UNKNOWN_MAILBOX),
    ]
    assert settle(steps, committed=False) == [Drop(DropReason.STORE_ERROR)] * 2 + [Drop(DropReason.UNKNOWN_MAILBOX)]
