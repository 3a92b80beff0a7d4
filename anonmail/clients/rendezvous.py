"""The client side of the invitation rendezvous (:mod:`anonmail.core.rendezvous`).

The inviter speaks through its logged-in :class:`~anonmail.clients.provider.ProviderClient`;
the acceptor, a stranger to that provider, through an :class:`AnonymousSession` (a fresh
connection that never authenticates, as a key lookup does). Both expose
``request(message, expected)``; :class:`Rendezvous` turns the typed requests into calls::

    rv = Rendezvous(await AnonymousSession.connect(router, address))
    joined = await rv.join(nameplate, pake)

Errors: :class:`~anonmail.errors.ProtocolError` (the provider refused, with its ``reason``, or
answered out of shape) and :class:`~anonmail.errors.TransportError`.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio

from anonmail.clients.provider import REQUEST_TIMEOUT, _check_reply, _close_quietly, _open
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
from anonmail.core.wire import Close, Control
from anonmail.errors import LinkError, ProtocolError, TransportError, WireError
from anonmail.net.framed import FramedStream
from anonmail.net.router import Router

__all__ = ["Channel", "AnonymousSession", "Rendezvous"]


class Channel(Protocol):
    """Something that sends one CONTROL request and returns the answer of the expected type."""

    async def request(self, message: dict, expected: str) -> dict: ...


class AnonymousSession:
    """An unauthenticated session with a provider, for joining an invitation there."""

    def __init__(self, framed: FramedStream, address: str, timeout: float) -> None:
        """Use :meth:`connect`."""
        self._framed, self.address, self.timeout = framed, address, timeout
        self._lock = anyio.Lock()

    @classmethod
    async def connect(cls, router: Router, address: str, *, timeout: float = REQUEST_TIMEOUT) -> AnonymousSession:
        """Connect and take the provider's challenge without answering it."""
        framed = await _open(router, address, timeout)
        try:
            with anyio.fail_after(timeout):
                frame = await framed.receive()
            if not isinstance(frame, Control):
                raise ProtocolError("the provider sent no challenge", reason="malformed")
            _check_reply(frame.message, "challenge")
        except BaseException as exc:
            await _close_quietly(framed)
            if isinstance(exc, TimeoutError):
                raise TransportError(f"provider {address} did not answer within {timeout:g} s", address=address) from None
            if isinstance(exc, (LinkError, WireError)):
                raise TransportError(f"the connection to {address} broke: {type(exc).__name__}",
                                     address=address) from None
            raise
        return cls(framed, address, timeout)

    async def request(self, message: dict, expected: str) -> dict:
        """One request and its answer, bounded by the timeout."""
        async with self._lock:
            try:
                with anyio.fail_after(self.timeout):
                    reply = await self._framed.request(message)
            except TimeoutError:
                raise TransportError(f"provider {self.address} did not answer within {self.timeout:g} s",
                                     address=self.address) from None
            except (LinkError, WireError) as exc:
                raise TransportError(f"the connection to {self.address} broke: {type(exc).__name__}",
                                     address=self.address) from None
        return _check_reply(reply, expected)

    async def aclose(self) -> None:
        """Say goodbye and close."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(1):
            try:
                await self._framed.send(Close(0, "bye"))
            except (LinkError, WireError):
                pass
        await _close_quietly(self._framed)


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
