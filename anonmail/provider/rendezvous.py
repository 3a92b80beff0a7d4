"""The provider's rendezvous for invitation codes: a small, bounded, in-memory table (sans-IO).

The messages are :mod:`anonmail.core.rendezvous`; the cryptography is :mod:`anonmail.core.invite`.
:meth:`RendezvousTable.handle` takes one parsed request, who asks (the logged-in account's
mailbox id, or None for a stranger) and the time, and returns the answer or raises
:class:`~anonmail.errors.ProtocolError` with a stable ``reason``.

**What it stores, per invitation:** the nameplate, its expiry, a keyed hash of the inviter's
account (to count its invitations; the key is random per process), keyed hashes of the two
sides' tokens, the two SPAKE2 messages (public group elements: without the code they say
nothing about the key) and the two sealed introductions (secretbox ciphertext of a fixed
size). Never an address, identity key or certificate in clear, never the code or the key.
Nothing reaches the disk: a restart ends every open invitation.

**Bounds** (a stranger must neither fill it nor enumerate it cheaply):

* only a logged-in user may open an invitation: at most :data:`MAX_PER_ACCOUNT` open per account
  and :data:`MAX_OPEN` in all (``too_many_invitations``, ``provider_busy``), and opens draw on
  a provider-wide token bucket;
* every invitation expires :data:`~anonmail.core.invite.CODE_TTL_S` after it opened; a nameplate
  that ended is not handed out again for as long, so an old code cannot meet a new invitation;
* each nameplate takes **one** join: the joiner's guess at the code is its only one;
* joins from anyone draw on a provider-wide token bucket (``busy`` when empty), hits and misses
  alike, so probing the 9999 nameplates takes hours while a code lives 10 minutes;
* each side may put its SPAKE2 message and its sealed introduction once, in that order.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from anonmail.core.invite import CODE_TTL_S, NAMEPLATE_MAX
from anonmail.core.rendezvous import (
    TOKEN_BYTES,
    CloseRequest,
    GetRequest,
    InviteState,
    Joined,
    JoinRequest,
    Opened,
    OpenRequest,
    PutRequest,
    Request,
)
from anonmail.errors import ProtocolError

__all__ = ["RendezvousTable", "MAX_OPEN", "MAX_PER_ACCOUNT", "MAX_BURNED", "JOIN_RATE", "JOIN_BURST",
           "OPEN_RATE", "OPEN_BURST"]

#: Invitations open at once at one provider.
MAX_OPEN = 256
#: Invitations open at once per account.
MAX_PER_ACCOUNT = 3
#: Ended nameplates remembered (for the code lifetime) so they are not handed out again.
MAX_BURNED = 4096
#: Joins per second, provider-wide, and the burst.
JOIN_RATE, JOIN_BURST = 0.5, 20
#: Opens per second, provider-wide, and the burst.
OPEN_RATE, OPEN_BURST = 1.0, 30

_INVITER, _ACCEPTOR = "inviter", "acceptor"


class Bucket(Protocol):
    """A token bucket (:class:`anonmail.provider.node.TokenBucket`)."""

    def take(self, now: float) -> bool: ...


@dataclass
class _Invitation:
    nameplate: int
    owner: bytes
    expires_at: float
    tokens: dict[str, bytes] = field(default_factory=dict)  # side -> keyed hash of its token
    pake: dict[str, bytes] = field(default_factory=dict)
    sealed: dict[str, bytes] = field(default_factory=dict)
    state: str = "open"
    closed: set[str] = field(default_factory=set)


class RendezvousTable:
    """Open invitations at one provider; every method takes the time (``now``, seconds)."""

    def __init__(self, *, join_bucket: Bucket, open_bucket: Bucket, ttl: float = CODE_TTL_S,
                 max_open: int = MAX_OPEN, max_per_account: int = MAX_PER_ACCOUNT,
                 randbelow: Callable[[int], int] = secrets.randbelow,
                 token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.ttl, self.max_open, self.max_per_account = ttl, max_open, max_per_account
        self._join_bucket, self._open_bucket = join_bucket, open_bucket
        self._randbelow, self._token_bytes = randbelow, token_bytes
        self._key = token_bytes(32)
        self._open: dict[int, _Invitation] = {}
        self._burned: OrderedDict[int, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def stored(self) -> list[dict[str, Any]]:
        """Everything held, field by field (what an operator, or a test, could read out)."""
        return [{"nameplate": i.nameplate, "owner": i.owner, "expires_at": i.expires_at, "tokens": dict(i.tokens),
                 "pake": dict(i.pake), "sealed": dict(i.sealed), "state": i.state, "closed": sorted(i.closed)}
                for i in self._open.values()]

    def _hash(self, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=self._key, digest_size=16).digest()

    def sweep(self, now: float) -> int:
        """Forget expired invitations (and ended nameplates past their quarantine); how many ended."""
        gone = [n for n, inv in self._open.items() if inv.expires_at <= now]
        for n in gone:
            self._end(n, now)
        while self._burned and next(iter(self._burned.values())) <= now:
            self._burned.popitem(last=False)
        return len(gone)

    def _end(self, nameplate: int, now: float) -> None:
        self._open.pop(nameplate, None)
        self._burned[nameplate] = now + self.ttl
        self._burned.move_to_end(nameplate)
        while len(self._burned) > MAX_BURNED:
            self._burned.popitem(last=False)

    def handle(self, request: Request, *, account: bytes | None, now: float) -> dict[str, Any]:
        """Answer one request (the CONTROL reply); ProtocolError with a stable reason if refused."""
        self.sweep(now)
        if isinstance(request, OpenRequest):
            return self._allocate(account, now).to_message()
        if isinstance(request, JoinRequest):
            return self._join(request, now).to_message()
        side, invitation = self._holder(request)
        if isinstance(request, PutRequest):
            self._put(invitation, side, request)
            return {"type": "ok"}
        if isinstance(request, GetRequest):
            peer = _ACCEPTOR if side == _INVITER else _INVITER
            return InviteState(invitation.state, invitation.pake.get(peer), invitation.sealed.get(peer)).to_message()
        assert isinstance(request, CloseRequest)
        invitation.closed.add(side)
        if request.outcome == "mismatch":
            invitation.state = "failed"
            invitation.sealed.clear()
        if side == _INVITER and invitation.state == "open" or invitation.closed == {_INVITER, _ACCEPTOR}:
            self._end(invitation.nameplate, now)
        return {"type": "ok"}

    def _allocate(self, account: bytes | None, now: float) -> Opened:
        if account is None:
            raise ProtocolError("opening an invitation needs a logged-in session", reason="not_authenticated")
        owner = self._hash(account)
        if sum(1 for i in self._open.values() if i.owner == owner) >= self.max_per_account:
            raise ProtocolError(f"at most {self.max_per_account} invitations may be open at once; finish one first",
                                reason="too_many_invitations")
        if len(self._open) >= self.max_open or not self._open_bucket.take(now):
            raise ProtocolError("this provider holds too many invitations; try again in a few minutes",
                                reason="provider_busy")
        for _ in range(64):
            nameplate = 1 + self._randbelow(NAMEPLATE_MAX)
            if nameplate not in self._open and nameplate not in self._burned:
                break
        else:
            raise ProtocolError("no free nameplate; try again in a few minutes", reason="provider_busy")
        token = self._token_bytes(TOKEN_BYTES)
        self._open[nameplate] = _Invitation(nameplate, owner, now + self.ttl, tokens={_INVITER: self._hash(token)})
        return Opened(nameplate, token, int(self.ttl))

    def _join(self, request: JoinRequest, now: float) -> Joined:
        if not self._join_bucket.take(now):
            raise ProtocolError("the rendezvous is busy; try again in a minute", reason="busy")
        invitation = self._open.get(request.nameplate)
        if invitation is None or invitation.state != "open" or _INVITER not in invitation.pake:
            raise ProtocolError("no open invitation has this number here: it expired, was used, or the number is "
                                "wrong; ask for a new invite", reason="no_invitation")
        token = self._token_bytes(TOKEN_BYTES)
        invitation.tokens[_ACCEPTOR] = self._hash(token)
        invitation.pake[_ACCEPTOR] = request.pake
        invitation.state = "joined"
        return Joined(token, invitation.pake[_INVITER], max(0, int(invitation.expires_at - now)))

    def _holder(self, request: PutRequest | GetRequest | CloseRequest) -> tuple[str, _Invitation]:
        invitation = self._open.get(request.nameplate)
        if invitation is not None:
            presented = self._hash(request.token)
            for side, held in invitation.tokens.items():
                if hmac.compare_digest(held, presented):
                    return side, invitation
        raise ProtocolError("no such invitation (it ended or expired)", reason="no_invitation")

    def _put(self, invitation: _Invitation, side: str, request: PutRequest) -> None:
        held = invitation.pake if request.slot == "pake" else invitation.sealed
        if side in held:
            raise ProtocolError(f"this side's {request.slot} is already here", reason="already_put")
        if request.slot == "sealed" and (invitation.state != "joined" or side not in invitation.pake):
            raise ProtocolError(f"a sealed introduction needs a joined invitation (it is {invitation.state})",
                                reason="wrong_state")
        held[side] = request.data
