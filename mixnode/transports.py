"""Build a mix node's transports from its config (shared readers in :mod:`anonmail.net.settings`)."""

from __future__ import annotations

from anonmail.net.base import Transport
from anonmail.net.settings import build_transports as _build
from mixnode.config import MixConfig

__all__ = ["build_transports"]


def build_transports(config: MixConfig) -> list[Transport]:
    """The transports a mix node serves and connects with, as its config asks."""
    return _build(config.data_dir, tcp_listen=config.tcp_listen, tor=config.tor, i2p=config.i2p,
                  test_mode=config.test_mode)
