"""Prekeys and the initial key agreement of a session: X3DH with an ML-KEM-768 hybrid, as PQXDH (sans-IO).

A user publishes through their provider a :class:`PrekeyUpload`: a *signed prekey* (X25519), a
*signed ML-KEM-768 prekey* (both signed by the identity key, each with its own lifetime) and a
batch of *one-time prekeys* (X25519, unsigned). The provider hands each sender who asks a
:class:`PrekeyBundle` with the two signed prekeys and one one-time prekey it then deletes (none
when the batch is used up; the agent refills it). The signatures cover keys, never a message.

The sender (A, "initiator") checks the bundle against the recipient's address and agrees::

    DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   DH4 = DH(EK_A, OPK_B) (if any)
    (CT, SS) = ML-KEM-768.Encaps(PQSPK_B)
    SK = HKDF-SHA-256(salt = 0^32, ikm = 0xFF^32 | DH1 | DH2 | DH3 [| DH4] | SS,
                      info = "anonmail-pqxdh-v1 X25519 SHA-256 ML-KEM-768")
    AD = IK_A | IK_B   (the Ed25519 identity keys; their X25519 forms come from the birational map)

An adversary must break both X25519 and ML-KEM-768 to learn SK from a recording; without DH4 the
first messages are as safe as the signed prekeys' lifetime (the reason one-time prekeys exist).
Nothing in the agreement is signed by A, so B holds no proof that A took part (deniability).

Wire forms (all integers big-endian; every parser here refuses anything else with
:class:`~anonmail.errors.SessionError`)::

    signed prekey      id u32 | not_after u64 | X25519 public 32 | signature 64
    signed PQ prekey   id u32 | not_after u64 | ML-KEM-768 encapsulation key 1184 | signature 64
    one-time prekey    id u32 | X25519 public 32
    bundle             0x01 | identity 32 | signed prekey | signed PQ prekey | 0x00, or 0x01 | one-time prekey
    upload             0x01 | identity 32 | signed prekey | signed PQ prekey | count u16 | one-time prekey ...
    initial header     0x01 | identity 32 | ephemeral 32 | spk id u32 | pq id u32 | has opk u8 | opk id u32
                       | generation u32 | ML-KEM ciphertext 1088

Signature of a prekey: ``identity.sign(kind | id | not_after | public, context="anonmail-prekey-v1")``
with kind 0x01 for X25519 and 0x02 for ML-KEM-768.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from anonmail.core.keys import IdentityKey, check_x25519_public, verify_signature
from anonmail.core.ratchet import x25519_keypair
from anonmail.errors import SessionError, SignatureError

__all__ = [
    "KEM_PUBLIC_BYTES",
    "KEM_CIPHERTEXT_BYTES",
    "INITIAL_HEADER_BYTES",
    "MAX_ONE_TIME_UPLOAD",
    "SignedPrekey",
    "OneTimePrekey",
    "PrekeyBundle",
    "PrekeyUpload",
    "InitialHeader",
    "Agreement",
    "identity_dh_public",
    "identity_dh_secret",
    "sign_prekey",
    "make_signed_prekey",
    "make_pq_prekey",
    "make_one_time_prekey",
    "kem_secret_from_bytes",
    "initiate",
    "respond",
]

RandomBytes = Callable[[int], bytes]

KEM_PUBLIC_BYTES = 1184
KEM_CIPHERTEXT_BYTES = 1088
#: One-time prekeys one upload may carry.
MAX_ONE_TIME_UPLOAD = 200

_VERSION = 1
_CONTEXT = b"anonmail-prekey-v1"
_KIND_X25519, _KIND_KEM = 1, 2
_INFO = b"anonmail-pqxdh-v1 X25519 SHA-256 ML-KEM-768"
_SPK = struct.Struct(">IQ32s64s")
_PQ = struct.Struct(f">IQ{KEM_PUBLIC_BYTES}s64s")
_OPK = struct.Struct(">I32s")
_HEAD = struct.Struct(">B32s")
_COUNT = struct.Struct(">H")
_INITIAL = struct.Struct(f">B32s32sIIBII{KEM_CIPHERTEXT_BYTES}s")
#: Bytes of an initial header.
INITIAL_HEADER_BYTES = _INITIAL.size


def identity_dh_public(identity_public: bytes) -> bytes:
    """The X25519 form of an Ed25519 identity key (SessionError if it is not a valid point)."""
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(identity_public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, ValueError, TypeError):
        raise SessionError("an identity key is not a valid Ed25519 point", reason="malformed") from None


def identity_dh_secret(identity: IdentityKey) -> bytes:
    """The X25519 form of our Ed25519 identity secret."""
    return nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(identity.seed + identity.public)


def _dh(secret: bytes, public: bytes) -> bytes:
    try:
        return nacl.bindings.crypto_scalarmult(secret, public)
    except nacl.exceptions.RuntimeError:
        raise SessionError("a prekey is a point of small order", reason="malformed") from None


def _signed_body(kind: int, key_id: int, not_after: int, public: bytes) -> bytes:
    return struct.pack(">BIQ", kind, key_id, not_after) + public


@dataclass(frozen=True, slots=True)
class SignedPrekey:
    """A medium-term prekey (X25519 or ML-KEM-768) signed by its owner's identity key."""

    key_id: int
    not_after: int
    public: bytes
    signature: bytes

    @property
    def kind(self) -> int:
        """0x01 for X25519, 0x02 for ML-KEM-768 (by the key's size)."""
        return _KIND_KEM if len(self.public) == KEM_PUBLIC_BYTES else _KIND_X25519

    def to_bytes(self) -> bytes:
        """The wire form."""
        fmt = _PQ if self.kind == _KIND_KEM else _SPK
        return fmt.pack(self.key_id, self.not_after, self.public, self.signature)

    def verify(self, identity_public: bytes, *, now: int) -> None:
        """Check the signature and lifetime; SessionError (signature, expired) if they fail."""
        try:
            verify_signature(identity_public, _signed_body(self.kind, self.key_id, self.not_after, self.public),
                             self.signature, context=_CONTEXT)
        except SignatureError:
            raise SessionError("a prekey signature does not verify", reason="signature") from None
        if now >= self.not_after:
            raise SessionError(f"a signed prekey expired at {self.not_after} (now {now})", reason="expired")


@dataclass(frozen=True, slots=True)
class OneTimePrekey:
    """A single-use X25519 prekey."""

    key_id: int
    public: bytes

    def to_bytes(self) -> bytes:
        """The wire form."""
        return _OPK.pack(self.key_id, self.public)


def _read_spk(data: bytes, offset: int) -> tuple[SignedPrekey, int]:
    key_id, not_after, public, sig = _SPK.unpack_from(data, offset)
    check_x25519_public(public, "signed prekey", SessionError)
    return SignedPrekey(key_id, not_after, public, sig), offset + _SPK.size


def _read_pq(data: bytes, offset: int) -> tuple[SignedPrekey, int]:
    key_id, not_after, public, sig = _PQ.unpack_from(data, offset)
    try:
        mlkem.MLKEM768PublicKey.from_public_bytes(public)
    except ValueError:
        raise SessionError("a PQ prekey is not an ML-KEM-768 encapsulation key") from None
    return SignedPrekey(key_id, not_after, public, sig), offset + _PQ.size


def _read_opk(data: bytes, offset: int) -> tuple[OneTimePrekey, int]:
    key_id, public = _OPK.unpack_from(data, offset)
    check_x25519_public(public, "one-time prekey", SessionError)
    return OneTimePrekey(key_id, public), offset + _OPK.size


def _read_head(data: bytes, what: str, fixed: int) -> bytes:
    if len(data) < _HEAD.size + fixed:
        raise SessionError(f"a {what} needs at least {_HEAD.size + fixed} bytes, got {len(data)}")
    version, identity = _HEAD.unpack_from(data)
    if version != _VERSION:
        raise SessionError(f"unknown {what} version {version}")
    return identity


@dataclass(frozen=True, slots=True)
class PrekeyBundle:
    """What a sender fetches to start a session: the signed prekeys and at most one one-time prekey."""

    identity: bytes
    signed: SignedPrekey
    pq: SignedPrekey
    one_time: OneTimePrekey | None = None

    def to_bytes(self) -> bytes:
        """The wire form."""
        tail = b"\x01" + self.one_time.to_bytes() if self.one_time is not None else b"\x00"
        return _HEAD.pack(_VERSION, self.identity) + self.signed.to_bytes() + self.pq.to_bytes() + tail

    @classmethod
    def from_bytes(cls, data: bytes) -> PrekeyBundle:
        """Parse a bundle (signatures not yet checked: :meth:`verify`)."""
        identity = _read_head(data, "prekey bundle", _SPK.size + _PQ.size + 1)
        signed, offset = _read_spk(data, _HEAD.size)
        pq, offset = _read_pq(data, offset)
        flag = data[offset]
        offset += 1
        one_time = None
        if flag == 1 and len(data) == offset + _OPK.size:
            one_time, offset = _read_opk(data, offset)
        elif flag != 0 or len(data) != offset:
            raise SessionError("a prekey bundle's one-time prekey field is malformed")
        return cls(identity, signed, pq, one_time)

    def verify(self, identity_public: bytes, *, now: int) -> None:
        """Check that the bundle is the identity's and its signed prekeys are valid now."""
        if self.identity != identity_public:
            raise SessionError("a prekey bundle belongs to another identity", reason="signature")
        self.signed.verify(identity_public, now=now)
        self.pq.verify(identity_public, now=now)


@dataclass(frozen=True, slots=True)
class PrekeyUpload:
    """What a user publishes at their provider: both signed prekeys and a batch of one-time prekeys."""

    identity: bytes
    signed: SignedPrekey
    pq: SignedPrekey
    one_time: tuple[OneTimePrekey, ...] = ()

    def to_bytes(self) -> bytes:
        """The wire form."""
        return (_HEAD.pack(_VERSION, self.identity) + self.signed.to_bytes() + self.pq.to_bytes()
                + _COUNT.pack(len(self.one_time)) + b"".join(k.to_bytes() for k in self.one_time))

    @classmethod
    def from_bytes(cls, data: bytes) -> PrekeyUpload:
        """Parse an upload (signatures not yet checked: :meth:`bundle` then :meth:`PrekeyBundle.verify`)."""
        identity = _read_head(data, "prekey upload", _SPK.size + _PQ.size + _COUNT.size)
        signed, offset = _read_spk(data, _HEAD.size)
        pq, offset = _read_pq(data, offset)
        (count,) = _COUNT.unpack_from(data, offset)
        offset += _COUNT.size
        if count > MAX_ONE_TIME_UPLOAD or len(data) != offset + count * _OPK.size:
            raise SessionError(f"a prekey upload carries at most {MAX_ONE_TIME_UPLOAD} one-time prekeys, "
                               f"of {_OPK.size} bytes each")
        one_time = []
        for _ in range(count):
            key, offset = _read_opk(data, offset)
            one_time.append(key)
        if len({k.key_id for k in one_time}) != len(one_time):
            raise SessionError("a prekey upload repeats a one-time prekey id")
        return cls(identity, signed, pq, tuple(one_time))

    def bundle(self, one_time: OneTimePrekey | None) -> PrekeyBundle:
        """The bundle a provider serves with ``one_time`` (taken from this upload, or None)."""
        return PrekeyBundle(self.identity, self.signed, self.pq, one_time)


def sign_prekey(identity: IdentityKey, key_id: int, public: bytes, *, not_after: int) -> SignedPrekey:
    """Sign a prekey's public half (X25519 or ML-KEM-768, by its size); Ed25519 gives the same signature again."""
    kind = _KIND_KEM if len(public) == KEM_PUBLIC_BYTES else _KIND_X25519
    return SignedPrekey(key_id, not_after, public, identity.sign(_signed_body(kind, key_id, not_after, public),
                                                                 context=_CONTEXT))


def make_signed_prekey(identity: IdentityKey, key_id: int, *, not_after: int,
                       randbytes: RandomBytes = os.urandom) -> tuple[bytes, SignedPrekey]:
    """A new signed X25519 prekey: (secret, public part)."""
    secret, public = x25519_keypair(randbytes)
    return secret, sign_prekey(identity, key_id, public, not_after=not_after)


def make_pq_prekey(identity: IdentityKey, key_id: int, *, not_after: int,
                   seed: bytes | None = None) -> tuple[bytes, SignedPrekey]:
    """A new signed ML-KEM-768 prekey: (64-byte secret seed, public part); ``seed`` only for fixed test keys."""
    secret = mlkem.MLKEM768PrivateKey.generate() if seed is None else kem_secret_from_bytes(seed)
    public = secret.public_key().public_bytes_raw()
    return secret.private_bytes_raw(), sign_prekey(identity, key_id, public, not_after=not_after)


def make_one_time_prekey(key_id: int, randbytes: RandomBytes = os.urandom) -> tuple[bytes, OneTimePrekey]:
    """A new one-time prekey: (secret, public part)."""
    secret, public = x25519_keypair(randbytes)
    return secret, OneTimePrekey(key_id, public)


def kem_secret_from_bytes(seed: bytes) -> mlkem.MLKEM768PrivateKey:
    """An ML-KEM-768 decapsulation key from the 64-byte seed kept in the store."""
    try:
        return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
    except ValueError:
        raise SessionError("a stored ML-KEM secret is damaged", reason="malformed") from None


@dataclass(frozen=True, slots=True)
class InitialHeader:
    """What the initiator sends (in front of each message until the peer answers) to start the session."""

    identity: bytes
    ephemeral: bytes
    signed_id: int
    pq_id: int
    one_time_id: int | None
    generation: int
    kem_ciphertext: bytes

    def to_bytes(self) -> bytes:
        """The :data:`INITIAL_HEADER_BYTES` wire form."""
        return _INITIAL.pack(_VERSION, self.identity, self.ephemeral, self.signed_id, self.pq_id,
                             0 if self.one_time_id is None else 1, self.one_time_id or 0, self.generation,
                             self.kem_ciphertext)

    @classmethod
    def from_bytes(cls, data: bytes) -> InitialHeader:
        """Parse exactly :data:`INITIAL_HEADER_BYTES`; SessionError(malformed) otherwise."""
        if len(data) != _INITIAL.size:
            raise SessionError(f"an initial header has {_INITIAL.size} bytes, got {len(data)}")
        version, identity, ephemeral, spk, pq, has_opk, opk, generation, ct = _INITIAL.unpack(data)
        if version != _VERSION or has_opk > 1 or (not has_opk and opk):
            raise SessionError("an initial header has an unknown version or a malformed one-time prekey field")
        check_x25519_public(ephemeral, "ephemeral key", SessionError)
        identity_dh_public(identity)
        return cls(identity, ephemeral, spk, pq, opk if has_opk else None, generation, ct)


@dataclass(frozen=True, slots=True)
class Agreement:
    """The result of the agreement: the shared secret and the session's associated data."""

    shared: bytes
    ad: bytes


def _derive(parts: list[bytes]) -> bytes:
    ikm = b"\xff" * 32 + b"".join(parts)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=bytes(32), info=_INFO).derive(ikm)


def initiate(identity: IdentityKey, bundle: PrekeyBundle, *, generation: int = 1,
             randbytes: RandomBytes = os.urandom) -> tuple[InitialHeader, Agreement]:
    """Run the initiator's side on a verified bundle: the header to send and the agreement."""
    eph_secret, eph_public = x25519_keypair(randbytes)
    their_dh = identity_dh_public(bundle.identity)
    parts = [_dh(identity_dh_secret(identity), bundle.signed.public), _dh(eph_secret, their_dh),
             _dh(eph_secret, bundle.signed.public)]
    if bundle.one_time is not None:
        parts.append(_dh(eph_secret, bundle.one_time.public))
    shared_kem, ciphertext = mlkem.MLKEM768PublicKey.from_public_bytes(bundle.pq.public).encapsulate()
    parts.append(shared_kem)
    header = InitialHeader(identity.public, eph_public, bundle.signed.key_id, bundle.pq.key_id,
                           bundle.one_time.key_id if bundle.one_time is not None else None, generation, ciphertext)
    return header, Agreement(_derive(parts), identity.public + bundle.identity)


def respond(identity: IdentityKey, header: InitialHeader, *, signed_secret: bytes, pq_secret: bytes,
            one_time_secret: bytes | None) -> Agreement:
    """Run the responder's side with the secrets of the prekeys the header names."""
    if (header.one_time_id is None) != (one_time_secret is None):
        raise SessionError("the one-time prekey of an initial header is not the one given", reason="unknown_prekey")
    their_dh = identity_dh_public(header.identity)
    parts = [_dh(signed_secret, their_dh), _dh(identity_dh_secret(identity), header.ephemeral),
             _dh(signed_secret, header.ephemeral)]
    if one_time_secret is not None:
        parts.append(_dh(one_time_secret, header.ephemeral))
    try:
        parts.append(kem_secret_from_bytes(pq_secret).decapsulate(header.kem_ciphertext))
    except ValueError:
        raise SessionError("an initial header's ML-KEM ciphertext is malformed") from None
    return Agreement(_derive(parts), header.identity + identity.public)
