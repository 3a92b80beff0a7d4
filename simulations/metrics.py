"""The numbers a run reports (docs/design.md, "Outside contracts"), computed from a finished :class:`Simulation`.

Every value is a pure function of the run, except the two wall-clock fields listed in
:data:`TIMING_FIELDS`; drop those and the same seed gives byte-identical JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from anonmail.core.stats import percentile
from simulations.engine import KIND_NAMES, REAL

__all__ = ["summarize", "to_json", "TIMING_FIELDS", "ENTROPY_BIN_BITS"]

#: Fields that measure the machine, not the network: excluded from determinism comparisons.
TIMING_FIELDS = ("wall_s", "events_per_s")
#: Width of the entropy histogram bins.
ENTROPY_BIN_BITS = 0.5


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def summarize(sim: Any) -> dict:
    """One flat dict: the §8 contract fields first, then details."""
    cfg = sim.config
    latencies = sorted(sim.latencies_s)
    results = sim.adversary.results
    entropies = sorted(r.entropy for r in results)
    real_sent = sim.sent[REAL]
    cover_sent = sum(sim.sent) - real_sent
    hist: list[int] = []
    for e in entropies:
        b = int(e // ENTROPY_BIN_BITS)
        hist.extend([0] * (b + 1 - len(hist)))
        hist[b] += 1
    out = {
        "latency_mean_s": _r(_mean(latencies)),
        "latency_p50_s": _r(percentile(latencies, 0.50)),
        "latency_p95_s": _r(percentile(latencies, 0.95)),
        "latency_p99_s": _r(percentile(latencies, 0.99)),
        "entropy_bits_mean": _r(_mean(entropies)),
        "linking_success_rate": _r(_mean([r.linked for r in results])),
        "cover_ratio": _r(cover_sent / real_sent) if real_sent else None,
        "messages_delivered": len(latencies),
        "messages_sent": sim.n_messages,
        "sim_events": sim.events,
        "wall_s": round(sim.wall_s, 3),
        "events_per_s": round(sim.events / sim.wall_s) if sim.wall_s > 0 else None,
        "entropy_bits_p5": _r(percentile(entropies, 0.05)),
        "entropy_bits_p50": _r(percentile(entropies, 0.50)),
        "entropy_bits_p95": _r(percentile(entropies, 0.95)),
        "entropy_bits_max": _r(entropies[-1] if entropies else None),
        "entropy_bits_hist": {"bin_bits": ENTROPY_BIN_BITS, "counts": hist},
        "entropy_targets": len(results),
        "entropy_exit_packets_mean": _r(_mean([r.exits for r in results])),
        "entropy_mass_truncated_mean": _r(_mean([r.truncated for r in results]), 9),
        "recipient_entropy_bits_mean": _r(_mean([r.recipient_entropy for r in results])),
        "recipient_entropy_bound_bits": _r(math.log2(cfg.clients)),
        "linking_direction": "recipient",
        "packets_sent": {KIND_NAMES[i]: n for i, n in enumerate(sim.sent)},
        "packets_delivered": {KIND_NAMES[i]: n for i, n in enumerate(sim.delivered_packets)},
        "real_fragments_sent": real_sent,
        "cover_packets_sent": cover_sent,
        "compromised_mixes": len(sim.compromised),
        "sim_end_s": _r(sim.end_time),
        "mode": "crypto" if cfg.crypto else "opaque",
        "config": cfg.as_dict(),
    }
    if cfg.acks or cfg.loss > 0:
        out["retransmissions"] = sim.retransmissions
        out["duplicate_fragments"] = sim.duplicates
        out["packets_lost"] = sim.lost
    return out


def to_json(summary: dict) -> str:
    """The JSON text printed by ``run --json`` (stable key order, no NaN)."""
    return json.dumps(summary, indent=2, allow_nan=False)
