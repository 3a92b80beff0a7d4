"""The egress provider's delivery plan: pure steps from unwrapped packets to mailbox entries.

The provider's worker thread runs them around its two store calls::

    results ──classify──▶ Candidate | Drop(bad_payload, drop_cover) | unchanged (loops, forwards)
            ──admit──▶ Candidate | Drop(unknown_mailbox)
            ──(store.store_within_quota of every Candidate: one transaction that also evicts
               the oldest entries of a mailbox over quota, its ACK replies first)──▶
            ──settle──▶ Stored(size, ack) | Drop(store_error)

An ACK is packaged only in :func:`settle`, i.e. after the commit: a crash can never ACK
something that was not stored. A full mailbox still stores and ACKs (what it evicts is told to
its owner at the next fetch), so an ACK never tells a sender whether the owner has fetched;
unknown-mailbox deliveries get no ACK. Nothing here touches SQLite or the network.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from anonmail.core import sphinx
from anonmail.core.fragments import ACK_MESSAGE, KIND_DROP, CoverPayload, decode_payload
from anonmail.core.mailproto import ENTRY_FRAGMENT, ENTRY_REPLY
from anonmail.errors import FragmentError
from anonmail.provider.store import NewEntry
from mixnode.decisions import Decision, Drop, DropReason, Forward, Stored, Unwrapped

__all__ = ["Candidate", "classify", "admit", "settle"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A delivery that becomes a mailbox entry if the mailbox exists and has room."""

    entry: NewEntry
    ack: sphinx.Surb | None = None


Step = Unwrapped | Decision | Candidate


def classify(result: Unwrapped | Decision) -> Step:
    """A delivery becomes a :class:`Candidate` (or a drop); loops and everything else pass unchanged."""
    if isinstance(result, sphinx.Deliver):
        try:
            payload = decode_payload(result.payload)
        except FragmentError:
            return Drop(DropReason.BAD_PAYLOAD)
        if isinstance(payload, CoverPayload):
            # Drop cover ends here; a loop goes on to the node, which knows its own loops.
            return Drop(DropReason.DROP_COVER) if payload.kind == KIND_DROP else result
        return Candidate(NewEntry(result.mailbox_id, ENTRY_FRAGMENT, payload.sealed), payload.ack_surb)
    if isinstance(result, sphinx.SurbDelivery):
        return Candidate(NewEntry(result.mailbox_id, ENTRY_REPLY, result.surb_id + result.body))
    return result


def admit(steps: Sequence[Step], known: Container[bytes]) -> list[Step]:
    """Keep the candidates whose mailbox exists, in order; the others are ``unknown_mailbox``."""
    return [Drop(DropReason.UNKNOWN_MAILBOX) if isinstance(s, Candidate) and s.entry.mailbox_id not in known
            else s for s in steps]


def settle(steps: Sequence[Step], committed: bool) -> list[Unwrapped | Decision]:
    """After the store call: each candidate becomes Stored with its packaged ACK, or store_error."""
    out: list[Unwrapped | Decision] = []
    for step in steps:
        if not isinstance(step, Candidate):
            out.append(step)
        elif not committed:
            out.append(Drop(DropReason.STORE_ERROR))  # not stored, so not acknowledged: the sender retransmits
        elif step.ack is None:
            out.append(Stored(len(step.entry.data)))
        else:
            ack = Forward(step.ack.first_hop, sphinx.package_surb(step.ack, ACK_MESSAGE))
            out.append(Stored(len(step.entry.data), ack))
    return out
