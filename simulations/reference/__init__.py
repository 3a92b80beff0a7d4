"""The engine as it was before the speed-up (commit 0b8551b), kept frozen for ``simulations bench``.

``python -m simulations bench`` runs this engine and the current one side by side on the same
config in one process, checks that both give the same JSON (timing fields aside) and reports the
ratio of their events/s: on a shared, noisy machine only such a ratio means anything.
Nothing else imports it; do not change it except to keep it importable, or to follow a change
of the model (not of the engine) so that both still give the same JSON: the adversary's
truncation rule (a pool drops a target's mass below EPSILON, not k * EPSILON) is one.
"""

from __future__ import annotations

from simulations.model import SimConfig
from simulations.reference.engine import Simulation

__all__ = ["run_reference"]


def run_reference(config: SimConfig) -> Simulation:
    """Run the frozen engine; adds the two fields :func:`simulations.metrics.summarize` reads."""
    sim = Simulation(config).run()
    sim.latencies_s = [m.delivered - m.written for m in sim.messages if m.delivered is not None]
    sim.n_messages = len(sim.messages)
    return sim
