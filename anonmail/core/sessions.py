"""The end-to-end sessions with one correspondent: which one sends, which one opens, and the framing (sans-IO).

Every message between two users (mail, key announcements) is encrypted as a whole, before it is
split into fragments, by a Double Ratchet session (:mod:`anonmail.core.ratchet`) started with
the prekey agreement of :mod:`anonmail.core.prekeys`::

    0x02 | kind u8 | session id 16 | initial header (kind 0x01 only) | ratchet message

Kind 0x01 (*prekey message*) is what the initiator sends until the peer has answered on the
session (so whichever of its messages arrives first starts the session at the peer, and the
others find it); kind 0x02 (*session message*) is every other. The session id is the BLAKE2b-128
hash of the initial header, the same at both ends. The ratchet binds the kind, the session id and
the caller's associated data (the message id), and the two identity keys.

Both users may start a session at once, each on the other's bundle. Each keeps every session
that opened (at most :data:`MAX_SESSIONS`; the lowest ranked goes first) so a message sent on any
of them opens, and both send on the same one: the highest by *rank* = (generation, started by the
user whose identity key sorts lower, session id), which both ends compute alike. The generation is
one more than the highest the initiator already held with the peer.

:meth:`PeerSessions.to_bytes` / :meth:`PeerSessions.from_bytes` carry the sessions to the store::

    b"AMSES1" | my identity 32 | peer identity 32 | count u8
    | (session id 16 | initiator 32 | generation u32 | initial length u16 | initial | ratchet length u32 | ratchet) ...
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from anonmail.core.fragments import MAX_MESSAGE_BYTES
from anonmail.core.keys import IdentityKey
from anonmail.core.prekeys import INITIAL_HEADER_BYTES, InitialHeader, PrekeyBundle, initiate, respond
from anonmail.core.ratchet import HEADER_BYTES, TAG_BYTES, Ratchet
from anonmail.errors import SessionError

__all__ = [
    "MAX_SESSIONS",
    "KIND_PREKEY",
    "KIND_SESSION",
    "SESSION_OVERHEAD",
    "MAX_OVERHEAD",
    "MAX_ENVELOPE_BYTES",
    "PrekeySecrets",
    "Session",
    "Opened",
    "PeerSessions",
    "session_id",
    "message_kind",
]

RandomBytes = Callable[[int], bytes]

#: Sessions kept per correspondent.
MAX_SESSIONS = 4
KIND_PREKEY = 0x01
KIND_SESSION = 0x02
_VERSION = 0x02
_FRAME = struct.Struct(">BB16s")
_SID_BYTES = 16
#: Bytes a session message adds to its plaintext.
SESSION_OVERHEAD = _FRAME.size + HEADER_BYTES + TAG_BYTES
#: Bytes the largest (prekey) message adds to its plaintext.
MAX_OVERHEAD = SESSION_OVERHEAD + INITIAL_HEADER_BYTES
#: Largest message (envelope) a session encrypts: its encrypted form still fits MAX_MESSAGE_BYTES.
MAX_ENVELOPE_BYTES = MAX_MESSAGE_BYTES - MAX_OVERHEAD
_MAGIC = b"AMSES1"
_STATE = struct.Struct(">6s32s32sB")
_ENTRY = struct.Struct(">16s32sIH")
_LEN = struct.Struct(">I")


class PrekeySecrets(Protocol):
    """Where the responder finds the secrets of its prekeys (None: no longer held)."""

    def signed_secret(self, key_id: int) -> bytes | None:
        """The X25519 secret of a signed prekey."""

    def pq_secret(self, key_id: int) -> bytes | None:
        """The ML-KEM-768 seed of a signed PQ prekey."""

    def one_time_secret(self, key_id: int) -> bytes | None:
        """The X25519 secret of a one-time prekey not yet used."""


def session_id(initial_header: bytes) -> bytes:
    """The id both ends give the session an initial header starts."""
    return hashlib.blake2b(initial_header, digest_size=_SID_BYTES, person=b"anonmail-sid-v1").digest()


def message_kind(data: bytes) -> int:
    """KIND_PREKEY or KIND_SESSION of a message; SessionError(malformed) if it is neither."""
    if len(data) < _FRAME.size + HEADER_BYTES + TAG_BYTES:
        raise SessionError(f"an end-to-end message needs at least {SESSION_OVERHEAD} bytes, got {len(data)}")
    version, kind, _sid = _FRAME.unpack_from(data)
    if version != _VERSION or kind not in (KIND_PREKEY, KIND_SESSION):
        raise SessionError(f"unknown end-to-end message version {version} or kind {kind}")
    if kind == KIND_PREKEY and len(data) < SESSION_OVERHEAD + INITIAL_HEADER_BYTES:
        raise SessionError("a prekey message is too short for its initial header")
    return kind


@dataclass
class Session:
    """One ratchet session with the peer and what ranks it."""

    session_id: bytes
    ratchet: Ratchet
    initiator: bytes
    generation: int
    #: Our initial header, sent in front of every message until the peer answers (initiator only).
    initial: bytes | None = None


@dataclass(frozen=True)
class Opened:
    """A decrypted message, the session it came on, and the one-time prekey it used up (if it started one)."""

    plaintext: bytes
    session_id: bytes
    started: bool = False
    used_one_time: int | None = None


@dataclass
class PeerSessions:
    """Every session with one correspondent (``me`` and ``peer`` are the two identity public keys)."""

    me: bytes
    peer: bytes
    sessions: list[Session] = field(default_factory=list)

    def _rank(self, s: Session) -> tuple[int, bool, bytes]:
        return (s.generation, s.initiator == min(self.me, self.peer), s.session_id)

    def sending(self) -> Session | None:
        """The session to send on (highest rank among those that can send), or None."""
        ready = [s for s in self.sessions if s.ratchet.can_send]
        return max(ready, key=self._rank) if ready else None

    def find(self, sid: bytes) -> Session | None:
        """The session with this id, if we hold it."""
        return next((s for s in self.sessions if s.session_id == sid), None)

    def _add(self, session: Session) -> None:
        self.sessions.append(session)
        self.sessions.sort(key=self._rank, reverse=True)
        del self.sessions[MAX_SESSIONS:]

    def start(self, identity: IdentityKey, bundle: PrekeyBundle, *, randbytes: RandomBytes = os.urandom) -> Session:
        """Start a session as initiator on the peer's (verified) bundle; it sends at once."""
        if identity.public != self.me or bundle.identity != self.peer:
            raise ValueError("the identity or the bundle does not belong to these sessions")
        generation = 1 + max((s.generation for s in self.sessions), default=0)
        header, agreement = initiate(identity, bundle, generation=generation, randbytes=randbytes)
        raw = header.to_bytes()
        ratchet = Ratchet.initiator(agreement.shared, bundle.signed.public, agreement.ad, randbytes)
        session = Session(session_id(raw), ratchet, self.me, generation, raw)
        self._add(session)
        return session

    def encrypt(self, plaintext: bytes, ad: bytes = b"", *, randbytes: RandomBytes = os.urandom) -> bytes:
        """Encrypt one message on the sending session; SessionError(no_session) if there is none."""
        session = self.sending()
        if session is None:
            raise SessionError("no session with this correspondent can send yet", reason="no_session")
        kind = KIND_PREKEY if session.initial is not None else KIND_SESSION
        frame = _FRAME.pack(_VERSION, kind, session.session_id)
        body = session.ratchet.encrypt(plaintext, frame + ad, randbytes)
        return frame + (session.initial or b"") + body

    def decrypt(self, identity: IdentityKey, data: bytes, ad: bytes = b"", *, now: int, prekeys: PrekeySecrets,
                randbytes: RandomBytes = os.urandom) -> Opened:
        """Open a message from the peer; the sessions change only if it opens (SessionError otherwise)."""
        kind = message_kind(data)
        frame = data[: _FRAME.size]
        sid = frame[2:]
        body = data[_FRAME.size :]
        if kind == KIND_PREKEY:
            raw, body = body[:INITIAL_HEADER_BYTES], body[INITIAL_HEADER_BYTES:]
            if session_id(raw) != sid:
                raise SessionError("a prekey message's session id does not match its initial header")
        session = self.find(sid)
        if session is not None:
            plaintext = session.ratchet.decrypt(body, frame + ad, now=now, randbytes=randbytes)
            if kind == KIND_SESSION and session.initial is not None:
                session.initial = None  # the peer answered: our prekey header is no longer needed
            return Opened(plaintext, sid)
        if kind == KIND_SESSION:
            raise SessionError("a message on a session we do not hold", reason="no_session")
        header = InitialHeader.from_bytes(raw)
        if header.identity != self.peer:
            raise SessionError("a prekey message from another identity than its sender's", reason="auth")
        signed = prekeys.signed_secret(header.signed_id)
        pq = prekeys.pq_secret(header.pq_id)
        one_time = prekeys.one_time_secret(header.one_time_id) if header.one_time_id is not None else None
        if signed is None or pq is None or (header.one_time_id is not None and one_time is None):
            raise SessionError("a prekey message names a prekey we no longer hold", reason="unknown_prekey")
        agreement = respond(identity, header, signed_secret=signed, pq_secret=pq, one_time_secret=one_time)
        ratchet = Ratchet.responder(agreement.shared, signed, agreement.ad)
        plaintext = ratchet.decrypt(body, frame + ad, now=now, randbytes=randbytes)
        self._add(Session(sid, ratchet, self.peer, header.generation))
        return Opened(plaintext, sid, started=True, used_one_time=header.one_time_id)

    # ------------------------------------------------------------------ storage

    def to_bytes(self) -> bytes:
        """The sessions as bytes, for the store (seal them)."""
        parts = [_STATE.pack(_MAGIC, self.me, self.peer, len(self.sessions))]
        for s in self.sessions:
            initial = s.initial or b""
            ratchet = s.ratchet.to_bytes()
            parts += [_ENTRY.pack(s.session_id, s.initiator, s.generation, len(initial)), initial,
                      _LEN.pack(len(ratchet)), ratchet]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> PeerSessions:
        """Parse :meth:`to_bytes`; SessionError(malformed) naming what is wrong."""
        if len(data) < _STATE.size:
            raise SessionError("stored sessions are truncated")
        magic, me, peer, count = _STATE.unpack_from(data)
        if magic != _MAGIC or count > MAX_SESSIONS:
            raise SessionError("not stored sessions (bad magic or count)")
        offset = _STATE.size
        sessions = []
        for _ in range(count):
            if len(data) < offset + _ENTRY.size:
                raise SessionError("stored sessions are truncated")
            sid, initiator, generation, initial_len = _ENTRY.unpack_from(data, offset)
            offset += _ENTRY.size
            if initial_len not in (0, INITIAL_HEADER_BYTES) or initiator not in (me, peer):
                raise SessionError("a stored session's initial header or initiator is malformed")
            initial = data[offset : offset + initial_len] or None
            offset += initial_len
            if len(data) < offset + _LEN.size:
                raise SessionError("stored sessions are truncated")
            (length,) = _LEN.unpack_from(data, offset)
            offset += _LEN.size
            ratchet = Ratchet.from_bytes(data[offset : offset + length])
            offset += length
            sessions.append(Session(sid, ratchet, initiator, generation, initial))
        if offset != len(data):
            raise SessionError("stored sessions have trailing bytes")
        return cls(me, peer, sessions)
