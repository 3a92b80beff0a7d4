"""What a mix or provider takes from the consensus's traffic parameters (:mod:`anonmail.core.params`).

The node's own ``lambda_loop`` and ``loop_delay_mean`` may be stricter (more cover, longer holds)
than the published values, never weaker; delays are capped at the published ``max_delay`` that
every mix enforces (:func:`mixnode.decisions.decide` drops longer ones as ``delay_too_long``).
"""

from __future__ import annotations

import random

from anonmail.core.pki import Consensus
from anonmail.core.policy import sample_delay_ms

__all__ = ["max_delay_ms", "loop_rate", "loop_delay_ms"]


def max_delay_ms(consensus: Consensus | None) -> int | None:
    """The longest per-hop hold this node accepts (None: no consensus, nothing to enforce yet)."""
    return consensus.params.max_delay_ms if consensus is not None else None


def loop_rate(configured: float, consensus: Consensus | None) -> float:
    """Loop cover rate λ_M: the configured one, raised to the consensus's if lower."""
    return max(configured, consensus.params.mix_lambda_loop) if consensus is not None else configured


def loop_delay_ms(rng: random.Random, configured_mean: float, consensus: Consensus) -> int:
    """One loop hop's delay: Exp(mean) with the stricter mean, capped at the published maximum."""
    params = consensus.params
    mean = min(max(configured_mean, params.delay_mean), params.max_delay)
    return sample_delay_ms(rng, mean, params.max_delay_ms)
