"""The egress provider's delivery plan: pure steps from unwrapped packets to mailbox entries.

The provider's worker thread runs them around its two store calls::

    results ──classify──▶ Candidate | Reply(drop cover's SURB) | Drop(bad_payload) | unchanged
            ──admit──▶ Candidate | Drop(unknown_mailbox)
            ──(store.store_within_quota of every Candidate: one transaction that also evicts
               the oldest entries of a mailbox over quota, its ACK replies first)──▶
            ──settle──▶ Stored(size, ack) | Answered(ack) | Drop(store_error, drop_cover)

Every fragment and every drop cover carries an ACK SURB, and both are answered the same way,
so every payload slot of a sender returns exactly one ACK to her mailbox whether it carried
mail or cover (docs/design.md, "Cover traffic and ACKs"). An ACK is packaged only in
:func:`settle`, i.e. after the commit: a crash can never ACK something that was not stored.
The packaged ACK starts at *this* provider (the SURB's first hop): the node puts it back into
its own inbound queue, where the hold its sender chose for this hop decides when it leaves. A
SURB that does not start here is not answered (the provider will not choose an ACK's timing).

A full mailbox still stores and ACKs (what it evicts is told to its owner at the next fetch),
so an ACK never tells a sender whether the owner has fetched; unknown-mailbox deliveries get no
ACK. Nothing here touches SQLite or the network.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from anonmail.core import sphinx
from anonmail.core.fragments import ACK_MESSAGE, KIND_DROP, CoverPayload, decode_payload
from anonmail.core.mailproto import ENTRY_FRAGMENT, ENTRY_REPLY
from anonmail.errors import FragmentError
from anonmail.provider.store import NewEntry
from mixnode.decisions import Answered, Decision, Drop, DropReason, Stored, Unwrapped

__all__ = ["Candidate", "Reply", "classify", "admit", "settle"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A delivery that becomes a mailbox entry if the mailbox exists and has room."""

    entry: NewEntry
    ack: sphinx.Surb | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """Drop cover, discarded here, whose SURB is answered with an ACK exactly as a fragment's."""

    ack: sphinx.Surb


Step = Unwrapped | Decision | Candidate | Reply


def classify(result: Unwrapped | Decision) -> Step:
    """A delivery becomes a :class:`Candidate`, a :class:`Reply` (drop cover) or a drop; the rest pass unchanged."""
    if isinstance(result, sphinx.Deliver):
        try:
            payload = decode_payload(result.payload)
        except FragmentError:
            return Drop(DropReason.BAD_PAYLOAD)
        if isinstance(payload, CoverPayload):
            # Drop cover ends here (answered); a loop goes on to the node, which knows its own loops.
            if payload.kind == KIND_DROP:
                return Reply(payload.ack_surb) if payload.ack_surb is not None else Drop(DropReason.DROP_COVER)
            return result
        return Candidate(NewEntry(result.mailbox_id, ENTRY_FRAGMENT, payload.sealed), payload.ack_surb)
    if isinstance(result, sphinx.SurbDelivery):
        return Candidate(NewEntry(result.mailbox_id, ENTRY_REPLY, result.surb_id + result.body))
    return result


def admit(steps: Sequence[Step], known: Container[bytes]) -> list[Step]:
    """Keep the candidates whose mailbox exists, in order; the others are ``unknown_mailbox``."""
    return [Drop(DropReason.UNKNOWN_MAILBOX) if isinstance(s, Candidate) and s.entry.mailbox_id not in known
            else s for s in steps]


def _ack(surb: sphinx.Surb | None, node_id: bytes) -> bytes | None:
    """The ACK packet for ``surb`` if its first hop is this node (so its sender times it), else None."""
    if surb is None or surb.first_hop != node_id:
        return None
    return sphinx.package_surb(surb, ACK_MESSAGE)


def settle(steps: Sequence[Step], committed: bool, node_id: bytes) -> list[Unwrapped | Decision]:
    """After the store call: candidates become Stored (with their ACK) or store_error; replies become Answered."""
    out: list[Unwrapped | Decision] = []
    for step in steps:
        if isinstance(step, Reply):
            ack = _ack(step.ack, node_id)
            out.append(Drop(DropReason.DROP_COVER) if ack is None else Answered(ack))
        elif not isinstance(step, Candidate):
            out.append(step)
        elif not committed:
            out.append(Drop(DropReason.STORE_ERROR))  # not stored, so not acknowledged: the sender retransmits
        else:
            out.append(Stored(len(step.entry.data), _ack(step.ack, node_id)))
    return out
