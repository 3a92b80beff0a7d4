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
from anonmail.provider.delivery import Candidate, Reply, admit, classify, settle
from anonmail.provider.store import NewEntry
from mixnode.decisions import Answered, Drop, DropReason, Stored

pytestmark = pytest.mark.unit

BOB, CAROL, NOBODY = (bytes([i]) * MAILBOX_ID_BYTES for i in (1, 2, 3))
#: This provider's node id: every SURB it answers must start here.
US = b"F" * 16


def _surb(first_hop: bytes = US) -> sphinx.Surb:
    r = random.Random(5)
    _, public = sphinx.generate_node_keypair(lambda n: r.randbytes(n))
    _, surb = sphinx.build_surb([sphinx.Hop(first_hop, public, 0)], b"\x04" * MAILBOX_ID_BYTES,
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
                                   sphinx.Deliver(BOB, encode_cover_payload(KIND_DROP, ack_surb=surb), b"t"),
                                   sphinx.Deliver(BOB, b"\x99" * 10, b"t")]]
    assert steps[0] == Candidate(NewEntry(BOB, ENTRY_FRAGMENT, fragment.payload[1 + sphinx.SURB_BYTES:]), surb)
    assert steps[1] is loop and steps[3] is forward  # the node decides about its loops and forwards
    assert steps[2] == Candidate(NewEntry(CAROL, ENTRY_REPLY, b"i" * 16 + b"body"))
    assert steps[4:] == [Reply(surb), Drop(DropReason.BAD_PAYLOAD)]  # drop cover is answered, like mail


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
    assert settle(steps, committed=True, node_id=US) == [
        Stored(40, sphinx.package_surb(surb, ACK_MESSAGE)),
        Stored(20),
        Drop(DropReason.UNKNOWN_MAILBOX),
    ]
    assert settle(steps, committed=False, node_id=US) == (
        [Drop(DropReason.STORE_ERROR)] * 2 + [Drop(DropReason.UNKNOWN_MAILBOX)])


def test_settle_answers_drop_cover_exactly_as_a_stored_fragment():
    surb = _surb()
    ack = sphinx.package_surb(surb, ACK_MESSAGE)
    out = settle([Reply(surb), Candidate(NewEntry(BOB, ENTRY_FRAGMENT, b"s" * 40), surb)], committed=True, node_id=US)
    assert out == [Answered(ack), Stored(40, ack)]  # the same ACK bytes for the same SURB: cover or mail


def test_attack_a_surb_that_does_not_start_here_is_not_answered():
    # The provider would otherwise choose when that ACK leaves (at once): a timing channel.
    elsewhere = _surb(first_hop=b"M" * 16)
    out = settle([Reply(elsewhere), Candidate(NewEntry(BOB, ENTRY_FRAGMENT, b"s" * 40), elsewhere)],
                 committed=True, node_id=US)
    assert out == [Drop(DropReason.DROP_COVER), Stored(40, None)]
