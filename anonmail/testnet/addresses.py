"""A testnet node's onion key and I2P destination, created before its first run.

Creating them up front lets the authorities pin each other's addresses from the start, without a
restart to learn them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anonmail.errors import TestnetError

__all__ = ["create_addresses"]


def create_addresses(directory: Path, serves: tuple[str, ...], i2p_settings: Any | None) -> list[str]:
    """Create a node's onion key and/or I2P destination under ``directory``; return its addresses."""
    import anyio

    from anonmail.net.i2p import I2PTransport, load_destination
    from anonmail.net.tor import ONION_KEY_FILE, create_onion_key

    addresses = []
    if "tor" in serves:
        if (directory / "tor" / ONION_KEY_FILE).exists():
            raise TestnetError(f"{directory} already holds an onion key: use a fresh testnet directory")
        addresses.append(create_onion_key(directory / "tor"))
    if "i2p" in serves:
        if load_destination(directory / "i2p") is not None:
            raise TestnetError(f"{directory} already holds an I2P destination: use a fresh testnet directory")
        if i2p_settings is None:
            raise TestnetError(f"{directory}: serving I2P needs the private I2P network's settings")

        async def create() -> str:
            async with I2PTransport(directory / "i2p", i2p_settings) as transport:
                return await transport.create_destination()

        addresses.append(anyio.run(create))
    return addresses
