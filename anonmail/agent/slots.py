"""What the agent does in each slot of its payload stream, decided without I/O.

Every Exp(λ_P) slot sends exactly one packet to the provider, whatever the user does: the next
due fragment if one can be built, else drop cover. This module holds the decisions; the agent
(:mod:`anonmail.agent.service`) only runs the steps they ask for (build in a thread, send on the
session) and feeds the results back:

* :class:`PayloadQueue`: the fragments due to leave, in order (retransmissions first), each at
  most once, and when an unacknowledged fragment is due again (:meth:`PayloadQueue.refill`).
* :func:`payload_slot`: one slot as a generator. It yields :class:`BuildReal`,
  :class:`BuildCover` and :class:`Send` steps, receives each step's result through
  ``send()`` (a packet, or a :class:`NotBuilt` reason), and returns a :class:`SlotOutcome`
  (which counter the slot moves)::

      ready? ──no──▶ MISSED
        │ yes
      take fragment ─▶ BuildReal(item) ─packet─▶ Send ─sent─▶ REAL
        │ none left      │ UNAVAILABLE: next fragment └─not sent─▶ MISSED (fragment back in front)
        │                │ NODE_KEY: fragment back in front, cover instead
        ▼                ▼
      BuildCover ─packet─▶ Send ─sent─▶ DROP, else MISSED
        │ NODE_KEY: once more (the shell left the node out); UNAVAILABLE or twice NODE_KEY ─▶ MISSED

A slot whose packet is not sent is lost, never the mail: its fragment goes back to the front.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "COVER_ATTEMPTS",
    "FragmentRef",
    "NotBuilt",
    "PayloadQueue",
    "SlotOutcome",
    "BuildReal",
    "BuildCover",
    "Send",
    "SlotStep",
    "payload_slot",
    "retransmit_after",
]

#: (message_id, fragment index): one fragment of an outbox message.
FragmentRef = tuple[bytes, int]


class SlotOutcome(Enum):
    """What one payload slot did; the value names the agent counter it moves."""

    REAL = "packets_real"
    DROP = "packets_drop"
    MISSED = "slots_missed"


class NotBuilt(Enum):
    """Why a build step has no packet to send."""

    #: Cannot be built now (no keys for the recipient yet, no path): try the next fragment, or miss the slot.
    UNAVAILABLE = "unavailable"
    #: A node's published key failed while building; the shell has left that node out of later paths.
    NODE_KEY = "node_key"


#: Build attempts for the cover packet of one slot (a failed node key is left out before the second).
COVER_ATTEMPTS = 2


@dataclass(frozen=True)
class BuildReal:
    """Build the packet of this fragment; reply with the packet or a :class:`NotBuilt` reason."""

    item: FragmentRef


@dataclass(frozen=True)
class BuildCover:
    """Build a drop-cover packet; reply with the packet or a :class:`NotBuilt` reason."""


@dataclass(frozen=True)
class Send:
    """Hand this packet to the provider; reply True if it left, False if there is no session."""

    packet: bytes


SlotStep = BuildReal | BuildCover | Send


def retransmit_after(ack_timeout: float, attempts: int) -> float:
    """Seconds after its last sending that an unacknowledged fragment is sent again (backs off to 2×)."""
    return ack_timeout * min(1.5 ** (attempts - 1), 2.0)


class PayloadQueue:
    """Fragments waiting for a payload slot, in sending order, each at most once."""

    def __init__(self) -> None:
        self._ready: deque[FragmentRef] = deque()
        self._queued: set[FragmentRef] = set()

    def __len__(self) -> int:
        return len(self._ready)

    def __contains__(self, item: object) -> bool:
        return item in self._queued

    def items(self) -> list[FragmentRef]:
        """The queue in sending order (for tests and status)."""
        return list(self._ready)

    def refill(
        self, rows: Iterable[tuple[bytes, int, int, float | None]], *, now: float, ack_timeout: float
    ) -> int:
        """Queue never-sent fragments (at the back) and overdue ones (at the front); return how many are retransmissions.

        ``rows`` are ``(message_id, idx, attempts, last_sent)`` of unacknowledged fragments.
        """
        retransmissions = 0
        for message_id, idx, attempts, last_sent in rows:
            item = (message_id, idx)
            if item in self._queued:
                continue
            if attempts == 0:
                self._ready.append(item)
            elif last_sent is not None and now - last_sent > retransmit_after(ack_timeout, attempts):
                self._ready.appendleft(item)  # retransmissions go first
                retransmissions += 1
            else:
                continue
            self._queued.add(item)
        return retransmissions

    def take(self) -> FragmentRef | None:
        """The next fragment to try in this slot, or None; it leaves the queue (a failed build forgets it)."""
        if not self._ready:
            return None
        item = self._ready.popleft()
        self._queued.discard(item)
        return item

    def put_back(self, item: FragmentRef) -> None:
        """Return a fragment whose slot was lost to the front of the queue (unless it is queued again already)."""
        if item not in self._queued:
            self._ready.appendleft(item)
            self._queued.add(item)


def payload_slot(queue: PayloadQueue, *, ready: bool) -> Generator[SlotStep, object, SlotOutcome]:
    """One payload slot: yields the steps to run, receives their results, returns the outcome.

    ``ready`` is whether the agent has a consensus, its provider in it and a session.
    """
    if not ready:
        return SlotOutcome.MISSED
    reply: object = NotBuilt.UNAVAILABLE
    item: FragmentRef | None = None
    while not isinstance(reply, bytes) and (item := queue.take()) is not None:
        reply = yield BuildReal(item)
        if reply is NotBuilt.NODE_KEY:  # this slot falls back to cover; the fragment waits in front
            queue.put_back(item)
            break
    if not isinstance(reply, bytes):
        item = None
        for _attempt in range(COVER_ATTEMPTS):
            reply = yield BuildCover()
            if reply is not NotBuilt.NODE_KEY:
                break
        if not isinstance(reply, bytes):
            return SlotOutcome.MISSED
    sent = yield Send(reply)
    if not sent:
        if item is not None:
            queue.put_back(item)
        return SlotOutcome.MISSED
    return SlotOutcome.REAL if item is not None else SlotOutcome.DROP
