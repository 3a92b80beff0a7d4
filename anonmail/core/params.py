"""The network's traffic parameters: what every consensus carries so that all users look alike.

Sans-IO. Authorities set them in ``authority.toml`` (``[params]``), vote them, and publish the
per-field median of the votes in the signed consensus (:func:`median_params`): one authority
with odd values can move no field past the honest ones. Agents send at these rates (their own
config may only be stricter: :func:`stricter`), and mixes and providers drop a packet whose
per-hop delay exceeds ``max_delay``.

Rates are per second; delays and the fetch interval are seconds; ``fetch_batch`` is entries.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

from anonmail.errors import DirectoryError

__all__ = ["NetworkParams", "DEFAULT_PARAMS", "PARAM_LIMITS", "params_from_dict", "median_params", "stricter"]

#: Allowed range of each parameter (inclusive): a document outside them is malformed.
PARAM_LIMITS: dict[str, tuple[float, float]] = {
    "lambda_payload": (0.01, 1000.0),
    "lambda_loop": (0.0, 1000.0),
    "mix_lambda_loop": (0.0, 1000.0),
    "delay_mean": (0.0, 3600.0),
    "max_delay": (0.001, 86400.0),
    "fetch_interval": (0.05, 3600.0),
    "fetch_batch": (1, 256),
}


@dataclass(frozen=True)
class NetworkParams:
    """λ_P, λ_L, the mixes' loop rate, per-hop delays and the mailbox fetch schedule."""

    lambda_payload: float = 2.0  # λ_P: packets per second every agent sends (mail or drop cover)
    lambda_loop: float = 0.5  # λ_L: loop cover packets per second per agent
    mix_lambda_loop: float = 0.2  # λ_M: loop cover packets per second per mix
    delay_mean: float = 0.5  # mean per-hop delay, seconds (Exp)
    max_delay: float = 30.0  # longest per-hop delay a mix or provider holds; longer is dropped
    fetch_interval: float = 5.0  # seconds between an agent's mailbox fetches
    fetch_batch: int = 32  # entries per fetch

    def __post_init__(self) -> None:
        for f in fields(self):  # one encoding for signing: rates and delays are always floats
            value = getattr(self, f.name)
            if f.name != "fetch_batch" and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))

    @property
    def max_delay_ms(self) -> int:
        """The published maximum in the unit of Sphinx routing commands."""
        return round(self.max_delay * 1000)

    def check(self) -> None:
        """Each field in range and the mean below the maximum; ValueError names the field."""
        for f in fields(self):
            value = getattr(self, f.name)
            low, high = PARAM_LIMITS[f.name]
            if f.name == "fetch_batch":
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or not low <= value <= high:
                raise ValueError(f"{f.name} must be a number in {low:g}..{high:g}, got {value!r}")
        if self.delay_mean > self.max_delay:
            raise ValueError(f"delay_mean ({self.delay_mean:g}) must not exceed max_delay ({self.max_delay:g})")

    def to_dict(self) -> dict:
        """As signed in votes and documents (floats as JSON numbers)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


DEFAULT_PARAMS = NetworkParams()


def params_from_dict(data: object) -> NetworkParams:
    """Parse the ``params`` object of a vote or document; DirectoryError(reason='malformed')."""
    names = {f.name for f in fields(NetworkParams)}
    if not isinstance(data, Mapping) or set(data) != names:
        raise DirectoryError(f"params must be an object with exactly {sorted(names)}", reason="malformed")
    params = NetworkParams(**data)
    try:
        params.check()
    except ValueError as exc:
        raise DirectoryError(f"params: {exc}", reason="malformed") from None
    return params


def median_params(votes: Sequence[NetworkParams]) -> NetworkParams:
    """Per-field low median of the votes (deterministic; defaults when there are none).

    With a majority of honest authorities every published value lies between two honest ones.
    The result is re-checked: if the medians break a cross-field rule the mean is lowered to the
    maximum (the maximum is what mixes enforce).
    """
    if not votes:
        return DEFAULT_PARAMS
    values = {f.name: statistics.median_low([getattr(v, f.name) for v in votes]) for f in fields(NetworkParams)}
    params = NetworkParams(**values)
    if params.delay_mean > params.max_delay:
        params = replace(params, delay_mean=params.max_delay)
    return params


def stricter(local: NetworkParams, consensus: NetworkParams) -> tuple[NetworkParams, list[str]]:
    """An agent's effective values: its own where they are stricter for privacy, else the network's.

    Higher cover rates and a higher mean delay (up to the published maximum) are stricter;
    so is fetching more often. The fetch batch and the maximum are the network's. Returns the
    values and the names of the local ones that were raised to the network's.
    """
    raised: list[str] = []

    def at_least(name: str) -> float:
        mine, theirs = getattr(local, name), getattr(consensus, name)
        if mine < theirs:
            raised.append(name)
            return theirs
        return mine

    effective = replace(
        consensus,
        lambda_payload=at_least("lambda_payload"),
        lambda_loop=at_least("lambda_loop"),
        delay_mean=min(at_least("delay_mean"), consensus.max_delay),
        fetch_interval=min(local.fetch_interval, consensus.fetch_interval),
    )
    if local.fetch_interval > consensus.fetch_interval:
        raised.append("fetch_interval")
    return effective, raised
