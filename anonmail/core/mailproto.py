"""The client <-> provider protocol: authentication, ingress, mailbox fetch, key lookup (sans-IO).

A client (a user's agent) talks to its provider over one stream of wire frames
(:mod:`anonmail.core.wire`), always through Tor or I2P in production::

    client                                   provider
      HELLO(role=CLIENT)          ──▶
                                  ◀──  HELLO(role=PROVIDER)
                                  ◀──  CONTROL {"type": "challenge", "nonce", "provider"}
      CONTROL {"type": "auth", "op": "register"|"login", "identity", "signature", "certs"}
                                  ◀──  CONTROL {"type": "auth_ok", "mailbox", "limits"} | error
      PACKET ...                  ──▶  ingress: Sphinx packets whose first hop is this provider
      CONTROL {"type": "fetch"}   ──▶
                                  ◀──  CONTROL {"type": "entries", "count": N, "full", "evicted"},
                                       then N PACKET frames
      CONTROL {"type": "confirm", "ids": [N ids]}
                                  ◀──  CONTROL {"type": "confirmed", "deleted": k}
      CONTROL {"type": "publish_keys", "certs"}  ◀── {"type": "ok"}
      CONTROL {"type": "publish_prekeys", "upload"}  ◀── {"type": "prekeys_ok", "one_time": held}

Anyone may also ask ``{"type": "bundle", "address"}`` and gets ``{"type": "bundle", "identity",
"bundle"}``: the user's prekey bundle (:mod:`anonmail.core.prekeys`) with one one-time prekey,
which the provider deletes as it hands it out (:mod:`anonmail.provider.prekeys`).

Anyone (no authentication) may ask ``{"type": "keys", "address"}`` and gets the identity key and
encryption-key certificates of that user, so a new contact can write to them; the answer is
self-certifying (the identity key must hash to the address's fingerprint). Invitation codes meet
here too (``invite_*`` requests, :mod:`anonmail.core.rendezvous`).

**Fixed shapes.** A fetch always answers with exactly ``N`` entries (the provider's
``fetch_batch``), each a PACKET-sized frame (:func:`encode_entry`), padded with dummy entries, so
neither the count nor the kind of the stored mail shows on the wire; a confirm always carries
``N`` ids (the client pads with random ids). Entry ids are random in [1, :data:`ENTRY_ID_LIMIT`)
(0 marks a dummy), so a user learns nothing about other mailboxes from the ids of their own
entries, and padding ids are drawn from the same range. Every entry says how many real entries remain.
``full`` says the mailbox is at its quota and ``evicted`` how many of its oldest entries it
dropped since the last fetch to take new ones: a full mailbox still stores and acknowledges
what arrives, so no sender can learn from ACKs when its owner fetches.

The signature of ``auth`` covers the nonce, the provider's name, the operation and the identity
key under its own context, so a challenge answered for one provider or operation is useless for
another. Errors are ``{"type": "error", "reason", "message"}`` with a stable ``reason``.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anonmail.core.address import Address, parse_address
from anonmail.core.keys import IdentityKey, verify_signature
from anonmail.core.sizes import BODY_BYTES, K, PACKET_BYTES
from anonmail.errors import AddressError, ProtocolError, SignatureError

__all__ = [
    "NONCE_BYTES",
    "AUTH_OPS",
    "ENTRY_DUMMY",
    "ENTRY_ID_LIMIT",
    "ENTRY_FRAGMENT",
    "ENTRY_REPLY",
    "ENTRY_DATA_BYTES",
    "Entry",
    "auth_payload",
    "lookup_address",
    "sign_auth",
    "verify_auth",
    "encode_entry",
    "decode_entry",
    "dummy_entry",
    "b64e",
    "b64d",
    "error_message",
    "require_fields",
]

NONCE_BYTES = 32
AUTH_OPS = ("register", "login")
_AUTH_CONTEXT = b"anonmail-provider-auth-v1"

ENTRY_DUMMY = 0
#: Real entry ids are random in [1, ENTRY_ID_LIMIT) (a provider stores them as signed 64-bit integers).
ENTRY_ID_LIMIT = 2**63
#: A sealed fragment (what a Deliver's payload carried after its ACK SURB).
ENTRY_FRAGMENT = 1
#: A SURB reply: surb id (16) then the reply body (BODY_BYTES).
ENTRY_REPLY = 2
_ENTRY_HEAD = struct.Struct(">BQIH")  # kind, entry id, remaining, data length
#: Largest data an entry carries (one entry fills one PACKET frame).
ENTRY_DATA_BYTES = PACKET_BYTES - _ENTRY_HEAD.size
assert K + BODY_BYTES <= ENTRY_DATA_BYTES


@dataclass(frozen=True, slots=True)
class Entry:
    """One mailbox entry as fetched: kind, the provider's id for it, its data."""

    kind: int
    entry_id: int
    remaining: int
    data: bytes


def auth_payload(nonce: bytes, provider: str, op: str, identity_public: bytes) -> bytes:
    """The bytes a client signs to answer a provider's challenge."""
    if op not in AUTH_OPS:
        raise ValueError(f"unknown auth operation {op!r}")
    name = provider.encode("ascii")
    return bytes([len(nonce)]) + nonce + bytes([len(name)]) + name + op.encode("ascii") + b"\x00" + identity_public


def sign_auth(identity: IdentityKey, nonce: bytes, provider: str, op: str) -> bytes:
    """Answer a challenge: sign it with the user's identity key."""
    return identity.sign(auth_payload(nonce, provider, op, identity.public), context=_AUTH_CONTEXT)


def verify_auth(identity_public: bytes, signature: bytes, nonce: bytes, provider: str, op: str) -> None:
    """Check a challenge answer; raise ProtocolError(reason="bad_signature") if it does not verify."""
    try:
        verify_signature(identity_public, auth_payload(nonce, provider, op, identity_public), signature,
                         context=_AUTH_CONTEXT)
    except SignatureError as exc:
        raise ProtocolError("the challenge signature does not verify", reason="bad_signature") from exc


def encode_entry(entry: Entry, rng=os.urandom) -> bytes:
    """One fetched entry as exactly PACKET_BYTES bytes (random padding after the data)."""
    if len(entry.data) > ENTRY_DATA_BYTES:
        raise ValueError(f"entry data of {len(entry.data)} bytes exceeds {ENTRY_DATA_BYTES}")
    head = _ENTRY_HEAD.pack(entry.kind, entry.entry_id, min(entry.remaining, 2**32 - 1), len(entry.data))
    return head + entry.data + rng(ENTRY_DATA_BYTES - len(entry.data))


def dummy_entry(remaining: int, rng=os.urandom) -> bytes:
    """A padding entry, the same size as a real one."""
    return encode_entry(Entry(ENTRY_DUMMY, 0, remaining, b""), rng)


def decode_entry(data: bytes) -> Entry:
    """Parse a fetched entry; ProtocolError(reason="bad_entry") if malformed."""
    if len(data) != PACKET_BYTES:
        raise ProtocolError(f"a mailbox entry is {PACKET_BYTES} bytes, got {len(data)}", reason="bad_entry")
    kind, entry_id, remaining, length = _ENTRY_HEAD.unpack_from(data)
    if kind not in (ENTRY_DUMMY, ENTRY_FRAGMENT, ENTRY_REPLY) or length > ENTRY_DATA_BYTES:
        raise ProtocolError(f"mailbox entry has kind {kind} and length {length}", reason="bad_entry")
    start = _ENTRY_HEAD.size
    return Entry(kind, entry_id, remaining, data[start : start + length])


def b64e(data: bytes) -> str:
    """Binary to the base64 text CONTROL messages carry."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: object, what: str, size: int | None = None) -> bytes:
    """Base64 text from a peer to bytes; ProtocolError(reason="malformed") naming ``what``."""
    if not isinstance(text, str):
        raise ProtocolError(f"{what} must be base64 text", reason="malformed")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ProtocolError(f"{what} is not valid base64", reason="malformed") from exc
    if size is not None and len(data) != size:
        raise ProtocolError(f"{what} must be {size} bytes, got {len(data)}", reason="malformed")
    return data


def error_message(reason: str, message: str) -> dict[str, Any]:
    """The CONTROL answer for a refused request."""
    return {"type": "error", "reason": reason, "message": message}


def require_fields(message: Mapping[str, Any], fields: Sequence[str]) -> None:
    """Check that a CONTROL message has exactly ``type`` and ``fields``; ProtocolError otherwise."""
    expected = {"type", *fields}
    if set(message) != expected:
        missing, extra = sorted(expected - set(message)), sorted(set(message) - expected)
        raise ProtocolError(
            f"{message.get('type')!r} message fields wrong: missing {missing}, unexpected {extra}",
            reason="malformed",
        )


def lookup_address(message: Mapping[str, Any], provider: str) -> Address:
    """The user a lookup (``keys``, ``bundle``) asks about, at this provider; ProtocolError otherwise."""
    require_fields(message, ["address"])
    text = message["address"]
    if not isinstance(text, str):
        raise ProtocolError("address must be text", reason="malformed")
    try:
        address = parse_address(text)
    except AddressError as exc:
        raise ProtocolError(f"not an address: {exc}", reason="malformed") from None
    if address.provider != provider:
        raise ProtocolError(f"this provider is {provider!r}, not {address.provider!r}", reason="wrong_provider")
    return address
