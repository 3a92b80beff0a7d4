"""An authority's configuration: ``authority.toml`` into a frozen, validated :class:`AuthorityConfig`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from anonmail.config import load_toml
from anonmail.core import pki
from anonmail.core.keys import IdentityKey
from anonmail.core.params import DEFAULT_PARAMS, PARAM_LIMITS, NetworkParams
from anonmail.keyfiles import read_key_file
from anonmail.daemon.node_config import check_node_name
from anonmail.errors import AnonmailError, ConfigError
from anonmail.net.settings import i2p_settings_from_table, tor_settings_from_table

if TYPE_CHECKING:
    from anonmail.net.i2p import I2PSettings
    from anonmail.net.tor import TorSettings

__all__ = [
    "DEFAULT_EPOCH_SECONDS",
    "DEFAULT_ROUND_SECONDS",
    "DEFAULT_SYNC_DELAY",
    "DEFAULT_GOSSIP_SECONDS",
    "DEFAULT_VOTE_SECONDS",
    "PeerAuthority",
    "AuthorityConfig",
    "load_authority_config",
    "load_authority_key",
    "peers_from_pairs",
]


DEFAULT_EPOCH_SECONDS = pki.DEFAULT_EPOCH_SECONDS
#: Seconds between build points once the first one for an epoch has passed (bootstrap rounds).
DEFAULT_ROUND_SECONDS = 5
#: Seconds after a build point before peers are asked for their descriptors.
DEFAULT_SYNC_DELAY = 2
#: Seconds between background descriptor pulls from peers (before the cutoff).
DEFAULT_GOSSIP_SECONDS = 30
#: Length of each of the two voting phases of a build round (see :mod:`mixnode.authority.voting`).
DEFAULT_VOTE_SECONDS = 5


@dataclass(frozen=True)
class PeerAuthority:
    """Another authority: where to reach it and the key its signatures verify with."""

    address: str
    public_key: bytes

    @property
    def authority_id(self) -> str:
        """How its signatures are named in consensus replies."""
        return pki.authority_id(self.public_key)


@dataclass(frozen=True)
class AuthorityConfig:
    """A validated authority configuration (see :func:`load_authority_config`)."""

    name: str
    data_dir: Path
    key_file: Path
    listen: tuple[str, ...]  # addresses served directly (tcp in test mode; mem in-process)
    peers: tuple[PeerAuthority, ...] = ()
    threshold: int = 1
    epoch_seconds: int = DEFAULT_EPOCH_SECONDS
    test_mode: bool = False
    freeze_lead: int | None = None  # default: epoch_seconds // 4
    round_seconds: int = DEFAULT_ROUND_SECONDS
    sync_delay: int = DEFAULT_SYNC_DELAY
    gossip_seconds: int = DEFAULT_GOSSIP_SECONDS
    vote_seconds: float = DEFAULT_VOTE_SECONDS
    #: Test networks that start every node at once: build an epoch whose previous epoch has no
    #: document only from at least this many nodes (so the first consensus lists them all).
    bootstrap_nodes: int = 0
    #: The traffic parameters this authority votes for (``[params]``; the consensus carries the median).
    params: NetworkParams = DEFAULT_PARAMS
    tor: TorSettings | None = None  # serve as an onion service
    i2p: I2PSettings | None = None  # serve as an I2P destination
    config_path: Path | None = field(default=None, compare=False)

    @property
    def production(self) -> bool:
        """Whether only onion and I2P addresses are allowed."""
        return not self.test_mode

    @property
    def lead(self) -> int:
        """Seconds before an epoch starts at which its first build point lies."""
        return self.freeze_lead if self.freeze_lead is not None else self.epoch_seconds // 4

    def check(self) -> None:
        """Cross-field rules; ValueError names the field."""
        count = len(self.peers) + 1
        if not pki.majority(count) <= self.threshold <= count:
            raise ValueError(
                f"threshold must be a majority of the {count} authorities ({pki.majority(count)}..{count}), got {self.threshold}"
            )
        if self.epoch_seconds < 10:
            raise ValueError("epoch_seconds must be at least 10")
        if not 0 <= self.lead < self.epoch_seconds:
            raise ValueError("freeze_lead must be 0..epoch_seconds-1")
        if self.vote_seconds <= 0:
            raise ValueError("vote_seconds must be positive")
        if self.round_seconds < 1 or self.sync_delay < 0 or self.sync_delay >= self.round_seconds:
            raise ValueError("need round_seconds >= 1 and 0 <= sync_delay < round_seconds")
        self.params.check()
        keys = [p.public_key for p in self.peers]
        if len(set(keys)) != len(keys):
            raise ValueError("peers lists the same public key twice")


def load_authority_config(path: str | os.PathLike[str]) -> AuthorityConfig:
    """Read and validate an authority's TOML config; ConfigError naming the file and key."""
    table = load_toml(path)
    base = Path(path).resolve().parent
    test_mode = table.bool("test_mode", default=False)
    production = not test_mode
    name = table.str("name", check=check_node_name)
    data_dir = table.path_value("data_dir", base=base, default=".")
    key_file = table.path_value("key_file", base=data_dir, default="identity.key")
    listen = table.addresses("listen", production=production, listen=True, default=[])
    tor = tor_settings_from_table(table.table("tor")) if table.has("tor") else None
    i2p = i2p_settings_from_table(table.table("i2p")) if table.has("i2p") else None
    if not listen and tor is None and i2p is None:
        raise table.error("listen", "configure a transport: [tor] or [i2p] (or listen = [\"tcp://...\"] in test mode)")
    if not listen and not any(t is not None and t.serve for t in (tor, i2p)):
        raise table.error("tor", "no transport serves: set serve = true in [tor] or [i2p] (nodes connect to the authority)")
    peers = []
    for peer in table.tables("peers"):
        address = peer.address("address", production=production)
        key = peer.public_key("public_key")
        peers.append(PeerAuthority(address, key))
    threshold = table.int("threshold", default=pki.majority(len(peers) + 1), minimum=pki.majority(len(peers) + 1),
                          maximum=len(peers) + 1)
    epoch_seconds = table.int("epoch_seconds", default=DEFAULT_EPOCH_SECONDS, minimum=10)
    freeze_lead = table.int("freeze_lead", default=None, minimum=0, maximum=epoch_seconds - 1)
    round_seconds = table.int("round_seconds", default=DEFAULT_ROUND_SECONDS, minimum=1)
    sync_delay = table.int("sync_delay", default=DEFAULT_SYNC_DELAY, minimum=0, maximum=round_seconds - 1)
    gossip_seconds = table.int("gossip_seconds", default=DEFAULT_GOSSIP_SECONDS, minimum=1)
    vote_seconds = table.int("vote_seconds", default=DEFAULT_VOTE_SECONDS, minimum=1)
    bootstrap_nodes = table.int("bootstrap_nodes", default=0, minimum=0)
    params = _params_from_table(table.table("params")) if table.has("params") else DEFAULT_PARAMS
    table.finish()
    config = AuthorityConfig(
        name=name,
        data_dir=data_dir,
        key_file=key_file,
        listen=tuple(listen),
        peers=tuple(peers),
        threshold=threshold,
        epoch_seconds=epoch_seconds,
        test_mode=test_mode,
        freeze_lead=freeze_lead,
        round_seconds=round_seconds,
        sync_delay=sync_delay,
        gossip_seconds=gossip_seconds,
        vote_seconds=vote_seconds,
        bootstrap_nodes=bootstrap_nodes,
        params=params,
        tor=tor,
        i2p=i2p,
        config_path=Path(path),
    )
    try:
        config.check()
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


def _params_from_table(table) -> NetworkParams:
    """``[params]``: every key optional (today's defaults), each within :data:`PARAM_LIMITS`."""
    values: dict[str, float | int] = {}
    for name, (low, high) in PARAM_LIMITS.items():
        default = getattr(DEFAULT_PARAMS, name)
        if name == "fetch_batch":
            values[name] = table.int(name, default=default, minimum=int(low), maximum=int(high))
        else:
            values[name] = table.float(name, default=default, minimum=low, maximum=high)
    table.finish()
    return NetworkParams(**values)


def load_authority_key(path: Path) -> IdentityKey:
    """The authority's identity key: a 0600 file holding the 32-byte seed."""
    data = read_key_file(path)
    try:
        return IdentityKey.from_seed(data)
    except AnonmailError:
        raise ConfigError(f"{path}: not an authority identity key (expected a 32-byte seed)") from None


def peers_from_pairs(pairs: Sequence[tuple[str, bytes]]) -> tuple[PeerAuthority, ...]:
    """Peer list from (address, public key) pairs."""
    return tuple(PeerAuthority(a, k) for a, k in pairs)
