"""User addresses: ``<user>@<provider>``, self-certifying and typo-checked (docs/design.md, "Addresses").

``<user>`` is the lower-case RFC 4648 base32 (no padding) of 35 bytes::

    fingerprint (32) | checksum (2) | version (1)

which is always exactly 56 characters, in the manner of Tor v3 onion names. The fingerprint is
:func:`anonmail.core.keys.fingerprint` of the user's identity key, so an address is
self-certifying: :meth:`Address.verify_key` checks that a presented key hashes to it. The
checksum is CRC-16/XMODEM (``binascii.crc_hqx``) over ``b"anonmail-address-checksum" |
fingerprint | version``, big-endian. A CRC-16 detects every error burst of up to 16 bits, so
every single mistyped character and every swap of two neighbouring characters is caught;
other random damage slips through with probability 1 in 65536. (The checksum is for typos,
not for security: the fingerprint itself is what certifies the key.)

``<provider>`` is the provider's name in the consensus: 1 to 63 characters of ``a-z``, ``0-9``
and ``-``, not starting or ending with ``-``. An address is at most
:data:`MAX_ADDRESS_LENGTH` characters.

:func:`parse_address` is strict and explains itself: every failure is an
:class:`~anonmail.errors.AddressError` whose ``text`` is the address after stripping
surrounding whitespace, whose ``position`` is the 0-based index in ``text`` where the problem
is (``None`` only when the input was not a string), and whose message says what is wrong
with the 1-based character number a person would count. Upper-case letters are accepted and
normalized to lower case.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from anonmail.core.keys import FINGERPRINT_BYTES, fingerprint
from anonmail.errors import AddressError, KeyError_

__all__ = [
    "ADDRESS_VERSION",
    "USER_PART_LENGTH",
    "MAX_PROVIDER_NAME_LENGTH",
    "MAX_ADDRESS_LENGTH",
    "MAILBOX_ID_BYTES",
    "Address",
    "parse_address",
    "format_address",
    "validate_provider_name",
]

#: The address version this program writes and understands (the last byte of the user part).
ADDRESS_VERSION = 1
_CHECKSUM_BYTES = 2
_RAW_BYTES = FINGERPRINT_BYTES + _CHECKSUM_BYTES + 1
#: Characters in the user part: base32 of 35 bytes.
USER_PART_LENGTH = _RAW_BYTES * 8 // 5
#: Longest provider name (a DNS-label-like consensus name).
MAX_PROVIDER_NAME_LENGTH = 63
#: Longest address text: user part, '@', longest provider name.
MAX_ADDRESS_LENGTH = USER_PART_LENGTH + 1 + MAX_PROVIDER_NAME_LENGTH
#: Size of :attr:`Address.mailbox_id` (equals ``sizes.MAILBOX_ID_BYTES``).
MAILBOX_ID_BYTES = 16

_CHECKSUM_PREFIX = b"anonmail-address-checksum"
_MBOX_PERSON = b"anonmail-mbox-v1"

_B32_LOWER = "abcdefghijklmnopqrstuvwxyz234567"
_B32_CHARS = frozenset(_B32_LOWER + _B32_LOWER.upper())
_B32_HINTS = {
    "0": " (letters a-z and digits 2-7; did you mean 'o'?)",
    "1": " (letters a-z and digits 2-7; did you mean 'l' or 'i'?)",
    "8": " (letters a-z and digits 2-7; did you mean 'b'?)",
    "9": " (letters a-z and digits 2-7; did you mean 'g'?)",
    "=": " (addresses carry no '=' padding; remove it)",
}
_B32_HINT_DEFAULT = " (letters a-z and digits 2-7)"

_PROVIDER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_SHOW_MAX = 80


def _show(text: str) -> str:
    """Quote text for an error message, shortening very long input."""
    if len(text) > _SHOW_MAX:
        text = text[: _SHOW_MAX - 12] + "…" + text[-11:]
    return repr(text)


def _checksum(fpr: bytes, version: int) -> bytes:
    """The 2-byte typo checksum: CRC-16/XMODEM, so every burst of up to 16 bits is caught.

    base32 is most-significant-bit first like this CRC, so one mistyped character (5 bits)
    or two swapped neighbours (10 bits) is always a burst the CRC detects.
    """
    crc = binascii.crc_hqx(_CHECKSUM_PREFIX + fpr + bytes([version]), 0)
    return crc.to_bytes(_CHECKSUM_BYTES, "big")


def _check_provider(name: str, *, text: str, offset: int, prefix: str) -> None:
    """Raise AddressError if ``name`` (found at ``offset`` in ``text``) is not a provider name."""
    if not name:
        raise AddressError(
            f"{prefix}the provider name is missing (expected <user>@<provider>)",
            text=text,
            position=offset,
        )
    for i, ch in enumerate(name):
        if ch not in _PROVIDER_CHARS:
            if ch == ".":
                why = "; a provider is named by its consensus entry, not by a domain name"
            elif "A" <= ch <= "Z":
                why = "; provider names are lower case"
            else:
                why = ""
            raise AddressError(
                f"{prefix}character {offset + i + 1} {ch!r} is not allowed in a provider name "
                f"(letters a-z, digits 0-9 and '-'{why})",
                text=text,
                position=offset + i,
            )
    if len(name) > MAX_PROVIDER_NAME_LENGTH:
        raise AddressError(
            f"{prefix}the provider name has {len(name)} characters, at most "
            f"{MAX_PROVIDER_NAME_LENGTH} are allowed "
            f"(character {offset + MAX_PROVIDER_NAME_LENGTH + 1} is one too many)",
            text=text,
            position=offset + MAX_PROVIDER_NAME_LENGTH,
        )
    if name[0] == "-":
        raise AddressError(
            f"{prefix}the provider name must not start with '-' (character {offset + 1})",
            text=text,
            position=offset,
        )
    if name[-1] == "-":
        end = offset + len(name) - 1
        raise AddressError(
            f"{prefix}the provider name must not end with '-' (character {end + 1})",
            text=text,
            position=end,
        )


def validate_provider_name(name: str) -> str:
    """Check a consensus provider name (strict: lower case only) and return it unchanged."""
    if not isinstance(name, str):
        raise AddressError(
            f"provider name must be text, got {type(name).__name__}", text="", position=None
        )
    _check_provider(name, text=name, offset=0, prefix=f"provider name {_show(name)}: ")
    return name


def format_address(fingerprint: bytes, provider: str) -> str:
    """Spell a fingerprint and provider name as address text (the inverse of parse_address)."""
    if not isinstance(fingerprint, (bytes, bytearray, memoryview)) or len(fingerprint) != (
        FINGERPRINT_BYTES
    ):
        raise AddressError(
            f"fingerprint must be {FINGERPRINT_BYTES} bytes", text="", position=None
        )
    fpr = bytes(fingerprint)
    validate_provider_name(provider)
    raw = fpr + _checksum(fpr, ADDRESS_VERSION) + bytes([ADDRESS_VERSION])
    user = base64.b32encode(raw).decode("ascii").lower()
    return f"{user}@{provider}"


@dataclass(frozen=True, repr=False)
class Address:
    """A parsed address: whose key (fingerprint) and which provider keeps their mailbox."""

    fingerprint: bytes
    provider: str

    def __post_init__(self) -> None:
        """Reject a wrong-size fingerprint or an invalid provider name with AddressError."""
        if not isinstance(self.fingerprint, (bytes, bytearray, memoryview)) or len(
            self.fingerprint
        ) != FINGERPRINT_BYTES:
            raise AddressError(
                f"fingerprint must be {FINGERPRINT_BYTES} bytes", text="", position=None
            )
        object.__setattr__(self, "fingerprint", bytes(self.fingerprint))
        validate_provider_name(self.provider)

    def __str__(self) -> str:
        """The address text, ``<56 base32 characters>@<provider>``."""
        return format_address(self.fingerprint, self.provider)

    def __repr__(self) -> str:
        """Show the address text rather than raw fingerprint bytes."""
        return f"Address({str(self)!r})"

    @classmethod
    def for_key(cls, identity_public: bytes, provider: str) -> Address:
        """Build the address of an identity public key at a provider (KeyError_ if wrong size)."""
        return cls(fingerprint(identity_public), provider)

    @property
    def mailbox_id(self) -> bytes:
        """The 16-byte mailbox id the egress provider files this user's packets under."""
        return hashlib.blake2b(
            self.fingerprint, digest_size=MAILBOX_ID_BYTES, person=_MBOX_PERSON
        ).digest()

    def verify_key(self, identity_public: bytes) -> None:
        """Check that a presented identity key is this address's key; AddressError if not."""
        try:
            presented = fingerprint(identity_public)
        except KeyError_ as exc:
            raise AddressError(
                f"the key presented for {self} is malformed: {exc}", text=str(self), position=None
            ) from exc
        if not hmac.compare_digest(presented, self.fingerprint):
            raise AddressError(
                f"the key presented for {self} does not match the address's fingerprint; "
                "it is not this contact's key",
                text=str(self),
                position=None,
            )


def parse_address(text: str) -> Address:
    """Parse address text strictly; every failure is an AddressError saying what and where."""
    if not isinstance(text, str):
        raise AddressError(
            f"address must be text, got {type(text).__name__}", text="", position=None
        )
    s = text.strip()
    if not s:
        raise AddressError(
            "address is empty (expected <user>@<provider>)", text=s, position=0
        )
    prefix = f"address {_show(s)}: "
    # No separate total-length check: a 56-character user part and a provider name of at most
    # 63 characters bound an accepted address by MAX_ADDRESS_LENGTH, and the specific checks
    # below say more precisely what is too long.
    at = s.find("@")
    if at < 0:
        raise AddressError(
            f"{prefix}missing '@' (expected <{USER_PART_LENGTH}-character user part>@<provider>)",
            text=s,
            position=min(len(s), USER_PART_LENGTH),
        )
    second = s.find("@", at + 1)
    if second >= 0:
        raise AddressError(
            f"{prefix}more than one '@' (another one at character {second + 1})",
            text=s,
            position=second,
        )
    user, provider = s[:at], s[at + 1 :]

    for i, ch in enumerate(user):
        if ch not in _B32_CHARS:
            hint = _B32_HINTS.get(ch, _B32_HINT_DEFAULT)
            raise AddressError(
                f"{prefix}character {i + 1} {ch!r} is not base32{hint}",
                text=s,
                position=i,
            )
    if len(user) != USER_PART_LENGTH:
        raise AddressError(
            f"{prefix}the part before '@' has {len(user)} characters, "
            f"expected {USER_PART_LENGTH}",
            text=s,
            position=min(len(user), USER_PART_LENGTH),
        )
    try:
        raw = base64.b32decode(user.upper())
    except (binascii.Error, ValueError) as exc:  # cannot happen after the checks above
        raise AddressError(
            f"{prefix}the part before '@' is not base32", text=s, position=0
        ) from exc
    fpr, check, version = raw[:FINGERPRINT_BYTES], raw[FINGERPRINT_BYTES:-1], raw[-1]
    if version != ADDRESS_VERSION:
        raise AddressError(
            f"{prefix}unknown address version {version} (this program understands version "
            f"{ADDRESS_VERSION}): the address is mistyped near its end, or needs a newer anonmail",
            text=s,
            position=USER_PART_LENGTH - 1,
        )
    if not hmac.compare_digest(check, _checksum(fpr, version)):
        raise AddressError(
            f"{prefix}checksum does not match: the address is mistyped "
            "(check the part before '@' character by character)",
            text=s,
            position=0,
        )

    provider = provider.translate(_ASCII_LOWER)
    _check_provider(provider, text=s, offset=at + 1, prefix=prefix)
    return Address(fpr, provider)
