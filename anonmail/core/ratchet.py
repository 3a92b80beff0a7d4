"""The Double Ratchet: one end of an end-to-end session, a fresh key per message (sans-IO).

This is Signal's Double Ratchet (Perrin and Marlinspike, revision 1, 2016), written on libsodium
(through PyNaCl) and HKDF from ``cryptography``. Why our own and not the ``doubleratchet`` package:
docs/design.md, "End-to-end sessions". Primitives::

    DH        X25519
    KDF_RK    HKDF-SHA-256(salt = root key, ikm = DH output, info = "anonmail-ratchet-root-v1") -> root key | chain key
    KDF_CK    message key = HMAC-SHA-256(chain key, 0x01), next chain key = HMAC-SHA-256(chain key, 0x02)
    AEAD      XChaCha20-Poly1305; key | nonce = HKDF-SHA-256(message key, info = "anonmail-ratchet-msg-v1")
              (each message key encrypts exactly one message, so a derived nonce is safe)

A ratchet message is :data:`HEADER_BYTES` of header and the AEAD ciphertext (:data:`TAG_BYTES` longer
than the plaintext)::

    ratchet public key (32) | previous sending chain length (u32 BE) | message number (u32 BE) | ciphertext

The associated data of every message is the session's (both identity keys, fixed when the session
starts) | the header | what the caller binds (the message id). Nothing is signed: whoever holds
the session state can compute every message of both chains, so a transcript proves nothing to a
third party (deniability), while a message that opens can only come from the peer or from us.

The mixnet delivers out of order, twice, or late. A message ahead of its chain stores the keys it
skips, at most :data:`MAX_SKIP` per chain step and :data:`MAX_SKIPPED` in all (the oldest go first),
each dropped :data:`SKIPPED_TTL` seconds after it was stored. A message whose key was used or
dropped fails with :class:`~anonmail.errors.SessionError` (``duplicate``) and changes nothing: every
failed :meth:`Ratchet.decrypt` leaves the state as it was. Keys are forgotten as soon as they are
used (forward secrecy); a new DH ratchet step on each round trip heals a copied state
(post-compromise security).

:meth:`Ratchet.to_bytes` / :meth:`Ratchet.from_bytes` carry the state to the agent's store (sealed
there; see :mod:`anonmail.agent.sessions`)::

    b"AMRAT1" | flags u8 | root 32 | our secret 32 | our public 32 | their public 32 | sending chain 32
    | receiving chain 32 | ns u32 | nr u32 | pn u32 | ad length u16 | ad | skipped count u32
    | skipped (their public 32 | n u32 | message key 32 | stored at u64) ...
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from anonmail.core.keys import check_x25519_public
from anonmail.errors import SessionError

__all__ = [
    "HEADER_BYTES",
    "TAG_BYTES",
    "MAX_SKIP",
    "MAX_SKIPPED",
    "SKIPPED_TTL",
    "Header",
    "Ratchet",
    "parse_header",
    "kdf_chain",
    "seal",
    "x25519_keypair",
]

RandomBytes = Callable[[int], bytes]

#: Bytes of a ratchet header.
HEADER_BYTES = 40
#: Bytes the AEAD adds to a plaintext.
TAG_BYTES = 16
#: Most message keys one message may make us skip in one chain (a gap larger than this is refused).
MAX_SKIP = 1000
#: Most skipped message keys kept per session (the oldest are dropped first).
MAX_SKIPPED = 2000
#: Seconds a skipped message key is kept for a late message (the agent's incomplete-message window).
SKIPPED_TTL = 14 * 86400

_HEADER = struct.Struct(">32sII")
_ROOT_INFO = b"anonmail-ratchet-root-v1"
_MSG_INFO = b"anonmail-ratchet-msg-v1"
_MAGIC = b"AMRAT1"
_FIXED = struct.Struct(">6sB32s32s32s32s32s32sIIIH")
_SKIPPED = struct.Struct(">32sI32sQ")
_COUNT = struct.Struct(">I")
_U32 = 2**32 - 1
_FLAG_DHR, _FLAG_CKS, _FLAG_CKR = 1, 2, 4
_ZERO = bytes(32)


def x25519_keypair(randbytes: RandomBytes = os.urandom) -> tuple[bytes, bytes]:
    """A fresh X25519 (secret, public) pair from ``randbytes``."""
    secret = randbytes(32)
    return secret, nacl.bindings.crypto_scalarmult_base(secret)


def _dh(secret: bytes, public: bytes) -> bytes:
    try:
        return nacl.bindings.crypto_scalarmult(secret, public)
    except nacl.exceptions.RuntimeError:
        raise SessionError("a ratchet key is a point of small order", reason="malformed") from None


def _hkdf(salt: bytes | None, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _kdf_root(root: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    out = _hkdf(root, dh_out, _ROOT_INFO, 64)
    return out[:32], out[32:]


def kdf_chain(chain_key: bytes) -> tuple[bytes, bytes]:
    """One symmetric ratchet step: (next chain key, message key)."""
    return (hmac.new(chain_key, b"\x02", hashlib.sha256).digest(),
            hmac.new(chain_key, b"\x01", hashlib.sha256).digest())


def _aead_key(message_key: bytes) -> tuple[bytes, bytes]:
    out = _hkdf(None, message_key, _MSG_INFO, 56)
    return out[:32], out[32:]


def seal(message_key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """AEAD-encrypt ``plaintext`` under a message key, binding ``ad``."""
    key, nonce = _aead_key(message_key)
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def _open(message_key: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    key, nonce = _aead_key(message_key)
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    except nacl.exceptions.CryptoError:
        raise SessionError("a ratchet message does not decrypt (forged, damaged, or not for this session)",
                           reason="auth") from None


@dataclass(frozen=True, slots=True)
class Header:
    """The clear part of a ratchet message: the sender's ratchet key, its previous chain length, the number."""

    public: bytes
    pn: int
    n: int

    def to_bytes(self) -> bytes:
        """The :data:`HEADER_BYTES` wire form."""
        return _HEADER.pack(self.public, self.pn, self.n)


def parse_header(data: bytes, *, known: bytes | None = None) -> Header:
    """Read the header at the start of a ratchet message; SessionError(malformed) if it is not one.

    The ratchet key is checked (canonical, not of small order) unless it equals ``known``, a key already checked.
    """
    if len(data) < HEADER_BYTES + TAG_BYTES:
        raise SessionError(f"a ratchet message needs at least {HEADER_BYTES + TAG_BYTES} bytes, got {len(data)}")
    public, pn, n = _HEADER.unpack_from(data)
    if public != known:
        check_x25519_public(public, "ratchet public key", SessionError)
    return Header(public, pn, n)


@dataclass
class Ratchet:
    """One side of a Double Ratchet session; start it with :meth:`initiator` or :meth:`responder`."""

    root: bytes
    secret: bytes
    public: bytes
    ad: bytes
    their_public: bytes | None = None
    sending: bytes | None = None
    receiving: bytes | None = None
    ns: int = 0
    nr: int = 0
    pn: int = 0
    skipped: OrderedDict[tuple[bytes, int], tuple[bytes, int]] = field(default_factory=OrderedDict)

    # ------------------------------------------------------------------ start

    @classmethod
    def initiator(cls, shared: bytes, their_public: bytes, ad: bytes, randbytes: RandomBytes = os.urandom) -> Ratchet:
        """The side that ran the key agreement: it can send at once, to the peer's signed prekey."""
        check_x25519_public(their_public, "peer ratchet key", SessionError)
        secret, public = x25519_keypair(randbytes)
        root, sending = _kdf_root(shared, _dh(secret, their_public))
        return cls(root, secret, public, ad, their_public=their_public, sending=sending)

    @classmethod
    def responder(cls, shared: bytes, secret: bytes, ad: bytes) -> Ratchet:
        """The side whose prekey was used: its first ratchet key pair is that signed prekey."""
        return cls(shared, secret, nacl.bindings.crypto_scalarmult_base(secret), ad)

    def copy(self) -> Ratchet:
        """An independent copy (decrypt works on one and keeps it only on success)."""
        return Ratchet(self.root, self.secret, self.public, self.ad, self.their_public, self.sending, self.receiving,
                       self.ns, self.nr, self.pn, OrderedDict(self.skipped))

    @property
    def can_send(self) -> bool:
        """Whether a sending chain exists (a responder has one after its first received message)."""
        return self.sending is not None

    # ------------------------------------------------------------------ messages

    def encrypt(self, plaintext: bytes, ad: bytes = b"", randbytes: RandomBytes = os.urandom) -> bytes:
        """Encrypt one message (header | ciphertext) and move the sending chain on; its key is forgotten."""
        if self.sending is None:
            raise SessionError("this session cannot send before it has received a message", reason="no_session")
        if self.ns >= _U32:
            raise SessionError("this sending chain is exhausted; start a new session", reason="too_many_skipped")
        self.sending, key = kdf_chain(self.sending)
        header = Header(self.public, self.pn, self.ns).to_bytes()
        self.ns += 1
        return header + seal(key, plaintext, self.ad + header + ad)

    def decrypt(self, message: bytes, ad: bytes = b"", *, now: int, randbytes: RandomBytes = os.urandom) -> bytes:
        """Decrypt one message; the state changes only if it opens (SessionError otherwise)."""
        header = parse_header(message, known=self.their_public)
        raw_header, body = message[:HEADER_BYTES], message[HEADER_BYTES:]
        work = self.copy()
        work.expire(now)
        full_ad = self.ad + raw_header + ad
        stored = work.skipped.pop((header.public, header.n), None)
        if stored is not None:
            plaintext = _open(stored[0], body, full_ad)
        else:
            if header.public != work.their_public:
                if work.their_public is not None:
                    work._skip(header.pn, now)
                work._dh_step(header.public, randbytes)
            elif header.n < work.nr:
                raise SessionError("a ratchet message whose key was already used or has expired", reason="duplicate")
            work._skip(header.n, now)
            assert work.receiving is not None
            work.receiving, key = kdf_chain(work.receiving)
            work.nr += 1
            plaintext = _open(key, body, full_ad)
        self._take(work)
        return plaintext

    def _take(self, other: Ratchet) -> None:
        (self.root, self.secret, self.public, self.their_public, self.sending, self.receiving, self.ns, self.nr,
         self.pn, self.skipped) = (other.root, other.secret, other.public, other.their_public, other.sending,
                                   other.receiving, other.ns, other.nr, other.pn, other.skipped)

    def _skip(self, until: int, now: int) -> None:
        """Store the receiving chain's keys up to (not including) message ``until``."""
        if self.receiving is None:
            return
        if until - self.nr > MAX_SKIP:
            raise SessionError(f"a ratchet message would skip {until - self.nr} message keys (at most {MAX_SKIP})",
                               reason="too_many_skipped")
        assert self.their_public is not None
        while self.nr < until:
            self.receiving, key = kdf_chain(self.receiving)
            self.skipped[(self.their_public, self.nr)] = (key, int(now))
            self.nr += 1
        while len(self.skipped) > MAX_SKIPPED:
            self.skipped.popitem(last=False)

    def _dh_step(self, their_public: bytes, randbytes: RandomBytes) -> None:
        """A new ratchet key from the peer: new receiving chain, then a fresh key pair and sending chain."""
        self.pn, self.ns, self.nr = self.ns, 0, 0
        self.their_public = their_public
        self.root, self.receiving = _kdf_root(self.root, _dh(self.secret, their_public))
        self.secret, self.public = x25519_keypair(randbytes)
        self.root, self.sending = _kdf_root(self.root, _dh(self.secret, their_public))

    def expire(self, now: int) -> int:
        """Forget skipped message keys stored more than :data:`SKIPPED_TTL` seconds ago; how many went."""
        stale = [k for k, (_key, at) in self.skipped.items() if now - at > SKIPPED_TTL]
        for k in stale:
            del self.skipped[k]
        return len(stale)

    # ------------------------------------------------------------------ storage

    def to_bytes(self) -> bytes:
        """The state as bytes, for the store (seal them: they hold every key of the session)."""
        flags = ((_FLAG_DHR if self.their_public is not None else 0) | (_FLAG_CKS if self.sending is not None else 0)
                 | (_FLAG_CKR if self.receiving is not None else 0))
        parts = [_FIXED.pack(_MAGIC, flags, self.root, self.secret, self.public, self.their_public or _ZERO,
                             self.sending or _ZERO, self.receiving or _ZERO, self.ns, self.nr, self.pn, len(self.ad)),
                 self.ad, _COUNT.pack(len(self.skipped))]
        parts += [_SKIPPED.pack(dh, n, key, at) for (dh, n), (key, at) in self.skipped.items()]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Ratchet:
        """Parse :meth:`to_bytes`; SessionError(malformed) naming what is wrong."""
        if len(data) < _FIXED.size + _COUNT.size:
            raise SessionError(f"a stored ratchet state needs at least {_FIXED.size + _COUNT.size} bytes")
        (magic, flags, root, secret, public, theirs, sending, receiving, ns, nr, pn,
         ad_len) = _FIXED.unpack_from(data)
        if magic != _MAGIC or flags > 7:
            raise SessionError("not a stored ratchet state (bad magic or flags)")
        if public != nacl.bindings.crypto_scalarmult_base(secret):
            raise SessionError("a stored ratchet state's key pair does not match")
        offset = _FIXED.size
        ad = data[offset : offset + ad_len]
        offset += ad_len
        if len(ad) != ad_len or len(data) < offset + _COUNT.size:
            raise SessionError("a stored ratchet state is truncated")
        (count,) = _COUNT.unpack_from(data, offset)
        offset += _COUNT.size
        if count > MAX_SKIPPED or len(data) != offset + count * _SKIPPED.size:
            raise SessionError("a stored ratchet state has a wrong number of skipped keys")
        skipped: OrderedDict[tuple[bytes, int], tuple[bytes, int]] = OrderedDict()
        for i in range(count):
            dh, n, key, at = _SKIPPED.unpack_from(data, offset + i * _SKIPPED.size)
            skipped[(dh, n)] = (key, at)
        if flags & _FLAG_DHR:
            check_x25519_public(theirs, "stored peer ratchet key", SessionError)
        return cls(root, secret, public, bytes(ad), theirs if flags & _FLAG_DHR else None,
                   sending if flags & _FLAG_CKS else None, receiving if flags & _FLAG_CKR else None,
                   ns, nr, pn, skipped)
