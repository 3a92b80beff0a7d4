"""Pick the transport for an address by its scheme, and serve on all of a node's transports."""

from __future__ import annotations

from collections.abc import Iterable

import anyio.abc

from anonmail.core.uri import parse_transport_address
from anonmail.errors import TransportAddressError
from anonmail.net.base import Handler, Transport

__all__ = ["Router"]


class Router:
    """Connects by scheme (``onion`` → Tor, ``i2p`` → I2P, ...); refuses test schemes in production."""

    def __init__(self, transports: Iterable[Transport], *, production: bool = True) -> None:
        self.transports = list(transports)
        self.production = production
        self._by_scheme: dict[str, Transport] = {}
        for transport in self.transports:
            for scheme in transport.schemes:
                self._by_scheme.setdefault(scheme, transport)

    @property
    def schemes(self) -> frozenset[str]:
        """The schemes this node can reach."""
        return frozenset(self._by_scheme)

    def can_reach(self, address: str) -> bool:
        """Whether an address parses and has a transport here (and is allowed)."""
        try:
            parsed = parse_transport_address(address, production=self.production)
        except TransportAddressError:
            return False
        return parsed.scheme in self._by_scheme

    async def listen(self, handler: Handler) -> list[str]:
        """Listen on every serving transport (not connect-only ones); return all addresses served."""
        addresses: list[str] = []
        for transport in self.transports:
            if not transport.serves:
                continue
            addresses.extend(await transport.listen(handler))
        return addresses

    async def connect(self, address: str, *, isolated: bool = False) -> anyio.abc.ByteStream:
        """Connect through the transport for the address's scheme (``isolated``: on a path of its own)."""
        parsed = parse_transport_address(address, production=self.production)
        transport = self._by_scheme.get(parsed.scheme)
        if transport is None:
            have = ", ".join(sorted(self._by_scheme)) or "none"
            raise TransportAddressError(
                f"cannot reach {address}: no {parsed.scheme} transport configured (have: {have})",
                address=address,
            )
        return await (transport.connect_isolated(address) if isolated else transport.connect(address))
