"""The rendezvous messages of invitations, carried in the provider protocol (sans-IO).

An invitation (:mod:`anonmail.core.invite`) meets at the inviter's provider, in CONTROL
messages of the client protocol (:mod:`anonmail.core.mailproto`)::

    inviter (logged in)                    provider                     acceptor (anyone)
    invite_open ───────────────────────▶  allocate a nameplate
                ◀─── invite_opened {nameplate, token, expires_in}
    invite_put {slot: "pake"} ─────────▶                                 (code read aloud)
                                           ◀───────── invite_join {nameplate, pake}
                                           ───▶ invite_joined {token, pake, expires_in}
                                           ◀───────── invite_put {slot: "sealed"}
    invite_get ────────────────────────▶  ───▶ invite_state {state, pake, sealed}
    invite_put {slot: "sealed"} ───────▶
    invite_close {outcome} ────────────▶   ◀───────── invite_get, invite_close

``token`` (16 random bytes) is each side's capability for its own half; the provider keeps only
its hash. ``invite_get`` returns the *peer's* SPAKE2 message and sealed introduction, when
present. ``outcome`` ``mismatch`` (the peer's introduction did not open) turns the state to
``failed``, which the other side sees at its next ``invite_get``. Data is base64: ``pake``
exactly :data:`~anonmail.core.invite.PAKE_BYTES`, ``sealed`` exactly
:data:`~anonmail.core.invite.SEALED_BYTES`, so every stored invitation has the same size.

Every parser here is strict: exactly the documented fields, the documented types and sizes,
else :class:`~anonmail.errors.ProtocolError` with ``reason="malformed"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from anonmail.core.invite import NAMEPLATE_MAX, PAKE_BYTES, SEALED_BYTES
from anonmail.core.mailproto import b64d, b64e, require_fields
from anonmail.errors import ProtocolError

__all__ = [
    "TOKEN_BYTES",
    "SLOTS",
    "OUTCOMES",
    "STATES",
    "REQUEST_TYPES",
    "OpenRequest",
    "JoinRequest",
    "PutRequest",
    "GetRequest",
    "CloseRequest",
    "Request",
    "Opened",
    "Joined",
    "InviteState",
    "parse_request",
    "parse_opened",
    "parse_joined",
    "parse_state",
]

TOKEN_BYTES = 16
#: What a side may put: its SPAKE2 message, then its sealed introduction.
SLOTS = {"pake": PAKE_BYTES, "sealed": SEALED_BYTES}
OUTCOMES = ("done", "mismatch")
#: ``open``: nobody joined yet; ``joined``: the acceptor came; ``failed``: a side saw a mismatch.
STATES = ("open", "joined", "failed")
REQUEST_TYPES = ("invite_open", "invite_join", "invite_put", "invite_get", "invite_close")


def _nameplate(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= NAMEPLATE_MAX:
        raise ProtocolError(f"nameplate must be an integer 1..{NAMEPLATE_MAX}", reason="malformed")
    return value


def _seconds(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 86400:
        raise ProtocolError("expires_in must be an integer number of seconds", reason="malformed")
    return value


def _optional(value: object, what: str, size: int) -> bytes | None:
    return None if value is None else b64d(value, what, size)


@dataclass(frozen=True)
class OpenRequest:
    """The inviter asks for a nameplate (needs a logged-in session)."""

    def to_message(self) -> dict[str, Any]:
        """The CONTROL message."""
        return {"type": "invite_open"}


@dataclass(frozen=True)
class JoinRequest:
    """The acceptor claims a nameplate with its SPAKE2 message (one join per nameplate)."""

    nameplate: int
    pake: bytes

    def to_message(self) -> dict[str, Any]:
        """The CONTROL message."""
        return {"type": "invite_join", "nameplate": self.nameplate, "pake": b64e(self.pake)}


@dataclass(frozen=True)
class PutRequest:
    """A side leaves its SPAKE2 message or sealed introduction (each once)."""

    nameplate: int
    token: bytes
    slot: str
    data: bytes

    def to_message(self) -> dict[str, Any]:
        """The CONTROL message."""
        return {"type": "invite_put", "nameplate": self.nameplate, "token": b64e(self.token), "slot": self.slot,
                "data": b64e(self.data)}


@dataclass(frozen=True)
class GetRequest:
    """A side asks what its peer left, and the invitation's state."""

    nameplate: int
    token: bytes

    def to_message(self) -> dict[str, Any]:
        """The CONTROL message."""
        return {"type": "invite_get", "nameplate": self.nameplate, "token": b64e(self.token)}


@dataclass(frozen=True)
class CloseRequest:
    """A side is finished: ``done``, or ``mismatch`` (which fails the invitation for both)."""

    nameplate: int
    token: bytes
    outcome: str

    def to_message(self) -> dict[str, Any]:
        """The CONTROL message."""
        return {"type": "invite_close", "nameplate": self.nameplate, "token": b64e(self.token),
                "outcome": self.outcome}


Request = Union[OpenRequest, JoinRequest, PutRequest, GetRequest, CloseRequest]


def parse_request(message: dict[str, Any]) -> Request:
    """A rendezvous request from a CONTROL message; ProtocolError(malformed) if it breaks the rules."""
    kind = message.get("type")
    if kind == "invite_open":
        require_fields(message, [])
        return OpenRequest()
    if kind == "invite_join":
        require_fields(message, ["nameplate", "pake"])
        return JoinRequest(_nameplate(message["nameplate"]), b64d(message["pake"], "pake", PAKE_BYTES))
    if kind == "invite_put":
        require_fields(message, ["nameplate", "token", "slot", "data"])
        slot = message["slot"]
        if not isinstance(slot, str) or slot not in SLOTS:
            raise ProtocolError(f"slot must be one of {', '.join(SLOTS)}", reason="malformed")
        return PutRequest(_nameplate(message["nameplate"]), b64d(message["token"], "token", TOKEN_BYTES), slot,
                          b64d(message["data"], slot, SLOTS[slot]))
    if kind == "invite_get":
        require_fields(message, ["nameplate", "token"])
        return GetRequest(_nameplate(message["nameplate"]), b64d(message["token"], "token", TOKEN_BYTES))
    if kind == "invite_close":
        require_fields(message, ["nameplate", "token", "outcome"])
        outcome = message["outcome"]
        if not isinstance(outcome, str) or outcome not in OUTCOMES:
            raise ProtocolError(f"outcome must be one of {', '.join(OUTCOMES)}", reason="malformed")
        return CloseRequest(_nameplate(message["nameplate"]), b64d(message["token"], "token", TOKEN_BYTES), outcome)
    raise ProtocolError(f"not a rendezvous request: {kind!r}", reason="malformed")


@dataclass(frozen=True)
class Opened:
    """The provider's answer to ``invite_open``."""

    nameplate: int
    token: bytes
    expires_in: int

    def to_message(self) -> dict[str, Any]:
        """The CONTROL message."""
        return {"type": "invite_opened", "nameplate": self.nameplate, "token": b64e(self.token),
                "expires_in": self.expires_in}


@dataclass(frozen=True)
class Joined:
    """The provider's answer to ``invite_join``: our token and the inviter's SPAKE2 message."""

    token: bytes
    pake: bytes
    expires_in: int

    def to_message(self) -> dict[str, Any]:
        """The CONTROL message."""
        return {"type": "invite_joined", "token": b64e(self.token), "pake": b64e(self.pake),
                "expires_in": self.expires_in}


@dataclass(frozen=True)
class InviteState:
    """The provider's answer to ``invite_get``: the state and what the peer left so far."""

    state: str
    pake: bytes | None
    sealed: bytes | None

    def to_message(self) -> dict[str, Any]:
        """The CONTROL message."""
        return {"type": "invite_state", "state": self.state, "pake": None if self.pake is None else b64e(self.pake),
                "sealed": None if self.sealed is None else b64e(self.sealed)}


def parse_opened(message: dict[str, Any]) -> Opened:
    """Check an ``invite_opened`` answer; ProtocolError(malformed) if it is not one."""
    require_fields(message, ["nameplate", "token", "expires_in"])
    return Opened(_nameplate(message["nameplate"]), b64d(message["token"], "token", TOKEN_BYTES),
                  _seconds(message["expires_in"]))


def parse_joined(message: dict[str, Any]) -> Joined:
    """Check an ``invite_joined`` answer; ProtocolError(malformed) if it is not one."""
    require_fields(message, ["token", "pake", "expires_in"])
    return Joined(b64d(message["token"], "token", TOKEN_BYTES), b64d(message["pake"], "pake", PAKE_BYTES),
                  _seconds(message["expires_in"]))


def parse_state(message: dict[str, Any]) -> InviteState:
    """Check an ``invite_state`` answer; ProtocolError(malformed) if it is not one."""
    require_fields(message, ["state", "pake", "sealed"])
    state = message["state"]
    if not isinstance(state, str) or state not in STATES:
        raise ProtocolError(f"state must be one of {', '.join(STATES)}", reason="malformed")
    return InviteState(state, _optional(message["pake"], "pake", PAKE_BYTES),
                       _optional(message["sealed"], "sealed", SEALED_BYTES))
