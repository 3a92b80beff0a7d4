"""One run from a config to its summary dict: the unit of work of ``run`` and of each sweep point."""

from __future__ import annotations

from simulations.engine import Simulation
from simulations.metrics import summarize
from simulations.model import SimConfig

__all__ = ["run_config"]


def run_config(config: SimConfig) -> dict:
    """Simulate ``config`` and return its metrics (picklable, so pool workers can call it)."""
    return summarize(Simulation(config).run())
