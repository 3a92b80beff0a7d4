"""The global passive adversary's bookkeeping: where might a traced real message be now?

Model (Loopix paper §4.1.3 and Appendix A, in our own words): the adversary sees every link
with timings, knows the topology and that every mix hop holds a packet for an Exp(μ) delay.
For a target message it keeps a probability for every packet, the chance that this packet is
the target. The target starts with probability 1 on the packet its sender emits.

* Providers and compromised mixes are transparent: the probability travels with the packet
  (the adversary may run a provider: docs/design.md, "Threat model"; a compromised mix shows it its mapping).
* An honest mix is a pool. Exponential delays are memoryless, so whichever packets are in the
  pool, each is equally likely to be the next to leave: a packet leaving a pool of ``k``
  packets carries ``S/k`` of the pool's target mass ``S``, and the pool keeps ``S(k-1)/k``.
  Per pool we therefore need only ``k`` and ``S`` per target, not per-packet masses.
* ``k`` is the true number of packets in the mix, and packets a mix creates (its loop cover)
  are known to the adversary as such when they leave it and when they come back. This is more
  than a real observer knows, so the entropy here is a lower bound (and linking an upper one).
* The mass on a packet leaving the last mix layer is final: that is the distribution the
  entropy is taken over. Mass on a mix's own loop that ends at that mix (seen to end) is
  conditioned away; a pool's mass of a target is dropped once it is below ``EPSILON``
  (reported as ``truncated``). The threshold is on the pool's whole mass, whatever its size
  ``k``: a threshold of ``k * EPSILON`` dropped, in pools of more than ``1/sqrt(EPSILON)``
  packets, the ``1/k`` share a packet had just brought from a pool of the previous layer,
  i.e. nearly all of a message's mass once layers are wide.

Per target this yields:

* ``entropy`` — Shannon entropy (bits) over the packets leaving the last layer, normalised
  over the mass that did leave it (the Loopix measure);
* ``recipient_entropy`` and the linking guess — the adversary also sees which mailbox the
  egress provider stores each packet in (as a compromised provider would), groups the exit
  mass by that mailbox (drop cover and mix loops, stored nowhere, fall out; so do ACKs, which
  the storing provider knows to be SURB replies, not mail) and names the most likely recipient. With ties it picks one of them at random: scored as 1/#ties if right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Adversary", "TargetResult", "EPSILON", "DONE", "conclude"]

#: A pool drops a target's mass below EPSILON, whatever its size (cost grows only with log(1/EPSILON)).
EPSILON = 1e-7
#: A target is finished once this little of its mass is still inside the network.
DONE = 1e-4


@dataclass(frozen=True)
class TargetResult:
    """What the adversary concluded about one traced real message."""

    entropy: float  # bits, over exit packets
    exits: int  # packets leaving the last layer that carried some of the mass
    recipient_entropy: float  # bits, over mailboxes
    linked: float  # 1 right, 0 wrong, 1/n for a tie among n that includes the recipient
    truncated: float  # mass lost to EPSILON
    sent_at: float


class _Target:
    __slots__ = ("tid", "recipient", "sent_at", "outstanding", "volume", "vlogv", "exits", "by_dest",
                 "own_out", "truncated", "done")

    def __init__(self, tid: int, recipient: int, sent_at: float) -> None:
        self.tid = tid
        self.recipient = recipient
        self.sent_at = sent_at
        self.outstanding = 1.0
        self.volume = 0.0
        self.vlogv = 0.0
        self.exits = 0
        self.by_dest: dict[int, float] = {}
        self.own_out = False
        self.truncated = 0.0
        self.done = False


class Adversary:
    """Probability bookkeeping for up to ``samples`` traced real messages."""

    def __init__(self, *, n_nodes: int, tracked: list[bool], last_layer: list[bool], samples: int) -> None:
        self.tracked = tracked  # honest mixes: pools
        self.last_layer = last_layer
        self.samples = samples
        self.count = [0] * n_nodes  # packets in each honest mix (kept by the engine)
        self.pools: list[dict[int, float]] = [{} for _ in range(n_nodes)]
        self.targets: list[_Target] = []
        self.done: list[bool] = []  # per target: concluded (its leftover mass is dropped)
        self.results: list[TargetResult] = []

    def start_target(self, pkt: Any, msg: Any, t: float) -> None:
        """Trace this real packet if the sample is not full yet."""
        if len(self.targets) >= self.samples:
            return
        tid = len(self.targets)
        self.targets.append(_Target(tid, msg.recipient, t))
        self.done.append(False)
        pkt.mass = {tid: 1.0}
        pkt.tid = tid

    def enter(self, node: int, pkt: Any) -> None:
        """A packet carrying mass enters honest mix ``node`` (the engine counts it): the mass joins the pool."""
        mass = pkt.mass
        pool = self.pools[node]
        for tid, v in mass.items():
            pool[tid] = pool.get(tid, 0.0) + v
        pkt.mass = None

    def leave_pool(self, node: int, k: int, pkt: Any) -> None:
        """A packet leaves honest mix ``node`` that held ``k`` packets and some mass: it takes 1/k of each target's."""
        pool = self.pools[node]
        if k == 1:
            pkt.mass = dict(pool)
            pool.clear()
            return
        limit = EPSILON
        done = self.done
        share = 1.0 / k
        keep = 1.0 - share
        out: dict[int, float] = {}
        drop: list[int] | None = None
        for tid, s in pool.items():
            if s < limit or done[tid]:
                if drop is None:
                    drop = []
                drop.append(tid)
            else:
                out[tid] = s * share
                pool[tid] = s * keep
        if drop is not None:
            targets = self.targets
            for tid in drop:
                s = pool.pop(tid)
                target = targets[tid]
                target.truncated += s
                target.outstanding -= s
        if out:
            pkt.mass = out

    def exit(self, pkt: Any, t: float, dest: int) -> None:
        """A packet leaves the last layer: its mass is final for every target it carries.

        ``dest``: the mailbox the egress provider stores it in, -1 if none or if the provider
        sees it is no mail (an ACK: a SURB reply, which the provider handles as one).
        """
        targets = self.targets
        done = self.done
        own = pkt.tid
        log2 = math.log2
        for tid, v in pkt.mass.items():
            if done[tid]:
                continue
            target = targets[tid]
            target.volume += v
            target.vlogv += v * log2(v)
            target.exits += 1
            target.outstanding -= v
            if dest >= 0:
                by_dest = target.by_dest
                by_dest[dest] = by_dest.get(dest, 0.0) + v
            if own == tid:
                target.own_out = True
            if target.outstanding < DONE and target.own_out:
                self._finish(target)
        pkt.mass = None

    def consumed(self, pkt: Any) -> None:
        """A packet carrying mass ended inside the mix layers (a mix's own loop): condition it away."""
        targets = self.targets
        for tid, v in pkt.mass.items():
            targets[tid].outstanding -= v
        pkt.mass = None

    def finish(self) -> None:
        """End of run: conclude every target not yet concluded."""
        for target in self.targets:
            if not target.done:
                self._finish(target)
        self.results.sort(key=lambda r: r.sent_at)

    def _finish(self, target: _Target) -> None:
        target.done = True
        self.done[target.tid] = True
        result = conclude(target.volume, target.vlogv, target.exits, target.by_dest, target.recipient,
                          target.truncated, target.sent_at)
        if result is not None:
            self.results.append(result)
        target.by_dest = {}


def conclude(volume: float, vlogv: float, exits: int, by_dest: dict[int, float], recipient: int,
             truncated: float, sent_at: float) -> TargetResult | None:
    """What the adversary concludes from a target's exit mass (None if none of it left the mixes)."""
    if volume <= 0:
        return None
    entropy = max(0.0, math.log2(volume) - vlogv / volume)
    stored = sum(by_dest.values())
    recipient_entropy, linked = 0.0, 0.0
    if stored > 0:
        recipient_entropy = max(0.0, -sum((v / stored) * math.log2(v / stored) for v in by_dest.values()))
        best = max(by_dest.values())
        ties = [d for d, v in by_dest.items() if v >= best * (1 - 1e-9)]
        linked = 1.0 / len(ties) if recipient in ties else 0.0
    return TargetResult(entropy, exits, recipient_entropy, linked, truncated, sent_at)
