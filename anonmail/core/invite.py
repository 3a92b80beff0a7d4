"""Invitation codes: meet a correspondent with a short code read aloud (sans-IO).

Two people who can talk for a moment become contacts without typing 56-character addresses.
The inviter's agent gets a *nameplate* (a number) from its provider's rendezvous
(:mod:`anonmail.core.rendezvous`) and shows a code ``<nameplate>-<word>-<word>@<provider>``,
e.g. ``4127-orbit-velvet@alpha``; the other person types it into ``anonmail accept``. The
words are two of the 2048 words of the BIP-39 English list (the ``mnemonic`` package ships
it, MIT licence; every word is unique in its first four letters, so four letters are enough
to type one), about 22 bits drawn from the CSPRNG. The ``@provider`` part says whose
provider holds the rendezvous; without it, ``accept`` assumes the acceptor's own provider.

The whole code is the password of a SPAKE2 exchange (the ``spake2`` package; Ed25519 group,
inviter side A, acceptor side B). Each side derives from the shared key one secretbox key per
direction and a *binding* value, and sends one :class:`Introduction` sealed under its key:
its address, identity key, current encryption-key certificates, a signature by the identity
key over the binding (so a code holder cannot pass on somebody else's address, and an
introduction is worthless outside this one exchange), and an ``ext`` map for later additions
such as prekey bundles. The plaintext is padded to :data:`PAYLOAD_BYTES`, so every sealed
introduction is :data:`SEALED_BYTES` long whatever it holds.

A wrong code gives the two sides different keys: the first sealed introduction does not open
(:class:`~anonmail.errors.InviteError` ``mismatch``, with :data:`MISMATCH_MESSAGE`), and the
invitation ends; nothing about either side was readable to the other or to the rendezvous.
An attacker who does not know the code gets one guess per invitation (about 1 in 4 million),
and a failed guess ends the invitation visibly.

:class:`InviteSession` is the state machine of one side::

    NEW --start()--> STARTED --receive_pake()--> KEYED --seal()/open_peer()--> KEYED/DONE
     any failure ------------------------------------------------------------> FAILED

``seal`` may come before or after ``open_peer`` (the acceptor seals first, the inviter opens
first); the session is DONE once it has both sealed its own introduction and opened the peer's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import nacl.exceptions
import nacl.secret
import nacl.utils
from spake2 import SPAKE2_A, SPAKE2_B
from spake2.spake2 import SPAKEError

from anonmail.core import strictjson
from anonmail.core.address import parse_address, validate_provider_name
from anonmail.core.keys import EncryptionKeyCert, IdentityKey, verify_signature
from anonmail.errors import AddressError, InviteError, JSONError, KeyError_, SignatureError

__all__ = [
    "INVITE_VERSION",
    "NAMEPLATE_MAX",
    "CODE_TTL_S",
    "PAKE_BYTES",
    "PAYLOAD_BYTES",
    "SEALED_BYTES",
    "MAX_CERTS",
    "MAX_EXT",
    "MISMATCH_MESSAGE",
    "Side",
    "State",
    "InviteCode",
    "Introduction",
    "wordlist",
    "new_code",
    "parse_code",
    "encode_introduction",
    "decode_introduction",
    "InviteSession",
]

#: The introduction format this program writes; it reads this version and refuses later ones.
INVITE_VERSION = 1
#: Nameplates are drawn at random from 1..NAMEPLATE_MAX, so live ones are sparse.
NAMEPLATE_MAX = 9999
#: How long a code is good for, seconds (10 minutes).
CODE_TTL_S = 600
#: A SPAKE2 message: one side byte and one Ed25519 group element.
PAKE_BYTES = 33
#: Plaintext size of every introduction (length prefix, canonical JSON, zero padding).
PAYLOAD_BYTES = 6144
#: Size of every sealed introduction on the wire and at the rendezvous (nonce, MAC, payload).
SEALED_BYTES = PAYLOAD_BYTES + nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES
#: Encryption-key certificates one introduction carries at most.
MAX_CERTS = 4
#: Extension fields (``ext``) an introduction carries at most; each value is base64 text.
MAX_EXT = 8
_MAX_EXT_TEXT = 4096
#: What both sides are told when the code was wrong (or someone else guessed).
MISMATCH_MESSAGE = "the code did not match: ask them to read it again and start a new invite"

_ID_A, _ID_B = b"anonmail-invite-inviter", b"anonmail-invite-acceptor"
_PROOF_CONTEXT = b"anonmail-invite-proof-v1"
_LENGTH = struct.Struct(">H")
_WORDS: tuple[str, ...] | None = None


class Side(Enum):
    """Which end of an invitation: the one who showed the code, or the one who typed it."""

    INVITER = "inviter"
    ACCEPTOR = "acceptor"


class State(Enum):
    """Where an :class:`InviteSession` is."""

    NEW = "new"
    STARTED = "started"
    KEYED = "keyed"
    DONE = "done"
    FAILED = "failed"


def wordlist() -> tuple[str, ...]:
    """The 2048 BIP-39 English words (from the ``mnemonic`` package, loaded once)."""
    global _WORDS
    if _WORDS is None:
        from mnemonic import Mnemonic

        words = tuple(Mnemonic("english").wordlist)
        if len(words) != 2048 or len({w[:4] for w in words}) != 2048:
            raise RuntimeError("the mnemonic package's English word list is not the BIP-39 list")
        _WORDS = words
    return _WORDS


@dataclass(frozen=True)
class InviteCode:
    """A parsed code: nameplate number, two words, the provider holding the rendezvous."""

    nameplate: int
    words: tuple[str, str]
    provider: str

    def __str__(self) -> str:
        return f"{self.nameplate}-{self.words[0]}-{self.words[1]}@{self.provider}"

    def password(self) -> bytes:
        """The SPAKE2 password: the whole canonical code."""
        return str(self).encode("ascii")


def new_code(nameplate: int, provider: str, randbelow: Callable[[int], int]) -> InviteCode:
    """A fresh code for ``nameplate`` at ``provider``; ``randbelow`` is e.g. :func:`secrets.randbelow`."""
    if not 1 <= nameplate <= NAMEPLATE_MAX:
        raise ValueError(f"nameplate must be 1..{NAMEPLATE_MAX}, got {nameplate}")
    words = wordlist()
    return InviteCode(nameplate, (words[randbelow(len(words))], words[randbelow(len(words))]),
                      validate_provider_name(provider))


def _word(text: str, position: str) -> str:
    words = wordlist()
    if text in words:
        return text
    if len(text) >= 4:
        matches = [w for w in words if w.startswith(text)]
        if len(matches) == 1:
            return matches[0]
    raise InviteError(f"the {position} word {text!r} is not one of the code words; check the spelling "
                      "(its first four letters are enough)", reason="bad_code")


def parse_code(text: object, default_provider: str | None = None) -> InviteCode:
    """Parse ``NUMBER-WORD-WORD[@PROVIDER]`` (spaces count as dashes, case is ignored).

    Raises InviteError(reason="bad_code") saying what is wrong; without ``@PROVIDER`` the code's
    provider is ``default_provider`` (the acceptor's own), and it is an error if that is None.
    """
    if not isinstance(text, str) or len(text) > 120:
        raise InviteError("an invitation code looks like 4127-orbit-velvet@alpha", reason="bad_code")
    cleaned = "-".join(text.strip().lower().split())
    body, at, provider = cleaned.partition("@")
    if at:
        try:
            provider = validate_provider_name(provider)
        except AddressError as exc:
            raise InviteError(f"the provider after '@' in the code is not a provider name: {exc}",
                              reason="bad_code") from None
    elif default_provider is None:
        raise InviteError("the code needs its '@provider' part (as the inviter's screen shows it)", reason="bad_code")
    else:
        provider = default_provider
    parts = body.split("-")
    if len(parts) != 3:
        raise InviteError("an invitation code is a number and two words, e.g. 4127-orbit-velvet@alpha",
                          reason="bad_code")
    number, first, second = parts
    if not number.isdigit() or not number.isascii() or not 1 <= int(number) <= NAMEPLATE_MAX:
        raise InviteError(f"the code must start with a number from 1 to {NAMEPLATE_MAX}", reason="bad_code")
    return InviteCode(int(number), (_word(first, "first"), _word(second, "second")), provider)


@dataclass(frozen=True)
class Introduction:
    """What one side tells the other: who it is and how to write to it.

    ``ext`` holds later additions (e.g. prekey bundles) as name -> base64 text; a reader keeps
    the names it knows and ignores the others, so adding one needs no new version.
    """

    address: str
    identity: bytes
    certs: tuple[bytes, ...]
    ext: Mapping[str, str] = field(default_factory=dict)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(text, str) or len(text) > _MAX_EXT_TEXT * 2:
        raise InviteError(f"the introduction's {what} must be base64 text", reason="bad_message")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise InviteError(f"the introduction's {what} is not valid base64", reason="bad_message") from None
    if size is not None and len(data) != size:
        raise InviteError(f"the introduction's {what} must be {size} bytes, got {len(data)}", reason="bad_message")
    return data


def encode_introduction(intro: Introduction, proof: bytes) -> bytes:
    """The padded plaintext (exactly :data:`PAYLOAD_BYTES`) of an introduction and its proof."""
    if not 1 <= len(intro.certs) <= MAX_CERTS or len(intro.ext) > MAX_EXT:
        raise ValueError(f"an introduction carries 1..{MAX_CERTS} certificates and at most {MAX_EXT} extensions")
    doc = {"v": INVITE_VERSION, "address": intro.address, "identity": _b64(intro.identity),
           "certs": [_b64(c) for c in intro.certs], "proof": _b64(proof), "ext": dict(intro.ext)}
    data = strictjson.dumps(doc, what="introduction")
    if _LENGTH.size + len(data) > PAYLOAD_BYTES:
        raise ValueError(f"an introduction of {len(data)} bytes does not fit in {PAYLOAD_BYTES}")
    return _LENGTH.pack(len(data)) + data + bytes(PAYLOAD_BYTES - _LENGTH.size - len(data))


def decode_introduction(plain: bytes) -> tuple[Introduction, bytes]:
    """Parse a padded introduction strictly: (introduction, proof); InviteError(bad_message) if not.

    Checks the shape only (the address parses, sizes are right); :meth:`InviteSession.open_peer`
    checks that the keys belong to the address and the proof verifies.
    """
    if len(plain) != PAYLOAD_BYTES:
        raise InviteError(f"an introduction is {PAYLOAD_BYTES} bytes, got {len(plain)}", reason="bad_message")
    (length,) = _LENGTH.unpack_from(plain)
    if length > PAYLOAD_BYTES - _LENGTH.size or any(plain[_LENGTH.size + length:]):
        raise InviteError("the introduction's length or padding is wrong", reason="bad_message")
    try:
        doc = strictjson.loads(plain[_LENGTH.size:_LENGTH.size + length], what="introduction", max_depth=3)
    except JSONError as exc:
        raise InviteError(f"the introduction is not valid JSON: {exc}", reason="bad_message") from None
    if not isinstance(doc, dict) or set(doc) != {"v", "address", "identity", "certs", "proof", "ext"}:
        raise InviteError("the introduction's fields are wrong", reason="bad_message")
    if doc["v"] != INVITE_VERSION or isinstance(doc["v"], bool):
        raise InviteError(f"the introduction has version {doc['v']!r}; this anonmail reads version "
                          f"{INVITE_VERSION} (update anonmail)", reason="bad_message")
    if not isinstance(doc["address"], str):
        raise InviteError("the introduction's address must be text", reason="bad_message")
    try:
        address = str(parse_address(doc["address"]))
    except AddressError as exc:
        raise InviteError(f"the introduction's address is not valid: {exc}", reason="bad_message") from None
    certs = doc["certs"]
    if not isinstance(certs, list) or not 1 <= len(certs) <= MAX_CERTS:
        raise InviteError(f"the introduction carries 1..{MAX_CERTS} certificates", reason="bad_message")
    ext = doc["ext"]
    if (not isinstance(ext, dict) or len(ext) > MAX_EXT
            or not all(isinstance(v, str) and len(k) <= 32 and len(v) <= _MAX_EXT_TEXT for k, v in ext.items())):
        raise InviteError(f"the introduction's ext holds at most {MAX_EXT} short text values", reason="bad_message")
    intro = Introduction(address, _unb64(doc["identity"], "identity", 32),
                         tuple(_unb64(c, f"certs[{i}]", EncryptionKeyCert.CERT_BYTES) for i, c in enumerate(certs)),
                         dict(ext))
    return intro, _unb64(doc["proof"], "proof", 64)


class InviteSession:
    """One side of one invitation (see the module docstring for the states)."""

    def __init__(self, side: Side, code: InviteCode, *, random_bytes: Callable[[int], bytes] = nacl.utils.random):
        self.side = side
        self.code = code
        self.state = State.NEW
        self._random = random_bytes
        cls = SPAKE2_A if side is Side.INVITER else SPAKE2_B
        self._pake = cls(code.password(), idA=_ID_A, idB=_ID_B)
        self._keys: tuple[bytes, bytes, bytes] | None = None  # (ours, theirs, binding)
        self._sealed = False
        self._opened: Introduction | None = None

    def _fail(self, message: str, reason: str) -> InviteError:
        self.state = State.FAILED
        return InviteError(message, reason=reason)

    def _need(self, *states: State) -> None:
        if self.state not in states:
            raise InviteError(f"the invitation is {self.state.value}; this step needs "
                              f"{' or '.join(s.value for s in states)}", reason="bad_state")

    def start(self) -> bytes:
        """Our SPAKE2 message (:data:`PAKE_BYTES`), for the rendezvous."""
        self._need(State.NEW)
        message = self._pake.start()
        self.state = State.STARTED
        return message

    def receive_pake(self, message: bytes) -> None:
        """Finish SPAKE2 with the peer's message; InviteError(bad_message) if it is not one."""
        self._need(State.STARTED)
        if len(message) != PAKE_BYTES:
            raise self._fail("the peer's key-exchange message has the wrong size", "bad_message")
        try:
            key = self._pake.finish(message)
        except (SPAKEError, ValueError, AssertionError):
            raise self._fail("the peer's key-exchange message is not valid", "bad_message") from None

        def derive(label: bytes) -> bytes:
            return hashlib.blake2b(label, key=key, digest_size=32, person=b"anonmail-invite1").digest()

        mine, theirs = (b"inviter", b"acceptor") if self.side is Side.INVITER else (b"acceptor", b"inviter")
        self._keys = (derive(b"seal:" + mine), derive(b"seal:" + theirs), derive(b"binding"))
        self.state = State.KEYED

    def _proof_payload(self, side: Side, intro_identity: bytes) -> bytes:
        assert self._keys is not None
        return self._keys[2] + side.value.encode("ascii") + b"\x00" + intro_identity

    def seal(self, intro: Introduction, identity: IdentityKey) -> bytes:
        """Our introduction sealed under our direction's key (:data:`SEALED_BYTES`)."""
        self._need(State.KEYED)
        if self._sealed:
            raise InviteError("our introduction was already sealed", reason="bad_state")
        if identity.public != intro.identity:
            raise ValueError("the introduction must carry the signing identity's key")
        assert self._keys is not None
        proof = identity.sign(self._proof_payload(self.side, intro.identity), context=_PROOF_CONTEXT)
        box = nacl.secret.SecretBox(self._keys[0])
        sealed = bytes(box.encrypt(encode_introduction(intro, proof), self._random(box.NONCE_SIZE)))
        self._sealed = True
        self._finish_if_done()
        return sealed

    def open_peer(self, sealed: bytes, *, now: int) -> Introduction:
        """Open and check the peer's introduction; InviteError ``mismatch`` if the codes differed.

        Checks: it opens under the peer's direction key (else the code did not match), parses,
        its identity hashes to its address, its proof verifies under that identity, and every
        certificate is that identity's, signed and valid at ``now`` (``bad_message`` otherwise).
        """
        self._need(State.KEYED)
        if self._opened is not None:
            raise InviteError("the peer's introduction was already opened", reason="bad_state")
        assert self._keys is not None
        if len(sealed) != SEALED_BYTES:
            raise self._fail(f"the peer's introduction must be {SEALED_BYTES} bytes", "bad_message")
        try:
            plain = nacl.secret.SecretBox(self._keys[1]).decrypt(sealed)
        except nacl.exceptions.CryptoError:
            raise self._fail(MISMATCH_MESSAGE, "mismatch") from None
        try:
            intro, proof = decode_introduction(bytes(plain))
            peer = Side.ACCEPTOR if self.side is Side.INVITER else Side.INVITER
            parse_address(intro.address).verify_key(intro.identity)
            verify_signature(intro.identity, self._proof_payload(peer, intro.identity), proof,
                             context=_PROOF_CONTEXT)
            for blob in intro.certs:
                cert = EncryptionKeyCert.from_bytes(blob)
                if not hmac.compare_digest(cert.identity_public, intro.identity):
                    raise InviteError("a certificate in the introduction is not its sender's", reason="bad_message")
                cert.verify(now=now)
        except InviteError as exc:
            raise self._fail(str(exc), exc.reason) from None
        except (AddressError, SignatureError, KeyError_) as exc:
            raise self._fail(f"the peer's introduction does not check out: {exc}", "bad_message") from None
        self._opened = intro
        self._finish_if_done()
        return intro

    def _finish_if_done(self) -> None:
        if self._sealed and self._opened is not None:
            self.state = State.DONE
