"""The agent's rates and timers: the ``[agent]`` table of ``agent.toml``."""

from __future__ import annotations

from dataclasses import dataclass

from anonmail.agent import account

__all__ = ["AgentSettings"]


@dataclass(frozen=True)
class AgentSettings:
    """The agent's rates and timers (``agent.toml`` [agent] table)."""

    provider: str
    #: The provider's pinned identity key: a consensus binding the name to another key is refused.
    provider_key: bytes | None = None
    lambda_payload: float = 2.0
    lambda_loop: float = 0.5
    fetch_interval: float = 5.0
    delay_mean: float = 0.5
    #: Seconds to wait for an ACK before retransmitting; 0 = from the delays and fetch interval.
    ack_timeout: float = 0.0
    #: Extra seconds allowed for the transports (Tor/I2P round trips) in the automatic ACK timeout.
    transport_slack: float = 20.0
    key_lifetime: int = account.DEFAULT_KEY_LIFETIME
    poll_interval: float = 1.0
    #: Run crypto and SQLite work in threads (False: inline, for virtual-time tests).
    threads: bool = True
    #: Probability that a packet we send is lost on our link (the memory demo's --loss).
    link_loss: float = 0.0

    def effective_ack_timeout(self) -> float:
        """ACK timeout: the given one, or 3× the mean round trip's holds (7) plus fetch and slack."""
        if self.ack_timeout > 0:
            return self.ack_timeout
        return 3 * 7 * self.delay_mean + 2 * self.fetch_interval + self.transport_slack
