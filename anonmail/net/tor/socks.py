"""What tor's SOCKS5 replies mean: stable reasons, texts, and whether trying again can help (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SocksReply", "describe_socks_reply", "socks_reply_code"]


@dataclass(frozen=True, slots=True)
class SocksReply:
    """What a SOCKS5 reply code from tor means, and whether trying again can help."""

    code: int
    reason: str
    text: str
    retryable: bool


_SOCKS_REPLIES = {
    0x01: ("socks_failure", "general SOCKS server failure", True),
    0x02: ("not_allowed", "connection not allowed by tor's rules", False),
    0x03: ("network_unreachable", "network unreachable", True),
    0x04: ("host_unreachable", "host unreachable: tor could not build a circuit to it", True),
    0x05: ("refused", "connection refused: nothing serves that port of the onion service", False),
    0x06: ("ttl_expired", "tor timed out (TTL expired)", True),
    0x07: ("command_not_supported", "SOCKS command not supported", False),
    0x08: ("address_type_not_supported", "SOCKS address type not supported", False),
    # tor's ExtendedErrors (SocksPort flag), onion services only
    0xF0: ("descriptor_not_found",
           "onion service descriptor not found: the service is unknown, offline or not published yet", True),
    0xF1: ("descriptor_invalid", "onion service descriptor is invalid", False),
    0xF2: ("introduction_failed", "introduction to the onion service failed", True),
    0xF3: ("rendezvous_failed", "rendezvous with the onion service failed", True),
    0xF4: ("client_auth_missing", "the onion service requires client authorization", False),
    0xF5: ("client_auth_wrong", "the onion service rejected our client authorization", False),
    0xF6: ("bad_onion_address", "tor considers the onion address invalid", False),
    0xF7: ("introduction_timeout", "introduction to the onion service timed out", True),
}

_REPLY_CODE_IN_TEXT = re.compile(r"reply code:?\s*0x([0-9a-f]{1,2})", re.IGNORECASE)


def describe_socks_reply(code: int) -> SocksReply:
    """Map a SOCKS5 reply code (standard or tor's 0xF0–0xF7) to a stable reason and text."""
    reason, text, retryable = _SOCKS_REPLIES.get(code, ("socks_failure", f"unknown SOCKS reply 0x{code:02X}", True))
    return SocksReply(code, reason, text, retryable)


def socks_reply_code(exc: BaseException) -> int | None:
    """The SOCKS reply code carried by a python-socks ProxyError, if any.

    python-socks knows only codes 0x00–0x08; tor's extended codes reach us as the message
    ``Invalid reply code: 0XF0``, which is parsed here.
    """
    code = getattr(exc, "error_code", None)
    if isinstance(code, int):
        return int(code)
    for text in (str(exc), str(exc.__cause__ or "")):
        match = _REPLY_CODE_IN_TEXT.search(text)
        if match:
            return int(match.group(1), 16)
    return None

