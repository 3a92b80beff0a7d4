"""The directory protocol: requests to the authorities and their replies (sans-IO).

Nodes, agents and authorities talk to an authority over one stream of wire frames
(:mod:`anonmail.core.wire`), one request per connection::

    client (any role)                          authority
      HELLO(role)                 ──▶
                                  ◀──  HELLO(role=AUTHORITY)
      CONTROL <request>           ──▶
                                  ◀──  CONTROL <reply> | {"type": "error", "reason", "message"}

    upload_descriptor {descriptor}        -> accepted {epoch}
    get_consensus {epoch}                 -> consensus {epoch, document, signatures{id: b64}}
    get_descriptors {epoch, before?}      -> descriptors {epoch, descriptors[]}
    get_signature {epoch, digest (hex)}   -> signature {epoch, digest, signature}
    get_vote {epoch, point}               -> vote {vote}            (authorities, phase 1)
    get_votes {epoch, point}              -> votes {votes[]}        (authorities, phase 2)

This module turns those CONTROL objects into frozen dataclasses and back. Parsing is strict:
exactly the documented fields, each of the documented type, else
:class:`~anonmail.errors.DirectoryError` with a stable ``reason`` (``unknown_request`` or
``bad_request`` for a request, ``bad_reply`` for a reply). Descriptors and documents stay JSON
objects here: :mod:`anonmail.core.pki` parses and verifies them. An ``error`` reply parses to
:class:`Refused`, whose ``reason`` is the authority's (``stale``, ``too_late``, ``not_ready``, …).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from anonmail.errors import DirectoryError

__all__ = [
    "UploadDescriptor",
    "GetConsensus",
    "GetDescriptors",
    "GetSignature",
    "GetVote",
    "GetVotes",
    "Request",
    "Accepted",
    "ConsensusReply",
    "DescriptorsReply",
    "SignatureReply",
    "VoteReply",
    "VotesReply",
    "Refused",
    "Reply",
    "encode",
    "parse_request",
    "parse_reply",
]

_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
#: Longest error message kept from a peer (the rest is cut).
MAX_MESSAGE_CHARS = 500


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class UploadDescriptor:
    """A node offers its signed descriptor (a JSON object, verified by the authority)."""

    descriptor: Mapping[str, Any]
    TYPE = "upload_descriptor"


@dataclass(frozen=True)
class GetConsensus:
    """Ask for an epoch's document with every signature the authority holds over it."""

    epoch: int
    TYPE = "get_consensus"


@dataclass(frozen=True)
class GetDescriptors:
    """Ask for the descriptors of an epoch the authority learned before ``before`` (all if None)."""

    epoch: int
    before: float | None = None
    TYPE = "get_descriptors"


@dataclass(frozen=True)
class GetSignature:
    """Ask a peer authority for its signature over the document with this hex digest."""

    epoch: int
    digest: str
    TYPE = "get_signature"


@dataclass(frozen=True)
class GetVote:
    """Ask a peer authority for its own signed vote at one build point."""

    epoch: int
    point: int
    TYPE = "get_vote"


@dataclass(frozen=True)
class GetVotes:
    """Ask a peer authority for the votes it fetched directly at one build point (frozen)."""

    epoch: int
    point: int
    TYPE = "get_votes"


Request = Union[UploadDescriptor, GetConsensus, GetDescriptors, GetSignature, GetVote, GetVotes]


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Accepted:
    """The descriptor is stored for ``epoch``."""

    epoch: int
    TYPE = "accepted"


@dataclass(frozen=True)
class ConsensusReply:
    """An epoch's document and the signatures (authority id -> base64) the authority holds."""

    epoch: int
    document: Mapping[str, Any]
    signatures: Mapping[str, str]
    TYPE = "consensus"


@dataclass(frozen=True)
class DescriptorsReply:
    """The descriptors (JSON objects, unverified) an authority holds for an epoch."""

    epoch: int
    descriptors: tuple[Mapping[str, Any], ...]
    TYPE = "descriptors"


@dataclass(frozen=True)
class SignatureReply:
    """A peer's base64 signature over the document with ``digest``."""

    epoch: int
    digest: str
    signature: str
    TYPE = "signature"


@dataclass(frozen=True)
class Refused:
    """The authority refused the request; ``reason`` is stable, ``message`` for people."""

    reason: str
    message: str
    TYPE = "error"


@dataclass(frozen=True)
class VoteReply:
    """A peer's signed vote (a JSON object, verified by the asker)."""

    vote: Mapping[str, Any]
    TYPE = "vote"


@dataclass(frozen=True)
class VotesReply:
    """The signed votes a peer fetched directly (JSON objects, verified by the asker)."""

    votes: tuple[Mapping[str, Any], ...]
    TYPE = "votes"


Reply = Union[Accepted, ConsensusReply, DescriptorsReply, SignatureReply, VoteReply, VotesReply, Refused]
R = TypeVar("R", Accepted, ConsensusReply, DescriptorsReply, SignatureReply, VoteReply, VotesReply)

_REQUESTS: dict[str, type] = {
    c.TYPE: c for c in (UploadDescriptor, GetConsensus, GetDescriptors, GetSignature, GetVote, GetVotes)
}
_REPLIES: dict[str, type] = {
    c.TYPE: c for c in (Accepted, ConsensusReply, DescriptorsReply, SignatureReply, VoteReply, VotesReply, Refused)
}


def encode(message: Request | Reply) -> dict[str, Any]:
    """The CONTROL object for a request or reply (``before`` only when set)."""
    if isinstance(message, UploadDescriptor):
        return {"type": message.TYPE, "descriptor": dict(message.descriptor)}
    if isinstance(message, (GetConsensus, Accepted)):
        return {"type": message.TYPE, "epoch": message.epoch}
    if isinstance(message, GetDescriptors):
        out: dict[str, Any] = {"type": message.TYPE, "epoch": message.epoch}
        if message.before is not None:
            out["before"] = message.before
        return out
    if isinstance(message, GetSignature):
        return {"type": message.TYPE, "epoch": message.epoch, "digest": message.digest}
    if isinstance(message, ConsensusReply):
        return {"type": message.TYPE, "epoch": message.epoch, "document": dict(message.document),
                "signatures": dict(message.signatures)}
    if isinstance(message, DescriptorsReply):
        return {"type": message.TYPE, "epoch": message.epoch, "descriptors": [dict(d) for d in message.descriptors]}
    if isinstance(message, SignatureReply):
        return {"type": message.TYPE, "epoch": message.epoch, "digest": message.digest, "signature": message.signature}
    if isinstance(message, (GetVote, GetVotes)):
        return {"type": message.TYPE, "epoch": message.epoch, "point": message.point}
    if isinstance(message, VoteReply):
        return {"type": message.TYPE, "vote": dict(message.vote)}
    if isinstance(message, VotesReply):
        return {"type": message.TYPE, "votes": [dict(v) for v in message.votes]}
    if isinstance(message, Refused):
        return {"type": message.TYPE, "reason": message.reason, "message": message.message}
    raise TypeError(f"not a directory message: {type(message).__name__}")


# --------------------------------------------------------------------------- parsing


class _Fields:
    """Typed access to one message's fields; every problem is a DirectoryError with ``reason``."""

    def __init__(self, message: Mapping[str, Any], allowed: set[str], reason: str) -> None:
        self.message, self.reason = message, reason
        self.kind = message.get("type")
        extra = sorted(set(message) - allowed - {"type"})
        if extra:
            raise self.error(f"unexpected fields {extra}")

    def error(self, why: str) -> DirectoryError:
        return DirectoryError(f"{self.kind!r} {why}", reason=self.reason)

    def epoch(self) -> int:
        value = self.message.get("epoch")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.error("needs 'epoch', a non-negative integer")
        return value

    def point(self) -> int:
        value = self.message.get("point")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.error("needs 'point', a non-negative integer")
        return value

    def text(self, key: str, pattern: re.Pattern[str] | None = None) -> str:
        value = self.message.get(key)
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            raise self.error(f"needs {key!r}, a string" + (" of the documented form" if pattern else ""))
        return value

    def obj(self, key: str) -> Mapping[str, Any]:
        value = self.message.get(key)
        if not isinstance(value, Mapping):
            raise self.error(f"needs {key!r}, a JSON object")
        return value


def parse_request(message: object) -> Request:
    """A request from a CONTROL object; DirectoryError(``unknown_request`` | ``bad_request``)."""
    if not isinstance(message, Mapping):
        raise DirectoryError("a request must be a JSON object", reason="bad_request")
    kind = message.get("type")
    cls = _REQUESTS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise DirectoryError(f"unknown request type {message.get('type')!r}", reason="unknown_request")
    if cls is UploadDescriptor:
        fields = _Fields(message, {"descriptor"}, "bad_request")
        return UploadDescriptor(fields.obj("descriptor"))
    if cls is GetConsensus:
        return GetConsensus(_Fields(message, {"epoch"}, "bad_request").epoch())
    if cls is GetDescriptors:
        fields = _Fields(message, {"epoch", "before"}, "bad_request")
        before = message.get("before")
        if before is not None and (not isinstance(before, (int, float)) or isinstance(before, bool)
                                   or not math.isfinite(before)):
            raise fields.error("'before' must be a number")
        return GetDescriptors(fields.epoch(), before)
    if cls in (GetVote, GetVotes):
        fields = _Fields(message, {"epoch", "point"}, "bad_request")
        return cls(fields.epoch(), fields.point())  # type: ignore[no-any-return]
    fields = _Fields(message, {"epoch", "digest"}, "bad_request")
    return GetSignature(fields.epoch(), fields.text("digest", _HEX_DIGEST))


def parse_reply(message: object, expect: type[R]) -> R | Refused:
    """The reply of the ``expect`` type, or a Refused; DirectoryError(reason='bad_reply') otherwise."""
    if not isinstance(message, Mapping):
        raise DirectoryError("a reply must be a JSON object", reason="bad_reply")
    kind = message.get("type")
    if kind == Refused.TYPE:
        fields = _Fields(message, {"reason", "message"}, "bad_reply")
        return Refused(fields.text("reason", _REASON), fields.text("message")[:MAX_MESSAGE_CHARS])
    if not isinstance(kind, str) or _REPLIES.get(kind) is not expect:
        raise DirectoryError(f"expected a {expect.TYPE!r} reply, got {kind!r}", reason="bad_reply")
    if expect is Accepted:
        return Accepted(_Fields(message, {"epoch"}, "bad_reply").epoch())  # type: ignore[return-value]
    if expect is ConsensusReply:
        fields = _Fields(message, {"epoch", "document", "signatures"}, "bad_reply")
        signatures = fields.obj("signatures")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in signatures.items()):
            raise fields.error("'signatures' must map authority ids to base64 strings")
        return ConsensusReply(fields.epoch(), fields.obj("document"), dict(signatures))  # type: ignore[return-value]
    if expect is DescriptorsReply:
        fields = _Fields(message, {"epoch", "descriptors"}, "bad_reply")
        items = message.get("descriptors")
        if not isinstance(items, list) or not all(isinstance(d, Mapping) for d in items):
            raise fields.error("'descriptors' must be a list of JSON objects")
        return DescriptorsReply(fields.epoch(), tuple(items))  # type: ignore[return-value]
    if expect is VoteReply:
        return VoteReply(_Fields(message, {"vote"}, "bad_reply").obj("vote"))  # type: ignore[return-value]
    if expect is VotesReply:
        fields = _Fields(message, {"votes"}, "bad_reply")
        items = message.get("votes")
        if not isinstance(items, list) or not all(isinstance(v, Mapping) for v in items):
            raise fields.error("'votes' must be a list of JSON objects")
        return VotesReply(tuple(items))  # type: ignore[return-value]
    fields = _Fields(message, {"epoch", "digest", "signature"}, "bad_reply")
    return SignatureReply(fields.epoch(), fields.text("digest", _HEX_DIGEST), fields.text("signature"))  # type: ignore[return-value]
