"""Which fetched mailbox entries are being handled, which wait for their confirm (sans-IO).

The agent's fetch round is fixed in time and size so that a watcher of the user's link learns
nothing from it: every ``fetch_interval`` seconds it sends one confirm (exactly ``fetch_batch``
ids, padded), then one fetch, and hands the fetched entries to a separate worker. The durable
writes happen in that worker, after the link is released; their ids are confirmed by the *next*
round, whatever the handling took. :class:`ConfirmLedger` is the bookkeeping between the two::

    fetched ──take──▶ in flight ──handled (done)──▶ to confirm ──confirmed──▶ forgotten
                         │  └────handled (not done, e.g. StoreError)──▶ forgotten (fetched again)
                         └───release (the worker queue was full)────────▶ forgotten (fetched again)

Nothing is lost when the agent dies: the provider keeps an entry until it is confirmed, so an
entry fetched but not yet written is fetched again after a restart, and an entry written but not
yet confirmed is fetched again and merged by the store (a fragment already held is a duplicate,
an ACK already recorded has no SURB keys left). Within one run, :meth:`ConfirmLedger.take` skips
entries fetched again while still in flight or waiting for their confirm, so nothing is handled
twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from anonmail.core.mailproto import Entry

__all__ = ["ConfirmLedger"]


class ConfirmLedger:
    """Entry ids in flight (fetched, being handled) and handled ids waiting for their confirm."""

    def __init__(self) -> None:
        self._in_flight: set[int] = set()
        self._to_confirm: dict[int, None] = {}  # insertion-ordered: oldest confirmed first

    @property
    def in_flight(self) -> int:
        """How many fetched entries are being handled."""
        return len(self._in_flight)

    @property
    def waiting(self) -> int:
        """How many handled entries wait for the next round's confirm."""
        return len(self._to_confirm)

    def take(self, entries: Iterable[Entry]) -> list[Entry]:
        """The fetched entries to hand to the worker: not in flight, not handled already; marks them in flight."""
        fresh = []
        for entry in entries:
            if entry.entry_id in self._in_flight or entry.entry_id in self._to_confirm:
                continue
            self._in_flight.add(entry.entry_id)
            fresh.append(entry)
        return fresh

    def release(self, entries: Iterable[Entry]) -> None:
        """Forget entries that were taken but will not be handled now (the provider keeps them)."""
        for entry in entries:
            self._in_flight.discard(entry.entry_id)

    def handled(self, entries: Iterable[Entry], done: Iterable[int]) -> None:
        """The worker finished ``entries``; ``done`` (a subset) may be confirmed, the rest is fetched again."""
        done_set = set(done)
        for entry in entries:
            self._in_flight.discard(entry.entry_id)
            if entry.entry_id in done_set:
                self._to_confirm[entry.entry_id] = None

    def to_confirm(self, n: int) -> list[int]:
        """Up to ``n`` handled ids (oldest first) for this round's confirm; they stay until :meth:`confirmed`."""
        out = []
        for entry_id in self._to_confirm:
            if len(out) == n:
                break
            out.append(entry_id)
        return out

    def confirmed(self, ids: Sequence[int]) -> None:
        """The provider deleted these (the confirm went through)."""
        for entry_id in ids:
            self._to_confirm.pop(entry_id, None)
