"""``python -m simulations bench``: today's engine against the frozen pre-speed-up one, side by side.

Machines differ by 4x and a shared one by more from minute to minute, so the figure that means
something is the ratio of two engines timed in one process, one right after the other, on the
same config. Each preset runs the reference engine (:mod:`simulations.reference`), the
pure-Python loop and (when built) the compiled loop, checks that all three give the same JSON
(timing fields aside) and prints events/s from CPU time, which other processes on the machine
disturb less than wall time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from simulations.engine import Simulation, compiled_loop
from simulations.metrics import TIMING_FIELDS, summarize
from simulations.model import SimConfig
from simulations.reference import run_reference

__all__ = ["PRESETS", "bench", "format_table"]

#: Named configs: the defaults and the 10,000-client network of docs/simulator.md, with the legacy
#: cover scheme (the only one the frozen reference engine knows), and the defaults as they are
#: ("acks": pure against compiled loop only, the speed-up is over the pure loop).
PRESETS: dict[str, SimConfig] = {
    "defaults": SimConfig(cover_scheme="legacy"),
    "10k": SimConfig(clients=10_000, mixes_per_layer=10, duration=60.0, cover_scheme="legacy"),
    "acks": SimConfig(),
}


def _pure(config: SimConfig) -> Simulation:
    old = os.environ.get("ANONMAIL_SIM_PURE")
    os.environ["ANONMAIL_SIM_PURE"] = "1"
    try:
        return Simulation(config).run()
    finally:
        if old is None:
            del os.environ["ANONMAIL_SIM_PURE"]
        else:
            os.environ["ANONMAIL_SIM_PURE"] = old


def _engines(include_pure: bool, reference: bool) -> list[tuple[str, Callable[[SimConfig], Any]]]:
    engines: list[tuple[str, Callable[[SimConfig], Any]]] = [("reference", run_reference)] if reference else []
    if include_pure or not reference or compiled_loop() is None:
        engines.append(("pure", _pure))
    if compiled_loop() is not None:
        engines.append(("compiled", lambda config: Simulation(config).run()))
    return engines


def _canonical(sim: Any) -> str:
    summary = summarize(sim)
    for key in TIMING_FIELDS:
        summary.pop(key)
    return json.dumps(summary, sort_keys=True)


def bench(presets: list[str], *, include_pure: bool = True) -> list[dict]:
    """Run every engine on every preset; one row per (preset, engine) with events/s and ratio to the first."""
    rows = []
    for name in presets:
        config = PRESETS[name]
        base_cpu = None
        reference_json = None
        for engine, run in _engines(include_pure, reference=not config.cover_acks):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            sim = run(config)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            text = _canonical(sim)
            if reference_json is None:
                reference_json, base_cpu = text, cpu
            rows.append({
                "preset": name, "engine": engine, "events": sim.events, "cpu_s": round(cpu, 3),
                "wall_s": round(wall, 3), "events_per_cpu_s": round(sim.events / cpu) if cpu > 0 else None,
                "speedup": round(base_cpu / cpu, 2) if cpu > 0 else None,
                "same_json_as_reference": text == reference_json,
            })
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table."""
    lines = [f"{'preset':<9} {'engine':<10} {'events':>11} {'cpu s':>8} {'events/cpu s':>13} {'x ref':>6}  same JSON"]
    for r in rows:
        lines.append(f"{r['preset']:<9} {r['engine']:<10} {r['events']:>11,} {r['cpu_s']:>8.2f} "
                     f"{r['events_per_cpu_s'] or 0:>13,} {r['speedup'] or 0:>6.2f}  "
                     f"{'yes' if r['same_json_as_reference'] else 'NO'}")
    return "\n".join(lines)
