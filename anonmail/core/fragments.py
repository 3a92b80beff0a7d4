"""Messages <-> fragments, end-to-end sealing of each fragment, and packet payload kinds.

A message of up to :data:`MAX_MESSAGE_BYTES` (an end-to-end session message,
:mod:`anonmail.core.sessions`, already encrypted as a whole) is split into fragments of
:data:`FRAGMENT_DATA_BYTES`; each fragment is authenticated for its recipient and sealed to the
recipient's current X25519 encryption key (libsodium sealed box: ephemeral key, so the egress
provider learns nothing about the sender). The recipient reassembles in any order; duplicates
are ignored.

Every Sphinx payload is exactly :data:`~anonmail.core.sphinx.PAYLOAD_BYTES` long::

    fragment:  0x01 | ack SURB (SURB_BYTES) | sealed fragment (SEALED_FRAGMENT_BYTES) | zero pad
    drop:      0x03 | ack SURB (SURB_BYTES) | random filler  (discarded by its provider, which
                                                          answers the SURB as it answers mail)
    loop:      0x04 | random filler                 (a mix's or provider's own loop: returns to it)

A drop's ACK SURB is what makes cover cost the same as mail to the sender's provider: every
payload slot, real or drop, returns exactly one ACK to the sender's mailbox
(docs/design.md, "Cover traffic and ACKs").

Sealed fragment plaintext (fixed size whatever the data length)::

    version 2 | sender identity key 32 | sender address length 1 | sender address 120 (padded)
    | message id 16 | index u16 | count u16 | message length u32 | data length u16
    | data FRAGMENT_DATA_BYTES (padded) | MAC 16

The MAC is keyed BLAKE2b over the recipient's address and everything before it, under a key only
the two ends can compute: the X25519 agreement of their identity keys (the Ed25519 keys' X25519
forms). It tells the recipient that the sender (or the recipient itself) wrote the fragment, so a
stranger cannot pass fragments off under a contact's name, yet proves nothing to anyone else:
nothing here is signed (deniability; docs/design.md, "End-to-end sessions").

What each party learns: the egress provider sees the mailbox id and the ACK SURB (never the
sender, never the content); the recipient learns the sender's address, authenticated.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from anonmail.core.address import MAX_ADDRESS_LENGTH, Address, parse_address
from anonmail.core.keys import IdentityKey, fingerprint
from anonmail.core.prekeys import identity_dh_public, identity_dh_secret
from anonmail.core.sphinx import PAYLOAD_BYTES, SURB_BYTES, RandomBytes, Surb
from anonmail.errors import (
    AddressError,
    FragmentError,
    MessageTooLargeError,
    ReassemblyError,
    SessionError,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "FRAGMENT_DATA_BYTES",
    "SEALED_FRAGMENT_BYTES",
    "MESSAGE_ID_BYTES",
    "KIND_FRAGMENT",
    "KIND_ACK",
    "KIND_DROP",
    "KIND_LOOP",
    "Fragment",
    "OpenedFragment",
    "FragmentPayload",
    "CoverPayload",
    "split_message",
    "fragment_count",
    "seal_fragment",
    "open_fragment",
    "encode_fragment_payload",
    "encode_cover_payload",
    "decode_payload",
    "ACK_MESSAGE",
    "Reassembler",
]

#: Largest message anonmail carries (documented in the README).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MESSAGE_ID_BYTES = 16
_VERSION = 2
_MAC_BYTES = 16
_SEAL_OVERHEAD = 32 + 16  # ephemeral X25519 key + Poly1305 tag
_HEAD = struct.Struct(f">B32sB{MAX_ADDRESS_LENGTH}s{MESSAGE_ID_BYTES}sHHIH")
_MAC_PERSON = b"anonmail-frag-v2"

KIND_FRAGMENT = 0x01
KIND_ACK = 0x02
KIND_DROP = 0x03
KIND_LOOP = 0x04

#: Sealed fragment size: what is left of a payload after the kind byte and the ACK SURB.
SEALED_FRAGMENT_BYTES = PAYLOAD_BYTES - 1 - SURB_BYTES
_PLAINTEXT_BYTES = SEALED_FRAGMENT_BYTES - _SEAL_OVERHEAD
#: Message bytes carried per fragment (one packet each).
FRAGMENT_DATA_BYTES = _PLAINTEXT_BYTES - _HEAD.size - _MAC_BYTES
#: The message a recipient's provider sends back through a fragment's ACK SURB.
ACK_MESSAGE = bytes([KIND_ACK])


@dataclass(frozen=True, slots=True)
class Fragment:
    """One piece of a message: ``data`` is bytes ``index * FRAGMENT_DATA_BYTES`` onwards."""

    message_id: bytes
    index: int
    count: int
    total_length: int
    data: bytes


@dataclass(frozen=True, slots=True)
class OpenedFragment:
    """A decrypted, authenticated fragment and who sent it."""

    sender: Address
    sender_identity: bytes
    fragment: Fragment


@dataclass(frozen=True, slots=True)
class FragmentPayload:
    """A payload carrying a sealed fragment and the SURB to acknowledge it with."""

    ack_surb: Surb
    sealed: bytes


@dataclass(frozen=True, slots=True)
class CoverPayload:
    """A drop or loop cover payload; a drop carries the SURB its provider answers with an ACK."""

    kind: int
    ack_surb: Surb | None = None


def fragment_count(length: int) -> int:
    """Number of fragments (packets) a message of ``length`` bytes needs."""
    return max(1, -(-length // FRAGMENT_DATA_BYTES))


def split_message(message: bytes, message_id: bytes) -> list[Fragment]:
    """Split ``message`` into fragments; raise MessageTooLargeError above the limit."""
    if len(message) > MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(
            f"message of {len(message)} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes;"
            " send it in parts"
        )
    if len(message_id) != MESSAGE_ID_BYTES:
        raise ValueError(f"message id must be {MESSAGE_ID_BYTES} bytes")
    count = fragment_count(len(message))
    return [
        Fragment(
            message_id,
            i,
            count,
            len(message),
            message[i * FRAGMENT_DATA_BYTES : (i + 1) * FRAGMENT_DATA_BYTES],
        )
        for i in range(count)
    ]


def _check_fragment(frag: Fragment) -> None:
    expected_count = fragment_count(frag.total_length)
    if not 0 <= frag.total_length <= MAX_MESSAGE_BYTES:
        raise FragmentError(f"fragment claims a message of {frag.total_length} bytes (limit {MAX_MESSAGE_BYTES})")
    if frag.count != expected_count or not 0 <= frag.index < frag.count:
        raise FragmentError(
            f"fragment {frag.index}/{frag.count} inconsistent with a {frag.total_length}-byte message"
        )
    expected_len = min(FRAGMENT_DATA_BYTES, frag.total_length - frag.index * FRAGMENT_DATA_BYTES)
    if len(frag.data) != expected_len:
        raise FragmentError(f"fragment {frag.index} carries {len(frag.data)} bytes, expected {expected_len}")


def _signed_part(frag: Fragment, sender_identity: bytes, sender: Address) -> bytes:
    sender_text = str(sender).encode("ascii")
    head = _HEAD.pack(
        _VERSION,
        sender_identity,
        len(sender_text),
        sender_text,
        frag.message_id,
        frag.index,
        frag.count,
        frag.total_length,
        len(frag.data),
    )
    return head + frag.data.ljust(FRAGMENT_DATA_BYTES, b"\x00")


@functools.lru_cache(maxsize=256)
def _pair_key(own_dh_secret: bytes, their_identity: bytes) -> bytes:
    """The fragment MAC key of two identities (cached: one X25519 per correspondent)."""
    try:
        shared = nacl.bindings.crypto_scalarmult(own_dh_secret, identity_dh_public(their_identity))
    except (nacl.exceptions.RuntimeError, SessionError):
        raise FragmentError("the sender identity key is not a usable point") from None
    return hashlib.blake2b(shared, digest_size=32, person=_MAC_PERSON).digest()


def _mac(key: bytes, recipient: Address, signed_part: bytes) -> bytes:
    recipient_text = str(recipient).encode("ascii")
    return hashlib.blake2b(bytes([len(recipient_text)]) + recipient_text + signed_part, key=key,
                           digest_size=_MAC_BYTES, person=_MAC_PERSON).digest()


def seal_fragment(
    frag: Fragment,
    *,
    sender: IdentityKey,
    sender_address: Address,
    recipient_address: Address,
    recipient_identity: bytes,
    recipient_key: bytes,
) -> bytes:
    """Authenticate ``frag`` from ``sender`` for ``recipient_address`` and seal it to ``recipient_key``."""
    _check_fragment(frag)
    if sender_address.fingerprint != sender.fingerprint:
        raise ValueError("sender address does not belong to the sender's identity key")
    if fingerprint(recipient_identity) != recipient_address.fingerprint:
        raise ValueError("recipient identity key does not belong to the recipient address")
    signed = _signed_part(frag, sender.public, sender_address)
    tag = _mac(_pair_key(identity_dh_secret(sender), recipient_identity), recipient_address, signed)
    sealed = SealedBox(PublicKey(recipient_key)).encrypt(signed + tag)
    assert len(sealed) == SEALED_FRAGMENT_BYTES
    return bytes(sealed)


def open_fragment(
    sealed: bytes, *, recipient_keys: Sequence[bytes], recipient_address: Address, recipient: IdentityKey
) -> OpenedFragment:
    """Decrypt with any of ``recipient_keys`` (X25519 secrets), authenticate, and parse a fragment.

    Raises FragmentError when no key opens it, the MAC or sender address does not verify, or
    the fields are inconsistent.
    """
    if len(sealed) != SEALED_FRAGMENT_BYTES:
        raise FragmentError(f"sealed fragment must be {SEALED_FRAGMENT_BYTES} bytes, got {len(sealed)}")
    plain = None
    for secret in recipient_keys:
        try:
            plain = SealedBox(PrivateKey(secret)).decrypt(sealed)
            break
        except CryptoError:
            continue
    if plain is None:
        raise FragmentError("fragment does not decrypt with any of our encryption keys")
    signed, tag = plain[:-_MAC_BYTES], plain[-_MAC_BYTES:]
    (version, sender_identity, addr_len, addr_field, message_id, index, count, total, data_len) = (
        _HEAD.unpack_from(signed)
    )
    if version != _VERSION:
        raise FragmentError(f"unknown fragment version {version}")
    if addr_len > MAX_ADDRESS_LENGTH or any(addr_field[addr_len:]):
        raise FragmentError("sender address field is malformed")
    try:
        sender = parse_address(addr_field[:addr_len].decode("ascii"))
    except (UnicodeDecodeError, AddressError) as exc:
        raise FragmentError(f"sender address is malformed: {exc}") from exc
    if fingerprint(sender_identity) != sender.fingerprint:
        raise FragmentError("sender identity key does not match the sender address")
    expected = _mac(_pair_key(identity_dh_secret(recipient), sender_identity), recipient_address, signed)
    if not hmac.compare_digest(expected, tag):
        raise FragmentError("fragment MAC does not verify (forged, or not meant for us)")
    data_field = signed[_HEAD.size :]
    if data_len > FRAGMENT_DATA_BYTES or any(data_field[data_len:]):
        raise FragmentError("fragment data length is malformed")
    frag = Fragment(message_id, index, count, total, data_field[:data_len])
    _check_fragment(frag)
    return OpenedFragment(sender, sender_identity, frag)


def encode_fragment_payload(ack_surb: Surb, sealed: bytes) -> bytes:
    """Build the Sphinx payload for a sealed fragment with its ACK SURB."""
    if len(sealed) != SEALED_FRAGMENT_BYTES:
        raise ValueError(f"sealed fragment must be {SEALED_FRAGMENT_BYTES} bytes")
    return bytes([KIND_FRAGMENT]) + ack_surb.to_bytes() + sealed


def encode_cover_payload(kind: int, rng: RandomBytes = os.urandom, ack_surb: Surb | None = None) -> bytes:
    """Build a drop or loop cover payload of the one payload size (a drop with the SURB to ACK it)."""
    if kind not in (KIND_DROP, KIND_LOOP):
        raise ValueError(f"not a cover kind: {kind}")
    if ack_surb is None:
        return bytes([kind]) + rng(PAYLOAD_BYTES - 1)
    if kind != KIND_DROP:
        raise ValueError("only drop cover carries an ACK SURB")
    return bytes([kind]) + ack_surb.to_bytes() + rng(PAYLOAD_BYTES - 1 - SURB_BYTES)


def decode_payload(payload: bytes) -> FragmentPayload | CoverPayload:
    """Parse a delivered Sphinx payload; raise FragmentError on anything malformed."""
    if len(payload) != PAYLOAD_BYTES:
        raise FragmentError(f"payload must be {PAYLOAD_BYTES} bytes, got {len(payload)}")
    kind = payload[0]
    if kind == KIND_FRAGMENT:
        surb = Surb.from_bytes(payload[1 : 1 + SURB_BYTES])
        return FragmentPayload(surb, payload[1 + SURB_BYTES :])
    if kind == KIND_DROP:
        return CoverPayload(kind, Surb.from_bytes(payload[1 : 1 + SURB_BYTES]))
    if kind == KIND_LOOP:
        return CoverPayload(kind)
    raise FragmentError(f"unknown payload kind 0x{kind:02x}")


@dataclass
class _Partial:
    count: int
    total_length: int
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects fragments per (sender, message id) and yields each complete message once.

    Memory is bounded: at most ``max_pending`` partial messages and ``max_pending_bytes``
    buffered bytes (the oldest partial message is evicted first); the ids of the last
    ``remember_completed`` messages are kept so that late duplicates are ignored.
    """

    def __init__(
        self,
        *,
        max_pending: int = 256,
        max_pending_bytes: int = 64 * 1024 * 1024,
        remember_completed: int = 4096,
    ) -> None:
        self._pending: OrderedDict[tuple[bytes, bytes], _Partial] = OrderedDict()
        self._completed: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self._max_pending = max_pending
        self._max_bytes = max_pending_bytes
        self._remember = remember_completed
        self._bytes = 0
        self.duplicates = 0
        self.evicted = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes buffered in incomplete messages."""
        return self._bytes

    def add(self, opened: OpenedFragment) -> bytes | None:
        """Add a fragment; return the whole message when this fragment completes it."""
        frag = opened.fragment
        key = (opened.sender.fingerprint, frag.message_id)
        if key in self._completed:
            self.duplicates += 1
            return None
        partial = self._pending.get(key)
        if partial is None:
            partial = _Partial(frag.count, frag.total_length)
            self._pending[key] = partial
        elif (partial.count, partial.total_length) != (frag.count, frag.total_length):
            raise ReassemblyError(
                f"fragment {frag.index} disagrees with earlier fragments on the message size"
            )
        existing = partial.parts.get(frag.index)
        if existing is not None:
            if existing != frag.data:
                raise ReassemblyError(f"two different fragments claim index {frag.index}")
            self.duplicates += 1
            return None
        partial.parts[frag.index] = frag.data
        partial.size += len(frag.data)
        self._bytes += len(frag.data)
        if len(partial.parts) == partial.count:
            del self._pending[key]
            self._bytes -= partial.size
            self._completed[key] = None
            while len(self._completed) > self._remember:
                self._completed.popitem(last=False)
            return b"".join(partial.parts[i] for i in range(partial.count))
        self._pending.move_to_end(key)
        self._evict(keep=key)
        return None

    def _evict(self, keep: tuple[bytes, bytes]) -> None:
        while (len(self._pending) > self._max_pending or self._bytes > self._max_bytes) and len(
            self._pending
        ) > 1:
            key, partial = next(iter(self._pending.items()))
            if key == keep:
                break
            del self._pending[key]
            self._bytes -= partial.size
            self.evicted += 1
