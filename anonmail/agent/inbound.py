"""What the agent does with fetched mailbox entries: ACKs, returned loops, mail fragments.

Anyone can write to a user, so every entry is hostile input. Entries are handled one at a time
(:meth:`Inbound.handle_entries`, run in a worker thread after each fetch):

* an entry that does not open or parse (``FragmentError``, ``PacketError``) is a *bad entry*:
  counted by reason, confirmed (deleted at the provider) and forgotten;
* an entry that makes the code fail in any other way is contained the same way: the reason
  (exception type and source line, never its text) is logged once and counted
  (:class:`~anonmail.daemon.containment.FaultCounter`), so one poison message costs its sender
  one mailbox slot, not the agent;
* a local store failure (:class:`~anonmail.errors.StoreError`: disk full, database locked) is
  not the entry's fault: the entry stays at the provider and is fetched again, at most
  :data:`STORE_RETRIES` times before it too counts as bad.

A complete message is opened by its end-to-end session (:mod:`anonmail.agent.e2e`); a message that
does not open (``SessionError``, a FragmentError) is a bad entry too, and is marked received so
its retransmissions are merged. The sessions it moved are stored with it, in one transaction.

Incomplete multi-fragment messages are bounded by the store (per sender and in total) and
expire after :data:`PARTIAL_TTL` seconds (:meth:`AgentStore.expire_partials`), so a stranger
sending first fragments only cannot fill the user's disk.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable

from anonmail.agent.e2e import EndToEnd
from anonmail.agent.packets import surb_keys_from_bytes
from anonmail.agent.store import AgentStore
from anonmail.core import fragments as F
from anonmail.core import mailproto, sphinx
from anonmail.core.address import Address
from anonmail.core.envelope import decode_envelope
from anonmail.core.keys import IdentityKey
from anonmail.core.loopwatch import LoopWatch
from anonmail.daemon.containment import FaultCounter
from anonmail.errors import FragmentError, PacketError, StoreError

__all__ = ["Inbound", "PARTIAL_TTL", "STORE_RETRIES"]

log = logging.getLogger("anonmail.agent")

#: Seconds an incomplete message waits for its missing fragments before it is dropped.
PARTIAL_TTL = 3 * 24 * 3600
#: Fetches an entry may fail to be stored locally before it is dropped as bad.
STORE_RETRIES = 3
_LOOPS_KEPT = 10000
#: Drop-cover ACKs awaited (λ_P × the ACK round trip, with room; older ones are ignored on return).
_COVER_ACKS_KEPT = 20000


class Inbound:
    """Acts on fetched entries for one user; counters go to the agent's ``stats``."""

    def __init__(self, *, store: AgentStore, address: Address, identity: IdentityKey, e2e: EndToEnd, stats,
                 wall_clock: Callable[[], float], on_delivered: Callable[[int, str], None] | None = None) -> None:
        self.store = store
        self.address = address
        self.identity = identity
        self.e2e = e2e
        self.stats = stats
        self.wall_clock = wall_clock
        self.on_delivered = on_delivered
        #: Our encryption secrets, newest first (the agent replaces the list when it rotates keys).
        self.secrets: list[bytes] = []
        self.faults = FaultCounter(log, "agent")
        self._loops: OrderedDict[bytes, float] = OrderedDict()
        #: Told of every loop that comes back (the agent sets it; :mod:`anonmail.core.loopwatch`).
        self.loop_watch: LoopWatch | None = None
        self._cover_surbs: OrderedDict[bytes, None] = OrderedDict()
        self._store_failures: OrderedDict[int, int] = OrderedDict()
        self._last_expiry = float("-inf")

    def expect_loop(self, message_id: bytes, sent_at: float) -> None:
        """Remember a loop we sent, so its return is counted, not shown as mail."""
        self._loops[message_id] = sent_at
        while len(self._loops) > _LOOPS_KEPT:
            self._loops.popitem(last=False)

    def expect_cover_ack(self, surb_id: bytes) -> None:
        """Remember the ACK SURB of a drop we built, so its ACK is counted without a store lookup."""
        self._cover_surbs[surb_id] = None
        while len(self._cover_surbs) > _COVER_ACKS_KEPT:
            self._cover_surbs.popitem(last=False)

    def handle_entries(self, entries: Iterable[mailproto.Entry]) -> list[int]:
        """(Thread.) Act on entries one at a time; return the ids that may be confirmed."""
        done = []
        for entry in entries:
            try:
                if entry.kind == mailproto.ENTRY_REPLY:
                    self._handle_reply(entry.data)
                elif entry.kind == mailproto.ENTRY_FRAGMENT:
                    self._handle_fragment(entry.data)
            except (FragmentError, PacketError) as exc:
                self._bad(type(exc).__name__)
                log.info("dropped a mailbox entry that does not open (%s)", type(exc).__name__)
            except StoreError as exc:
                tries = self._store_failures.pop(entry.entry_id, 0) + 1
                if tries < STORE_RETRIES:
                    self._store_failures[entry.entry_id] = tries
                    while len(self._store_failures) > 1024:
                        self._store_failures.popitem(last=False)
                    log.warning("could not store a fetched entry (%s); it stays at the provider", exc)
                    continue
                self._bad("StoreError")
            except Exception as exc:  # noqa: BLE001 - containment: one entry never stops the agent
                self._bad(self.faults.record(exc, "mailbox entry"))
            done.append(entry.entry_id)
        self._expire_partials()
        self.stats.partials_evicted = self.store.partials_evicted
        return done

    def _bad(self, reason: str) -> None:
        self.stats.bad_entries += 1
        self.stats.bad_entry_reasons[reason] = self.stats.bad_entry_reasons.get(reason, 0) + 1

    def _expire_partials(self) -> None:
        now = self.wall_clock()
        if now - self._last_expiry < 60:
            return
        self._last_expiry = now
        try:
            dropped = self.store.expire_partials(now - PARTIAL_TTL)
        except StoreError as exc:
            log.warning("could not expire incomplete messages (%s)", exc)
            return
        if dropped:
            self.stats.partials_expired += dropped
            log.info("dropped %d incomplete message(s) whose fragments never all arrived", dropped)

    def _handle_reply(self, data: bytes) -> None:
        surb_id, body = data[:16], data[16:]
        if surb_id in self._cover_surbs:
            del self._cover_surbs[surb_id]
            self.stats.cover_acks += 1
            return  # the ACK of one of our drops
        found = self.store.surb_keys(surb_id)
        if found is None:
            return  # an ACK for a fragment already acknowledged through another transmission
        message_id, idx, blob = found
        if sphinx.open_surb_reply(surb_keys_from_bytes(blob), body) != F.ACK_MESSAGE:
            raise FragmentError("a reply on an ACK SURB is not an ACK")
        new, _complete = self.store.acknowledge(message_id, idx, self.wall_clock())
        if new:
            self.stats.acks += 1

    def _handle_fragment(self, sealed: bytes) -> None:
        opened = F.open_fragment(sealed, recipient_keys=self.secrets, recipient_address=self.address,
                                 recipient=self.identity)
        frag = opened.fragment
        if opened.sender == self.address and frag.message_id in self._loops:
            del self._loops[frag.message_id]
            self.stats.loops_returned += 1
            if self.loop_watch is not None:
                self.loop_watch.returned(frag.message_id)
            return
        self.stats.fragments_received += 1
        sender_fpr = opened.sender.fingerprint
        state = self.store.add_fragment(
            sender_fpr=sender_fpr, sender=str(opened.sender), message_id=frag.message_id,
            idx=frag.index, count=frag.count, total=frag.total_length, data=frag.data, now=self.wall_clock())
        if state == "duplicate":
            self.stats.duplicates_merged += 1
            return
        if state != "complete":
            return
        assembled = self.store.assemble(sender_fpr, frag.message_id)
        if assembled is None:
            return
        sender, data, _first = assembled
        with self.e2e.lock:  # the sessions move and the message is stored in one transaction
            self._finish(opened, sender, data)

    def _finish(self, opened: F.OpenedFragment, sender: str, data: bytes) -> None:
        frag = opened.fragment
        sender_fpr = opened.sender.fingerprint
        try:
            plaintext, commit = self.e2e.open_incoming(opened.sender, opened.sender_identity, frag.message_id, data,
                                                       now=int(self.wall_clock()))
            envelope = decode_envelope(plaintext)
        except FragmentError:  # SessionError too: the sessions stay as they were
            # Marked received, so its retransmissions are merged as duplicates, then counted bad.
            self.store.finish_message(sender_fpr=sender_fpr, sender=sender, message_id=frag.message_id,
                                      subject=None, body=b"", sent_at=0, now=self.wall_clock())
            raise
        if envelope.type == "keys":
            rows = [(c.to_bytes(), c.not_before, c.not_after) for c in envelope.certs
                    if c.identity_public == opened.sender_identity]
            self.store.add_contact_certs(sender_fpr, opened.sender_identity, rows)
            self.store.finish_message(sender_fpr=sender_fpr, sender=sender, message_id=frag.message_id,
                                      subject=None, body=b"", sent_at=envelope.sent_at, now=self.wall_clock(),
                                      session=commit)
            return
        ident = self.store.finish_message(
            sender_fpr=sender_fpr, sender=sender, message_id=frag.message_id, kind=envelope.type,
            subject=envelope.subject, body=envelope.body, sent_at=envelope.sent_at, now=self.wall_clock(),
            session=commit)
        if ident is not None:
            self.stats.delivered += 1
            if self.on_delivered is not None:
                self.on_delivered(ident, frag.message_id.hex())
