"""The plan of a testnet, without processes: which nodes run, in which role, serving what."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from anonmail.core.params import DEFAULT_PARAMS, NetworkParams
from anonmail.errors import TestnetError

__all__ = ["NodeSpec", "plan_nodes", "AUTHORITIES", "THRESHOLD", "LAYERS", "PROVIDER_NAMES", "USER_NAMES",
           "published_params"]

#: Authorities per testnet and how many must sign a consensus.
AUTHORITIES = 3
THRESHOLD = 2
#: The three mix layers of the stratified topology.
LAYERS = 3
PROVIDER_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
USER_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
#: Who serves what when both networks run, as cycles per role (index i takes entry i mod 3).
#: Path selection only joins nodes that *serve* a common transport, so layers 1 and 3 start with
#: a node on both and layer 2 with one on Tor: then every provider reaches layer 1, layer 1
#: reaches layer 2, layer 2 reaches layer 3 and layer 3 every provider, however few mixes run.
_TOR, _I2P, _BOTH = ("tor",), ("i2p",), ("tor", "i2p")
_SERVE_CYCLES = {
    "authority": (_BOTH, _TOR, _I2P),
    "provider": (_TOR, _I2P, _BOTH),
    1: (_BOTH, _I2P, _TOR),
    2: (_TOR, _I2P, _BOTH),
    3: (_BOTH, _TOR, _I2P),
}


@dataclass(frozen=True)
class NodeSpec:
    """One process of the testnet: its name, role and what it serves."""

    name: str
    role: str  # authority | mix | provider | agent
    serves: tuple[str, ...]  # "tor", "i2p"; agents serve nothing
    layer: int | None = None  # mixes
    provider: str | None = None  # agents: where the user's mailbox is

    @property
    def subdir(self) -> str:
        """Where its files live, relative to the testnet directory."""
        return {"authority": "authorities", "mix": "mixes", "provider": "providers", "agent": "users"}[self.role] \
            + "/" + self.name


def _serves(index: int, cycle: str | int, tor: bool, i2p: bool) -> tuple[str, ...]:
    if tor and i2p:
        return _SERVE_CYCLES[cycle][index % 3]
    return _TOR if tor else _I2P


def plan_nodes(*, tor: bool, i2p: bool, mixes_per_layer: int = 2, providers: int = 2, users: int = 2) -> list[NodeSpec]:
    """Every process of a testnet, in start order; with both networks the transports alternate."""
    if not (tor or i2p):
        raise TestnetError("a testnet needs --tor, --i2p or both")
    if not 1 <= mixes_per_layer <= 8:
        raise TestnetError(f"--mixes-per-layer must be 1..8, got {mixes_per_layer}")
    if not 1 <= providers <= len(PROVIDER_NAMES):
        raise TestnetError(f"--providers must be 1..{len(PROVIDER_NAMES)}, got {providers}")
    if not 0 <= users <= len(USER_NAMES):
        raise TestnetError(f"--users must be 0..{len(USER_NAMES)}, got {users}")
    nodes = [NodeSpec(f"auth{i + 1}", "authority", _serves(i, "authority", tor, i2p)) for i in range(AUTHORITIES)]
    for layer in range(1, LAYERS + 1):
        nodes += [NodeSpec(f"mix{layer}{chr(ord('a') + i)}", "mix", _serves(i, layer, tor, i2p), layer=layer)
                  for i in range(mixes_per_layer)]
    nodes += [NodeSpec(PROVIDER_NAMES[i], "provider", _serves(i, "provider", tor, i2p)) for i in range(providers)]
    nodes += [NodeSpec(USER_NAMES[i], "agent", (), provider=PROVIDER_NAMES[i % providers]) for i in range(users)]
    return nodes


def published_params(params: NetworkParams | None, agent_settings: Mapping[str, Any]) -> NetworkParams:
    """The authorities' ``[params]``: ``params``, else the defaults with the users' own rates and delays."""
    if params is not None:
        return params
    names = set(DEFAULT_PARAMS.to_dict())
    return replace(DEFAULT_PARAMS, **{k: float(v) for k, v in agent_settings.items() if k in names})
