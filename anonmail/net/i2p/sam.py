"""The SAM v3 protocol without I/O: reply parsing, session options, what a failed CONNECT means.

i2plib's own parser does not handle quoted values such as ``MESSAGE="..."``; :func:`parse_reply`
does. Command lines are built with ``i2plib.sam``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from i2plib import sam

from anonmail.errors import ConnectError
from anonmail.net.i2p.settings import I2PSettings

__all__ = [
    "SamReply",
    "parse_reply",
    "session_options",
    "describe",
    "connect_error",
    "b32_address",
    "SAM_MIN_VERSION",
    "SAM_MAX_VERSION",
    "SIGNATURE_TYPE",
    "MAX_LINE_BYTES",
]

#: SAM versions we speak; i2pd answers 3.1 even when 3.3 is offered.
SAM_MIN_VERSION = "3.1"
SAM_MAX_VERSION = "3.3"
#: EdDSA-SHA512-Ed25519 destinations; ECIES-X25519 lease sets (ElGamal as a fallback).
SIGNATURE_TYPE = 7
LEASESET_ENC_TYPES = "4,0"
#: Longest SAM reply line we accept (destinations are ~520 base64 chars, private keys ~900).
MAX_LINE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class SamReply:
    """One SAM reply line: ``topic`` and ``action`` (e.g. ``SESSION STATUS``) and its options."""

    topic: str
    action: str
    options: dict[str, str]

    @property
    def result(self) -> str:
        """SAM's RESULT code, ``""`` when the reply has none."""
        return self.options.get("RESULT", "")

    @property
    def ok(self) -> bool:
        """Whether RESULT=OK."""
        return self.result == "OK"

    @property
    def message(self) -> str:
        """SAM's own error text (MESSAGE=...), ``""`` when it gave none."""
        return self.options.get("MESSAGE", "")


def parse_reply(line: bytes | str) -> SamReply:
    """Parse one SAM reply line (quoted values allowed); raise ValueError if it is not one."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    try:
        words = shlex.split(text, posix=True)
    except ValueError:  # unbalanced quote: fall back to plain words
        words = text.split()
    if len(words) < 2 or not words[0].isupper() or not words[1].isupper():
        raise ValueError(f"not a SAM reply: {text[:80]!r}")
    options: dict[str, str] = {}
    for word in words[2:]:
        key, sep, value = word.partition("=")
        options[key] = value if sep else "true"
    return SamReply(words[0], words[1], options)


def session_options(settings: I2PSettings) -> str:
    """The I2CP options of SESSION CREATE for these settings."""
    options = {
        "SIGNATURE_TYPE": str(SIGNATURE_TYPE),
        "i2cp.leaseSetEncType": LEASESET_ENC_TYPES,
        "inbound.length": str(settings.inbound_length),
        "outbound.length": str(settings.outbound_length),
        "inbound.quantity": str(settings.inbound_quantity),
        "outbound.quantity": str(settings.outbound_quantity),
    }
    options.update(dict(settings.extra_options))
    return " ".join(f"{key}={value}" for key, value in options.items())


def describe(reply: SamReply) -> str:
    """SAM's result and message as a short phrase for error messages."""
    text = reply.result or f"{reply.topic} {reply.action}"
    return f"{text}: {reply.message}" if reply.message else text


_CONNECT_REASONS = {
    "CANT_REACH_PEER": ("unreachable", "the peer's destination cannot be reached over I2P"),
    "PEER_NOT_FOUND": ("unreachable", "the peer's destination cannot be reached over I2P"),
    "TIMEOUT": ("timeout", "the I2P stream was not established in time"),
    "INVALID_KEY": ("refused", "the router rejected the peer's destination"),
    "INVALID_ID": ("refused", "the router no longer knows our SAM session"),
    "I2P_ERROR": ("unreachable", "the router could not open the stream"),
}


def connect_error(reply: SamReply, address: str, bridge: str) -> ConnectError:
    """Translate a failed STREAM CONNECT reply into a ConnectError naming the peer and SAM's text."""
    reason, what = _CONNECT_REASONS.get(reply.result, ("unreachable", "the stream could not be opened"))
    return ConnectError(
        f"cannot connect to {address}: {what} (SAM bridge {bridge} said {describe(reply)})",
        address=address, reason=reason,
    )


def b32_address(private_or_public_b64: str, *, private: bool) -> str:
    """The ``<52 chars>.b32.i2p`` host of a destination given in I2P base64."""
    if private:
        dest = sam.Destination(private_or_public_b64, has_private_key=True)
    else:
        dest = sam.Destination(private_or_public_b64)
    return f"{dest.base32}.b32.i2p"
