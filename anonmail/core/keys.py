"""Identity and encryption keys, key certificates, fingerprints and passphrase-sealed secrets.

Every user and every node has a long-term Ed25519 *identity key*. Its public half is hashed
into a *fingerprint* (which a user's address spells out, see :mod:`anonmail.core.address`)
and into a *node id* (which Sphinx routing commands carry). Messages are encrypted to X25519
*encryption keys* that rotate: each one travels in an :class:`EncryptionKeyCert`, signed by
the identity key and valid for a window of unix seconds; a key that is not re-announced
expires, and :func:`newest_valid` picks the one to use.

Signatures are domain-separated: :meth:`IdentityKey.sign` signs
``len(context) || context || message``, so a signature made for one purpose never verifies
for another.

Secrets at rest are sealed with a passphrase (:func:`seal_secret`, Argon2id + XSalsa20-Poly1305)
into a self-describing blob::

    b"AMSEAL1\\n" | opslimit u32 BE | memlimit u64 BE | salt (16) | nonce (24) | box

Everything here is pure computation; reading and writing key files is :mod:`anonmail.keyfiles`.

Errors: wrong sizes of keys and seeds raise :class:`~anonmail.errors.KeyError_`; signatures and
certificates that do not verify or do not parse raise :class:`~anonmail.errors.SignatureError`;
certificates outside their window raise :class:`~anonmail.errors.KeyExpiredError`; sealed blobs
raise :class:`~anonmail.errors.PassphraseError` or :class:`~anonmail.errors.KeyFileError`.
Programming mistakes (a context longer than 255 bytes, a non-positive lifetime, Argon2id limits
out of range when sealing) raise :class:`ValueError`. No message ever contains secret bytes or
a passphrase.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.pwhash.argon2id
import nacl.secret
import nacl.signing
import nacl.utils

from anonmail.errors import (
    KeyError_,
    KeyExpiredError,
    KeyFileError,
    PassphraseError,
    SignatureError,
)

__all__ = [
    "check_x25519_public",
    "FINGERPRINT_BYTES",
    "NODE_ID_BYTES",
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "SEAL_MAGIC",
    "SEAL_OPSLIMIT_DEFAULT",
    "SEAL_MEMLIMIT_DEFAULT",
    "SEAL_OPSLIMIT_MAX",
    "SEAL_MEMLIMIT_MAX",
    "fingerprint",
    "node_id",
    "IdentityKey",
    "verify_signature",
    "EncryptionKey",
    "EncryptionKeyCert",
    "certify_encryption_key",
    "newest_valid",
    "seal_secret",
    "open_sealed",
    ]

#: Size of an identity fingerprint (the part of an address that names the key).
FINGERPRINT_BYTES = 32
#: Size of a node id as carried in Sphinx routing commands (equals ``sizes.NODE_ID_BYTES``).
NODE_ID_BYTES = 16
#: Size of Ed25519 and X25519 public keys, Ed25519 seeds and X25519 secrets.
PUBLIC_KEY_BYTES = 32
#: Size of a detached Ed25519 signature.
SIGNATURE_BYTES = 64

_SEED_BYTES = 32
_MAX_CONTEXT_BYTES = 255

_FPR_PERSON = b"anonmail-fpr-v1"
_NODE_PERSON = b"anonmail-node-v1"


def _bytes_of(value: object, size: int, what: str, exc: type[Exception]) -> bytes:
    """Return ``value`` as bytes of exactly ``size``, or raise ``exc`` naming ``what``."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise exc(f"{what} must be bytes, got {type(value).__name__}")
    data = bytes(value)
    if len(data) != size:
        raise exc(f"{what} must be {size} bytes, got {len(data)}")
    return data


_CURVE25519_P = 2**255 - 19
#: Any clamped scalar: X25519 of it with a point is all zeros exactly when the point has small order.
_ORDER_PROBE = bytes([9]) * 32


def check_x25519_public(value: object, what: str, exc: type[Exception] = KeyError_) -> bytes:
    """An X25519 public key that cannot hurt: 32 bytes, canonical, not of small order.

    A small-order point makes every Diffie-Hellman with it all zeros (libsodium refuses it), so
    a peer publishing one could crash or neuter whoever builds a packet or seals to it. Raises
    ``exc`` naming ``what``.
    """
    key = _bytes_of(value, PUBLIC_KEY_BYTES, what, exc)
    if int.from_bytes(key, "little") >= _CURVE25519_P:
        raise exc(f"{what} is not a canonical Curve25519 point")
    try:
        nacl.bindings.crypto_scalarmult(_ORDER_PROBE, key)
    except nacl.exceptions.RuntimeError:
        raise exc(f"{what} is a point of small order") from None
    return key


def fingerprint(identity_public: bytes) -> bytes:
    """Hash an identity public key into the 32-byte fingerprint that addresses spell out."""
    key = _bytes_of(identity_public, PUBLIC_KEY_BYTES, "identity public key", KeyError_)
    return hashlib.blake2b(key, digest_size=FINGERPRINT_BYTES, person=_FPR_PERSON).digest()


def node_id(identity_public: bytes) -> bytes:
    """Hash a node's identity public key into the 16-byte id used in routing commands."""
    key = _bytes_of(identity_public, PUBLIC_KEY_BYTES, "identity public key", KeyError_)
    return hashlib.blake2b(key, digest_size=NODE_ID_BYTES, person=_NODE_PERSON).digest()


def _signed_bytes(message: bytes, context: bytes) -> bytes:
    """Build the domain-separated byte string that is actually signed."""
    return bytes([len(context)]) + context + message


def _check_context(context: object) -> bytes:
    """Validate a signing context (1..255 bytes), raising ValueError for a programming mistake."""
    if not isinstance(context, (bytes, bytearray, memoryview)):
        raise ValueError(f"signature context must be bytes, got {type(context).__name__}")
    ctx = bytes(context)
    if not 1 <= len(ctx) <= _MAX_CONTEXT_BYTES:
        raise ValueError(f"signature context must be 1..{_MAX_CONTEXT_BYTES} bytes, got {len(ctx)}")
    return ctx


class IdentityKey:
    """A long-term Ed25519 identity secret key: signs certificates and names its owner."""

    __slots__ = ("_signing_key",)

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        """Wrap a PyNaCl signing key; prefer :meth:`generate` and :meth:`from_seed`."""
        self._signing_key = signing_key

    @classmethod
    def generate(cls) -> IdentityKey:
        """Create a fresh identity key from the operating system's CSPRNG."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> IdentityKey:
        """Rebuild an identity key from its 32-byte seed; raises KeyError_ on a wrong size."""
        data = _bytes_of(seed, _SEED_BYTES, "identity key seed", KeyError_)
        return cls(nacl.signing.SigningKey(data))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed, for sealing into a key file."""
        return bytes(self._signing_key.encode())

    @property
    def public(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return bytes(self._signing_key.verify_key.encode())

    @property
    def fingerprint(self) -> bytes:
        """The fingerprint of the public key, as used in addresses."""
        return fingerprint(self.public)

    def sign(self, message: bytes, *, context: bytes) -> bytes:
        """Return a 64-byte detached signature over ``len(context) || context || message``."""
        ctx = _check_context(context)
        if not isinstance(message, (bytes, bytearray, memoryview)):
            raise TypeError(f"message must be bytes, got {type(message).__name__}")
        signed = self._signing_key.sign(_signed_bytes(bytes(message), ctx))
        return bytes(signed.signature)

    def __repr__(self) -> str:
        """Show only the fingerprint, never the secret."""
        return f"IdentityKey(fingerprint={self.fingerprint.hex()[:16]}…)"

    def __eq__(self, other: object) -> bool:
        """Compare keys in constant time."""
        if not isinstance(other, IdentityKey):
            return NotImplemented
        return hmac.compare_digest(self.seed, other.seed)

    def __hash__(self) -> int:
        """Hash by public key, consistent with equality."""
        return hash(self.public)


def verify_signature(
    identity_public: bytes, message: bytes, signature: bytes, *, context: bytes
) -> None:
    """Check a signature made by :meth:`IdentityKey.sign`; raises SignatureError if it fails."""
    key = _bytes_of(identity_public, PUBLIC_KEY_BYTES, "identity public key", SignatureError)
    sig = _bytes_of(signature, SIGNATURE_BYTES, "signature", SignatureError)
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise SignatureError(f"message must be bytes, got {type(message).__name__}")
    if not isinstance(context, (bytes, bytearray, memoryview)) or not (
        1 <= len(context) <= _MAX_CONTEXT_BYTES
    ):
        raise SignatureError("signature context must be 1..255 bytes")
    try:
        nacl.signing.VerifyKey(key).verify(_signed_bytes(bytes(message), bytes(context)), sig)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise SignatureError("signature does not verify") from exc


class EncryptionKey:
    """An X25519 secret key that messages are encrypted to; rotated and certified."""

    __slots__ = ("_private_key",)

    def __init__(self, private_key: nacl.public.PrivateKey) -> None:
        """Wrap a PyNaCl private key; prefer :meth:`generate` and :meth:`from_secret`."""
        self._private_key = private_key

    @classmethod
    def generate(cls) -> EncryptionKey:
        """Create a fresh encryption key from the operating system's CSPRNG."""
        return cls(nacl.public.PrivateKey.generate())

    @classmethod
    def from_secret(cls, secret: bytes) -> EncryptionKey:
        """Rebuild an encryption key from its 32-byte secret; raises KeyError_ on a wrong size."""
        data = _bytes_of(secret, PUBLIC_KEY_BYTES, "encryption key secret", KeyError_)
        return cls(nacl.public.PrivateKey(data))

    @property
    def secret(self) -> bytes:
        """The 32-byte X25519 secret, for sealing into a key file."""
        return bytes(self._private_key.encode())

    @property
    def public(self) -> bytes:
        """The 32-byte X25519 public key, to certify and announce."""
        return bytes(self._private_key.public_key.encode())

    def __repr__(self) -> str:
        """Show only a prefix of the public key, never the secret."""
        return f"EncryptionKey(public={self.public.hex()[:16]}…)"

    def __eq__(self, other: object) -> bool:
        """Compare keys in constant time."""
        if not isinstance(other, EncryptionKey):
            return NotImplemented
        return hmac.compare_digest(self.secret, other.secret)

    def __hash__(self) -> int:
        """Hash by public key, consistent with equality."""
        return hash(self.public)


_CERT_VERSION = 1
_CERT_CONTEXT = b"anonmail-enc-cert-v1"
# version u8 | identity_public | encryption_public | not_before u64 BE | not_after u64 BE
_CERT_BODY = struct.Struct(">B32s32sQQ")
_U64_MAX = 2**64 - 1


@dataclass(frozen=True)
class EncryptionKeyCert:
    """An X25519 public key signed by an identity key, valid in ``[not_before, not_after)``.

    Wire form (:data:`CERT_BYTES` = 145 bytes): ``version (1) | identity_public (32) |
    encryption_public (32) | not_before (u64 BE) | not_after (u64 BE) | signature (64)``; the
    signature covers everything before it, under the context ``b"anonmail-enc-cert-v1"``.
    Construction and :meth:`from_bytes` check only the structure and raise
    :class:`~anonmail.errors.SignatureError` for a malformed certificate; :meth:`verify`
    checks the signature and the validity window. The certificate does not say *whose* key
    this is: callers check ``identity_public`` against the contact (``Address.verify_key``).
    """

    CERT_BYTES: ClassVar[int] = _CERT_BODY.size + SIGNATURE_BYTES

    identity_public: bytes
    encryption_public: bytes
    not_before: int
    not_after: int
    signature: bytes

    def __post_init__(self) -> None:
        """Reject structurally malformed certificates with SignatureError."""
        _bytes_of(
            self.identity_public, PUBLIC_KEY_BYTES, "certificate identity key", SignatureError
        )
        check_x25519_public(self.encryption_public, "certificate encryption key", SignatureError)
        _bytes_of(self.signature, SIGNATURE_BYTES, "certificate signature", SignatureError)
        for name in ("not_before", "not_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
                raise SignatureError(f"certificate {name} must be an integer in 0..2**64-1")
        if self.not_after <= self.not_before:
            raise SignatureError(
                f"certificate validity window is empty (not_before {self.not_before}, "
                f"not_after {self.not_after})"
            )

    def _body(self) -> bytes:
        """The signed part of the wire form."""
        return _CERT_BODY.pack(
            _CERT_VERSION,
            bytes(self.identity_public),
            bytes(self.encryption_public),
            self.not_before,
            self.not_after,
        )

    def to_bytes(self) -> bytes:
        """Serialize to exactly :data:`CERT_BYTES` bytes, for announcing to contacts."""
        return self._body() + bytes(self.signature)

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptionKeyCert:
        """Parse the wire form (signature not yet checked); raises SignatureError if malformed."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SignatureError(f"certificate must be bytes, got {type(data).__name__}")
        raw = bytes(data)
        if len(raw) != cls.CERT_BYTES:
            raise SignatureError(
                f"certificate has {len(raw)} bytes, expected {cls.CERT_BYTES}"
            )
        version, ident, enc, not_before, not_after = _CERT_BODY.unpack_from(raw)
        if version != _CERT_VERSION:
            raise SignatureError(
                f"unknown certificate version {version} (this program understands "
                f"{_CERT_VERSION})"
            )
        return cls(ident, enc, not_before, not_after, raw[_CERT_BODY.size :])

    def verify(self, *, now: int) -> None:
        """Check signature and window; SignatureError if forged, KeyExpiredError if outside."""
        verify_signature(self.identity_public, self._body(), self.signature, context=_CERT_CONTEXT)
        if now < self.not_before:
            raise KeyExpiredError(
                f"encryption key certificate is not valid before {self.not_before} "
                f"(now {now}); check the clock"
            )
        if now >= self.not_after:
            raise KeyExpiredError(
                f"encryption key certificate expired at {self.not_after} (now {now}); "
                "ask the contact to re-announce their key"
            )


def certify_encryption_key(
    identity: IdentityKey, encryption_public: bytes, *, not_before: int, lifetime_s: int
) -> EncryptionKeyCert:
    """Sign an encryption public key for ``lifetime_s`` seconds starting at ``not_before``."""
    enc = check_x25519_public(encryption_public, "encryption public key")
    if isinstance(lifetime_s, bool) or not isinstance(lifetime_s, int) or lifetime_s <= 0:
        raise ValueError(f"lifetime_s must be a positive integer, got {lifetime_s!r}")
    if isinstance(not_before, bool) or not isinstance(not_before, int) or not_before < 0:
        raise ValueError(f"not_before must be a non-negative integer, got {not_before!r}")
    not_after = not_before + lifetime_s
    if not_after > _U64_MAX:
        raise ValueError("not_before + lifetime_s does not fit in 64 bits")
    body = _CERT_BODY.pack(_CERT_VERSION, identity.public, enc, not_before, not_after)
    signature = identity.sign(body, context=_CERT_CONTEXT)
    return EncryptionKeyCert(identity.public, enc, not_before, not_after, signature)


def newest_valid(certs: Iterable[EncryptionKeyCert], *, now: int) -> EncryptionKeyCert:
    """Pick the verified, currently valid cert with the latest ``not_before`` (key rotation).

    Certificates with bad signatures or outside their window are skipped. Ties on
    ``not_before`` go to the later ``not_after``. Raises KeyExpiredError if none is valid.
    """
    best: EncryptionKeyCert | None = None
    seen = expired = early = forged = 0
    for cert in certs:
        seen += 1
        try:
            cert.verify(now=now)
        except SignatureError:
            forged += 1
            continue
        except KeyExpiredError:
            if now < cert.not_before:
                early += 1
            else:
                expired += 1
            continue
        if best is None or (cert.not_before, cert.not_after) > (best.not_before, best.not_after):
            best = cert
    if best is None:
        raise KeyExpiredError(
            f"no valid encryption key among {seen} certificate(s) at {now} "
            f"({expired} expired, {early} not yet valid, {forged} with bad signatures); "
            "ask the contact to re-announce their key"
        )
    return best


# --- Sealing secrets at rest -------------------------------------------------------------

#: First bytes of every sealed blob.
SEAL_MAGIC = b"AMSEAL1\n"
#: Default Argon2id work factors for sealing (libsodium's "moderate": ~0.7 s, 256 MiB).
SEAL_OPSLIMIT_DEFAULT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
SEAL_MEMLIMIT_DEFAULT = nacl.pwhash.argon2id.MEMLIMIT_MODERATE
#: Largest work factors a blob may ask for; larger values are refused as a denial of service.
SEAL_OPSLIMIT_MAX = 4 * nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE
SEAL_MEMLIMIT_MAX = nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE

_SEAL_HEADER = struct.Struct(">8sIQ16s")
_SALT_BYTES = nacl.pwhash.argon2id.SALTBYTES
_SEAL_MIN_BYTES = (
    _SEAL_HEADER.size + nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES
)
_WRONG_PASSPHRASE = "wrong passphrase, or the key file is damaged"


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    """Encode a passphrase: text is NFC-normalized then UTF-8 encoded, bytes are used as-is."""
    if isinstance(passphrase, str):
        return unicodedata.normalize("NFC", passphrase).encode("utf-8")
    if isinstance(passphrase, (bytes, bytearray, memoryview)):
        return bytes(passphrase)
    raise TypeError(f"passphrase must be str or bytes, got {type(passphrase).__name__}")


def _limits_ok(opslimit: int, memlimit: int) -> bool:
    """Whether Argon2id work factors are within the range we seal with and accept."""
    return (
        nacl.pwhash.argon2id.OPSLIMIT_MIN <= opslimit <= SEAL_OPSLIMIT_MAX
        and nacl.pwhash.argon2id.MEMLIMIT_MIN <= memlimit <= SEAL_MEMLIMIT_MAX
    )


def _derive(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    """Derive the SecretBox key from a passphrase with Argon2id."""
    return nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
    )


def seal_secret(
    secret: bytes,
    passphrase: str | bytes,
    *,
    opslimit: int = SEAL_OPSLIMIT_DEFAULT,
    memlimit: int = SEAL_MEMLIMIT_DEFAULT,
) -> bytes:
    """Encrypt a secret under a passphrase into a self-describing blob for storage at rest."""
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
    pw = _passphrase_bytes(passphrase)
    if (
        not isinstance(opslimit, int)
        or not isinstance(memlimit, int)
        or isinstance(opslimit, bool)
        or isinstance(memlimit, bool)
        or not _limits_ok(opslimit, memlimit)
    ):
        raise ValueError(
            f"Argon2id limits out of range: opslimit {opslimit!r} (allowed "
            f"{nacl.pwhash.argon2id.OPSLIMIT_MIN}..{SEAL_OPSLIMIT_MAX}), memlimit {memlimit!r} "
            f"(allowed {nacl.pwhash.argon2id.MEMLIMIT_MIN}..{SEAL_MEMLIMIT_MAX})"
        )
    salt = nacl.utils.random(_SALT_BYTES)
    key = _derive(pw, salt, opslimit, memlimit)
    box = nacl.secret.SecretBox(key).encrypt(bytes(secret))
    return _SEAL_HEADER.pack(SEAL_MAGIC, opslimit, memlimit, salt) + bytes(box)


def open_sealed(blob: bytes, passphrase: str | bytes) -> bytes:
    """Decrypt a blob made by :func:`seal_secret`.

    Raises PassphraseError if the passphrase is wrong (or the blob was altered), KeyFileError
    if the blob is not a sealed secret, is truncated, or asks for absurd Argon2id limits.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise KeyFileError(f"sealed key must be bytes, got {type(blob).__name__}")
    raw = bytes(blob)
    pw = _passphrase_bytes(passphrase)
    if not raw.startswith(SEAL_MAGIC):
        raise KeyFileError("not a sealed anonmail key (bad magic bytes)")
    if len(raw) < _SEAL_MIN_BYTES:
        raise KeyFileError(
            f"sealed key is truncated: {len(raw)} bytes, at least {_SEAL_MIN_BYTES} expected"
        )
    _magic, opslimit, memlimit, salt = _SEAL_HEADER.unpack_from(raw)
    if not _limits_ok(opslimit, memlimit):
        raise KeyFileError(
            f"sealed key asks for unreasonable Argon2id limits (opslimit {opslimit}, "
            f"memlimit {memlimit}); refusing to derive"
        )
    try:
        key = _derive(pw, salt, opslimit, memlimit)
    except (nacl.exceptions.CryptoError, ValueError, TypeError, MemoryError) as exc:
        raise KeyFileError("sealed key cannot be opened: key derivation failed") from exc
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(raw[_SEAL_HEADER.size :]))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise PassphraseError(_WRONG_PASSPHRASE) from exc
