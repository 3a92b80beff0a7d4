"""The client side of the invitation rendezvous (:mod:`anonmail.core.rendezvous`).

The inviter speaks through its logged-in :class:`~anonmail.clients.provider.ProviderClient`;
the acceptor, a stranger to that provider, through :meth:`ProviderClient.anonymous
<anonmail.clients.provider.ProviderClient.anonymous>` (a fresh connection that never
authenticates, as a key lookup does). Both offer ``request(message, expected)``;
:class:`Rendezvous` turns the typed requests into calls::

    rv = Rendezvous(await ProviderClient.anonymous(router, address))
    joined = await rv.join(nameplate, pake)

Errors: :class:`~anonmail.errors.ProtocolError` (the provider refused, with its ``reason``, or
answered out of shape) and :class:`~anonmail.errors.TransportError`.
"""

from __future__ import annotations

from typing import Any, Protocol

from anonmail.core.rendezvous import (
    CloseRequest,
    GetRequest,
    InviteState,
    Joined,
    JoinRequest,
    Opened,
    OpenRequest,
    PutRequest,
    parse_joined,
    parse_opened,
    parse_state,
)

__all__ = ["Channel", "Rendezvous"]


class Channel(Protocol):
    """Something that sends one CONTROL request and returns the answer of the expected type."""

    async def request(self, message: dict, expected: str) -> dict: ...


class Rendezvous:
    """Typed rendezvous requests over a :class:`Channel`."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def _ask(self, message: dict[str, Any], expected: str) -> dict[str, Any]:
        return await self.channel.request(message, expected)

    async def open(self) -> Opened:
        """Ask for a nameplate (the channel must be logged in)."""
        return parse_opened(await self._ask(OpenRequest().to_message(), "invite_opened"))

    async def join(self, nameplate: int, pake: bytes) -> Joined:
        """Claim a nameplate with our SPAKE2 message; returns the inviter's."""
        return parse_joined(await self._ask(JoinRequest(nameplate, pake).to_message(), "invite_joined"))

    async def put(self, nameplate: int, token: bytes, slot: str, data: bytes) -> None:
        """Leave our SPAKE2 message or sealed introduction."""
        await self._ask(PutRequest(nameplate, token, slot, data).to_message(), "ok")

    async def get(self, nameplate: int, token: bytes) -> InviteState:
        """What the peer left so far, and the state."""
        return parse_state(await self._ask(GetRequest(nameplate, token).to_message(), "invite_state"))

    async def close(self, nameplate: int, token: bytes, outcome: str) -> None:
        """Finish our side (``done`` or ``mismatch``)."""
        await self._ask(CloseRequest(nameplate, token, outcome).to_message(), "ok")
