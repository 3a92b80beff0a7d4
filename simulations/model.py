"""Simulation parameters: one frozen :class:`SimConfig`, checked once, with named defaults.

Rates are per second per client (or per mix for ``lambda_mix``); delays and durations are in
seconds of virtual time. :meth:`SimConfig.checked` refuses impossible values with a
:class:`~anonmail.errors.ConfigError` that names the option, so the CLI and the sweep reader
report them the same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from anonmail.core.sizes import MAX_HOPS
from anonmail.errors import ConfigError

__all__ = ["SimConfig", "DEFAULTS", "CHOICES", "COVER_SCHEMES"]

#: The cover schemes: the agent's since issue 15 (the default) and the one before it.
COVER_SCHEMES = ("acks", "legacy")
#: The values a string option may take.
CHOICES = {"link_model": ("tor", "i2p", "none"), "cover_scheme": COVER_SCHEMES}


@dataclass(frozen=True)
class SimConfig:
    """Everything one simulated run depends on (same config + seed → same result)."""

    clients: int = 200
    providers: int = 4
    layers: int = 3
    mixes_per_layer: int = 4
    delay_mean: float = 0.5  # mean per-hop mix delay, seconds (1/μ)
    lambda_payload: float = 1.0  # payload slots per second per client (0: no payload stream)
    lambda_loop: float = 0.2  # client loop cover per second
    lambda_drop: float = 0.2  # client drop cover per second (a stream of its own)
    lambda_mix: float = 0.5  # mix loop cover per second per mix
    real_rate: float = 0.05  # real messages written per second per client
    fragments: int = 1  # packets per real message
    duration: float = 120.0  # seconds during which real messages are written
    warmup: float | None = None  # entropy targets are sent after this (default: duration / 5)
    drain: float | None = None  # cover keeps flowing this long after duration (default: see below)
    compromised: float = 0.0  # fraction of mixes the adversary runs
    link_latency: float = 0.0  # fixed seconds per link
    provider_delay: float = 0.0  # mean Exp delay at forwarding providers (0: forward at once)
    entropy_samples: int = 200  # real messages whose anonymity is traced
    seed: int = 1
    crypto: bool = False  # real Sphinx packets (small networks)
    # The agent's behaviour (simulations.agent_model); the defaults leave it out.
    link_model: str = "none"  # per-link latency drawn from the fit to the Tor or I2P testnet: tor|i2p|none
    fetch_interval: float = 0.0  # seconds between a client's mailbox fetches (0: received when stored)
    fetch_batch: int = 0  # entries per fetch (0: all that are there)
    burst_messages: int = 0  # client 0 queues this many messages to client 1 at t=0 (the demos' workload)
    burst_big_fragments: int = 0  # fragments of one big message in the burst (0: none is big)
    burst_big_last: bool = False  # the big message is queued last (else first)
    burst_interval: float = 0.0  # seconds between queueing the burst's messages (0: all at t=0)
    poll_interval: float = 0.0  # the agent picks up mail queued by the CLI every this many seconds (0: at once)
    acks: bool = False  # each stored fragment is acknowledged through a SURB; overdue ones are resent
    ack_timeout: float = 0.0  # seconds before a fragment is resent (0: the agent's automatic timeout)
    loss: float = 0.0  # probability that a packet is lost on each link
    #: How cover is answered: "acks" (the agent since issue 15: every client packet's SURB is answered,
    #: held Exp(delay_mean) at the answering provider) or "legacy" (drop cover discarded unanswered).
    cover_scheme: str = "acks"

    @property
    def uses_agent_model(self) -> bool:
        """True if links, fetches, polls or a burst are modelled (the pure-Python loop runs these)."""
        return (self.link_model != "none" or self.fetch_interval > 0 or self.burst_messages > 0 or self.acks
                or self.loss > 0 or self.poll_interval > 0)

    @property
    def cover_acks(self) -> bool:
        """True if every client packet is answered with an ACK (the agent's scheme since issue 15)."""
        return self.cover_scheme == "acks"

    def checked(self) -> SimConfig:
        """This config (numbers normalised) if every value is possible, else ConfigError naming the option."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) != (f.type == "bool"):
                raise ConfigError(f"--{_opt(f.name)}: must be {'true or false' if f.type == 'bool' else 'a number'}, got {value!r}")
            if f.type == "int" and not isinstance(value, int):
                raise ConfigError(f"--{_opt(f.name)}: must be an integer, got {value!r}")
            if f.type == "str":
                if not isinstance(value, str):
                    raise ConfigError(f"--{_opt(f.name)}: must be a string, got {value!r}")
                continue
            if f.type.startswith("float") and isinstance(value, int):
                changes[f.name] = float(value)
            elif f.type.startswith("float") and value is not None and not isinstance(value, float):
                raise ConfigError(f"--{_opt(f.name)}: must be a number, got {value!r}")
        if changes:
            return replace(self, **changes).checked()
        for name in ("clients", "providers", "layers", "mixes_per_layer", "fragments"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{_opt(name)}: must be >= 1, got {getattr(self, name)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"--{_opt(f.name)}: must be a finite number, got {value}")
        for name in ("delay_mean", "lambda_payload", "lambda_loop", "lambda_drop", "lambda_mix",
                     "real_rate", "link_latency", "provider_delay", "entropy_samples", "fetch_interval",
                     "fetch_batch", "burst_messages", "burst_big_fragments", "burst_interval", "poll_interval",
                     "ack_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_opt(name)}: must be >= 0, got {getattr(self, name)}")
        if self.duration <= 0:
            raise ConfigError(f"--duration: must be > 0, got {self.duration}")
        for name in ("warmup", "drain"):
            value = getattr(self, name)
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise ConfigError(f"--{name}: must be a finite number >= 0, got {value}")
        if not 0.0 <= self.loss < 1.0:
            raise ConfigError(f"--loss: must be a probability in [0, 1), got {self.loss}")
        if not 0.0 <= self.compromised <= 1.0:
            raise ConfigError(f"--compromised: must be a fraction in [0, 1], got {self.compromised}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{_opt(name)}: must be {' or '.join(allowed)}, got {getattr(self, name)!r}")
        if self.clients < 2:
            raise ConfigError(f"--clients: needs at least 2 (a sender and a recipient), got {self.clients}")
        if self.crypto and self.layers + 2 > MAX_HOPS:
            raise ConfigError(f"--layers: --crypto packets carry at most {MAX_HOPS - 2} mix layers, got {self.layers}")
        return self

    @property
    def warmup_s(self) -> float:
        """When entropy targets start: pools have filled by then."""
        return self.duration / 5 if self.warmup is None else self.warmup

    @property
    def drain_s(self) -> float:
        """How long traffic goes on after the last real message is written, so it can arrive."""
        if self.drain is not None:
            return self.drain
        from simulations.agent_model import LINK_MODELS

        model = LINK_MODELS.get(self.link_model)
        link = self.link_latency + (model.mean_s if model is not None else 0.0)
        hop = self.delay_mean + link
        return max(5.0, 12 * (self.layers * hop + 2 * self.provider_delay) + 4 * link)

    def as_dict(self) -> dict:
        """Plain values for the JSON output (effective warmup and drain filled in)."""
        data = asdict(self)
        data["warmup"] = self.warmup_s
        data["drain"] = self.drain_s
        return data

    def with_(self, **changes: object) -> SimConfig:
        """A copy with some values changed, checked."""
        return replace(self, **changes).checked()


def _opt(name: str) -> str:
    return name.replace("_", "-")


DEFAULTS = SimConfig()
