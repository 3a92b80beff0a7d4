"""The egress provider's delivery plan: pure steps from unwrapped packets to mailbox entries.

The provider's worker thread runs them around its two store calls::

    results ──classify──▶ Candidate | Drop(bad_payload, drop_cover) | unchanged (loops, forwards)
            ──(store.usage of each mailbox involved)──▶
            ──admit──▶ Candidate | Drop(unknown_mailbox, mailbox_full, store_error)
            ──(store.store_many of every Candidate, one transaction)──▶
            ──settle──▶ Stored(size, ack) | Drop(store_error)

An ACK is packaged only in :func:`settle`, i.e. after the commit: a crash can never ACK
something that was not stored. Over-quota and unknown-mailbox deliveries get no ACK (the sender
retransmits later). Nothing here touches SQLite or the network.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

from anonmail.core import sphinx
from anonmail.core.fragments import ACK_MESSAGE, KIND_DROP, CoverPayload, decode_payload
from anonmail.core.mailproto import ENTRY_FRAGMENT, ENTRY_REPLY
from anonmail.errors import FragmentError
from anonmail.provider.store import NewEntry, Usage
from mixnode.decisions import Decision, Drop, DropReason, Forward, Stored, Unwrapped

__all__ = ["Candidate", "Quota", "classify", "mailboxes_of", "admit", "settle"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A delivery that becomes a mailbox entry if the mailbox exists and has room."""

    entry: NewEntry
    ack: sphinx.Surb | None = None


@dataclass(frozen=True, slots=True)
class Quota:
    """How much one mailbox may hold."""

    entries: int
    bytes: int


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


def mailboxes_of(steps: Sequence[Step], known: Container[bytes]) -> set[bytes]:
    """The known mailboxes whose usage :func:`admit` needs."""
    return {s.entry.mailbox_id for s in steps if isinstance(s, Candidate) and s.entry.mailbox_id in known}


def admit(
    steps: Sequence[Step], known: Container[bytes], usage: Mapping[bytes, Usage | None], quota: Quota
) -> list[Step]:
    """Keep the candidates whose mailbox exists and stays within ``quota``, in order.

    ``usage`` holds what each mailbox of :func:`mailboxes_of` holds now (None: its store read
    failed); candidates earlier in the batch count against the same mailbox.
    """
    held = dict(usage)
    out: list[Step] = []
    for step in steps:
        if not isinstance(step, Candidate):
            out.append(step)
            continue
        mailbox = step.entry.mailbox_id
        if mailbox not in known:
            out.append(Drop(DropReason.UNKNOWN_MAILBOX))
            continue
        now = held.get(mailbox)
        if now is None:
            out.append(Drop(DropReason.STORE_ERROR))
            continue
        after = Usage(now.entries + 1, now.bytes + len(step.entry.data))
        if after.entries > quota.entries or after.bytes > quota.bytes:
            out.append(Drop(DropReason.MAILBOX_FULL))
            continue
        held[mailbox] = after
        out.append(step)
    return out


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
