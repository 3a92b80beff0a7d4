"""Where the SAM bridge is and how a node's I2P tunnels look: :class:`I2PSettings` and its defaults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from anonmail.errors import ConfigError

__all__ = ["I2PSettings"]

DEFAULT_SAM_HOST = "127.0.0.1"
DEFAULT_SAM_PORT = 7656
#: Hops per tunnel on the real network (I2P's own default); the private test network uses 1.
DEFAULT_TUNNEL_LENGTH = 3
DEFAULT_TUNNEL_QUANTITY = 2
DEFAULT_CONTROL_TIMEOUT = 10.0
DEFAULT_SESSION_TIMEOUT = 180.0
DEFAULT_LOOKUP_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 90.0
DEFAULT_HEALTH_INTERVAL = 30.0


@dataclass(frozen=True, slots=True)
class I2PSettings:
    """Where the SAM bridge is and how the node's I2P tunnels look; validated on creation.

    Defaults suit the real I2P network (3-hop tunnels, 2 of each). :meth:`for_testnet` gives
    1-hop tunnels for a private network of routers on loopback.
    """

    sam_host: str = DEFAULT_SAM_HOST
    #: Serve the node's listener on an I2P destination; False: connect only (reachable elsewhere).
    serve: bool = True
    sam_port: int = DEFAULT_SAM_PORT
    inbound_length: int = DEFAULT_TUNNEL_LENGTH
    outbound_length: int = DEFAULT_TUNNEL_LENGTH
    inbound_quantity: int = DEFAULT_TUNNEL_QUANTITY
    outbound_quantity: int = DEFAULT_TUNNEL_QUANTITY
    #: Connecting to the bridge and each short SAM exchange (HELLO, ACCEPT, DEST GENERATE).
    control_timeout: float = DEFAULT_CONTROL_TIMEOUT
    #: SESSION CREATE: the reply comes only once tunnels and the lease set exist.
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    #: NAMING LOOKUP of a peer's b32 address (a lease set lookup in the network database).
    lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT
    #: STREAM CONNECT once the peer's destination is known.
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: How often the listening session's control socket is probed (a lost session is re-created).
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    #: Extra I2CP options for SESSION CREATE (e.g. ``{"i2cp.reduceOnIdle": "true"}``); a mapping
    #: or pairs, kept as sorted pairs so the settings stay hashable.
    extra_options: Mapping[str, str] | tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.sam_host or any(c.isspace() for c in self.sam_host):
            raise ConfigError(f"i2p.sam_host must be a host name or IP address, got {self.sam_host!r}")
        if not isinstance(self.sam_port, int) or not 1 <= self.sam_port <= 65535:
            raise ConfigError(f"i2p.sam_port must be 1-65535, got {self.sam_port!r}")
        for name in ("inbound_length", "outbound_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 7:
                raise ConfigError(f"i2p.{name} must be 0-7 hops, got {value!r}")
        for name in ("inbound_quantity", "outbound_quantity"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 16:
                raise ConfigError(f"i2p.{name} must be 1-16 tunnels, got {value!r}")
        for name in ("control_timeout", "session_timeout", "lookup_timeout", "connect_timeout",
                     "health_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ConfigError(f"i2p.{name} must be a positive number of seconds, got {value!r}")
        pairs = tuple(sorted((str(k), str(v)) for k, v in dict(self.extra_options).items()))
        for key, value in pairs:
            if not re.fullmatch(r"[A-Za-z0-9._]+", key) or not re.fullmatch(r"[A-Za-z0-9._,:-]*", value):
                raise ConfigError(f"i2p.extra_options: not a plain I2CP option: {key!r}={value!r}")
        object.__setattr__(self, "extra_options", pairs)

    @classmethod
    def for_testnet(cls, sam_port: int, **overrides: Any) -> I2PSettings:
        """Settings for a private network on loopback: 1-hop tunnels, fast but not anonymous."""
        values: dict[str, Any] = dict(
            sam_host="127.0.0.1", sam_port=sam_port, inbound_length=1, outbound_length=1,
            inbound_quantity=2, outbound_quantity=2, session_timeout=120.0, lookup_timeout=20.0,
            connect_timeout=60.0,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def bridge(self) -> str:
        """The bridge as ``host:port``, for messages."""
        return f"{self.sam_host}:{self.sam_port}"
