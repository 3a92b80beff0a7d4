"""Which loops came back, and whether the losses look like an attack (sans-IO).

Loops (cover packets a node or user sends to itself through the mixnet) exist to notice active
attacks: a mix or provider that delays or drops one user's packets to isolate them (an (n-1)
attack), or tags them and drops what fails. A lost loop alone says nothing (a link broke, a node
restarted), so :class:`LoopWatch` looks at the last :data:`WINDOW` loops whose fate is known:

* a loop is *lost* when it has not come back ``timeout`` seconds after it was sent; one that
  comes back later is counted back after all (a slow network is not an attack);
* the *alarm* goes on when at least :data:`MIN_RESOLVED` loops are known and more than
  :data:`ALARM_RATE` of them were lost, and off again when the rate falls below half of that;
* *suspects* are the nodes that lost loops went through, ranked by how many of the loops through
  each were lost. Every node on a lost loop's path is equally to blame for that loop; a node on
  most lost loops and few returned ones stands out.

What to do about an alarm is the caller's: the agent and the mix show it in their status and log
one warning when it goes on. Paths are not steered away from suspects on purpose: an attacker who
could make honest nodes look lossy (by dropping loops itself) would then steer traffic to its
own nodes. Everything here is in memory and holds no address or content, only node names.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ALARM_RATE", "MIN_RESOLVED", "WINDOW", "MAX_PENDING", "LoopVerdict", "LoopWatch"]

#: Loops whose fate is known that the verdict looks at (the most recent).
WINDOW = 100
#: Known loops needed before the alarm can go on.
MIN_RESOLVED = 20
#: Share of lost loops in the window above which the alarm goes on (off below half of it).
ALARM_RATE = 0.2
#: Loops in flight remembered at most (the oldest count as lost first).
MAX_PENDING = 10_000


@dataclass(frozen=True)
class LoopVerdict:
    """What the last loops say: how many are known, how many were lost, the alarm, the suspects."""

    resolved: int
    lost: int
    alarm: bool
    #: (node, loops through it lost, loops through it known), worst first, at most three.
    suspects: tuple[tuple[str, int, int], ...]

    @property
    def loss_rate(self) -> float:
        """Lost over known loops in the window (0 when none is known)."""
        return self.lost / self.resolved if self.resolved else 0.0

    @property
    def suspect_lines(self) -> list[str]:
        """The suspects as a status shows them: ``name (lost of known lost)``."""
        return [f"{n} ({lost} of {known} lost)" for n, lost, known in self.suspects]

    def news(self, was_on: bool) -> tuple[int, str] | None:
        """(log level, line) when the alarm went on or off since it was ``was_on``; None if it did not change."""
        if self.alarm and not was_on:
            return logging.WARNING, (f"loops are being lost: {self.lost} of the last {self.resolved} did not come "
                                     f"back; most often through {', '.join(self.suspect_lines) or 'no node in particular'}."
                                     " An active attack (n-1) or failing nodes")
        if was_on and not self.alarm:
            return logging.INFO, f"loops come back again ({self.lost} of the last {self.resolved} lost)"
        return None

    def to_json(self) -> dict:
        """The verdict for a status file."""
        return {"loops_known": self.resolved, "loops_lost_recent": self.lost,
                "loop_loss_rate": round(self.loss_rate, 3), "loop_alarm": self.alarm,
                "loop_suspects": [{"node": n, "lost": lost, "known": known} for n, lost, known in self.suspects]}


class _Loop:
    __slots__ = ("sent_at", "route", "lost")

    def __init__(self, sent_at: float, route: tuple[str, ...]) -> None:
        self.sent_at, self.route, self.lost = sent_at, route, False


class LoopWatch:
    """Loops in flight and the recent known ones; the clock is passed in."""

    def __init__(self, timeout: float, *, window: int = WINDOW, min_resolved: int = MIN_RESOLVED,
                 alarm_rate: float = ALARM_RATE, max_pending: int = MAX_PENDING) -> None:
        if timeout <= 0 or window < 1 or not 0 < alarm_rate < 1:
            raise ValueError("LoopWatch needs timeout > 0, window >= 1 and 0 < alarm_rate < 1")
        self.timeout, self.window, self.min_resolved = timeout, window, min_resolved
        self.alarm_rate, self.max_pending = alarm_rate, max_pending
        self._pending: OrderedDict[bytes, _Loop] = OrderedDict()
        self._known: OrderedDict[bytes, _Loop] = OrderedDict()
        self.alarm = False
        self.lost_total = 0
        self.late_total = 0

    def sent(self, loop_id: bytes, now: float, route: Sequence[str]) -> None:
        """Remember a loop that just left along ``route`` (node names)."""
        self._pending[loop_id] = _Loop(now, tuple(route))
        while len(self._pending) > self.max_pending:
            oldest, loop = self._pending.popitem(last=False)
            self._resolve(oldest, loop, lost=True)

    def returned(self, loop_id: bytes) -> bool:
        """A loop came back; False if it is none we know of (then it is not ours, or long forgotten)."""
        loop = self._pending.pop(loop_id, None)
        if loop is not None:
            self._resolve(loop_id, loop, lost=False)
            return True
        loop = self._known.get(loop_id)
        if loop is None or not loop.lost:
            return False
        loop.lost = False  # late, not lost
        self.late_total += 1
        self.lost_total -= 1
        self._update_alarm()
        return True

    def expire(self, now: float) -> int:
        """Count loops out longer than the timeout as lost; how many were."""
        limit = now - self.timeout
        expired = [(i, loop) for i, loop in self._pending.items() if loop.sent_at < limit]
        for loop_id, loop in expired:
            del self._pending[loop_id]
            self._resolve(loop_id, loop, lost=True)
        return len(expired)

    def __contains__(self, loop_id: object) -> bool:
        """Whether this loop is still out (a loop that returns is recognised by this)."""
        return loop_id in self._pending

    @property
    def pending(self) -> int:
        """Loops still out."""
        return len(self._pending)

    def verdict(self) -> LoopVerdict:
        """The window's loss count, the alarm and the nodes most often on lost loops."""
        known = list(self._known.values())
        lost = [loop for loop in known if loop.lost]
        per_node: dict[str, list[int]] = {}
        for loop in known:
            for node in set(loop.route):
                counts = per_node.setdefault(node, [0, 0])
                counts[0] += loop.lost
                counts[1] += 1
        ranked = sorted(((n, c[0], c[1]) for n, c in per_node.items() if c[0]),
                        key=lambda t: (-t[1] / t[2], -t[1], t[0]))
        return LoopVerdict(len(known), len(lost), self.alarm, tuple(ranked[:3]) if lost else ())

    def _resolve(self, loop_id: bytes, loop: _Loop, *, lost: bool) -> None:
        loop.lost = lost
        self.lost_total += lost
        self._known[loop_id] = loop
        while len(self._known) > self.window:
            self._known.popitem(last=False)
        self._update_alarm()

    def _update_alarm(self) -> None:
        known = len(self._known)
        if known < self.min_resolved:
            self.alarm = False
            return
        rate = sum(loop.lost for loop in self._known.values()) / known
        if rate > self.alarm_rate:
            self.alarm = True
        elif rate < self.alarm_rate / 2:
            self.alarm = False
