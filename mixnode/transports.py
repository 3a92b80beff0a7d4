"""Build a node's transports from its config: tcp (tests), onion (Tor), i2p (I2P)."""

from __future__ import annotations

from anonmail.net.base import Transport
from anonmail.net.tcp import TcpTransport
from mixnode.config import MixConfig

__all__ = ["build_transports"]


def build_transports(config: MixConfig) -> list[Transport]:
    """The transports a mix node serves and connects with, as its config asks."""
    transports: list[Transport] = []
    if config.tcp_listen is not None:
        transports.append(TcpTransport(config.tcp_listen))
    if config.tor is not None:
        from anonmail.net.tor import OnionTransport, TorSettings  # noqa: F401 - wired once the Tor transport lands

        transports.append(OnionTransport.from_config(config.tor, data_dir=config.data_dir / "tor"))
    if config.i2p is not None:
        from anonmail.net.i2p import I2PTransport  # noqa: F401

        transports.append(I2PTransport.from_config(config.i2p, data_dir=config.data_dir / "i2p"))
    return transports
