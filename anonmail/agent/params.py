"""The agent's traffic settings under the consensus's parameters: stricter locally, never weaker.

Every user must look alike to the mixes, so the rates, the mean delay and the fetch interval an
agent uses are the network's published ones (:mod:`anonmail.core.params`) unless its own
``agent.toml`` asks for more privacy (higher λ_P and λ_L, a longer mean delay up to the
published maximum, more frequent fetches). A weaker local value is raised, with one log line.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from anonmail.core.params import NetworkParams, stricter

if TYPE_CHECKING:
    from anonmail.agent.settings import AgentSettings
    from anonmail.core.pki import Consensus

__all__ = ["AgentParams"]

log = logging.getLogger("anonmail.agent")


class AgentParams:
    """The configured settings, and the effective ones for the consensus last seen."""

    def __init__(self, configured: AgentSettings) -> None:
        self.configured = configured
        self._local = NetworkParams(
            lambda_payload=configured.lambda_payload, lambda_loop=configured.lambda_loop,
            delay_mean=configured.delay_mean, fetch_interval=configured.fetch_interval,
            max_delay=max(configured.delay_mean, 0.001),
        )
        self._seen: NetworkParams | None = None
        self._effective = configured

    def effective(self, consensus: Consensus | None) -> AgentSettings:
        """The settings to send and fetch with now (the configured ones until a consensus is known)."""
        if consensus is None or consensus.params == self._seen:
            return self._effective
        self._seen = consensus.params
        values, raised = stricter(self._local, consensus.params)
        if raised:
            log.warning("agent.toml sets %s below the network's published values; using the network's (%s)",
                        ", ".join(raised), ", ".join(f"{n}={getattr(values, n):g}" for n in raised))
        self._effective = replace(self.configured, lambda_payload=values.lambda_payload,
                                  lambda_loop=values.lambda_loop, delay_mean=values.delay_mean,
                                  fetch_interval=values.fetch_interval)
        return self._effective
