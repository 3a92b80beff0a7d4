"""The link handshake on a framed stream: :mod:`anonmail.core.linkauth` moved over CONTROL frames.

Callers bound the whole exchange with a timeout (``anyio.fail_after``); every protocol failure
is a :class:`~anonmail.errors.LinkAuthError` (a malformed frame stays a WireError) and the
caller closes the stream. The node's link secret is the 0600 file ``link.key`` in its data
directory (made on first start; its public half goes into every descriptor).
"""

from __future__ import annotations

from pathlib import Path

from anonmail.core.linkauth import LinkHandshake, decode_message, encode_message
from anonmail.daemon.identity import load_or_create_secret
from anonmail.core.wire import PROTOCOL_VERSION, Control, Hello, Role, encode_frame
from anonmail.errors import LinkAuthError
from anonmail.net.framed import FramedStream

__all__ = ["initiate", "respond", "load_or_create_link_secret", "LINK_KEY_FILE"]

LINK_KEY_FILE = "link.key"
_LINK_TAG = b"anonmail-link-key-v1:"


def load_or_create_link_secret(data_dir: Path) -> bytes:
    """(Blocking.) The node's X25519 link secret (a 0600 file in its data directory)."""
    return load_or_create_secret(data_dir / LINK_KEY_FILE, _LINK_TAG, "node link key")


async def initiate(framed: FramedStream, secret: bytes, expected_peer: bytes) -> bytes:
    """Say HELLO as a node and authenticate both ends; the peer's link key (== ``expected_peer``)."""
    handshake = LinkHandshake(True, secret, expected_peer=expected_peer)
    first = encode_frame(Hello(PROTOCOL_VERSION, Role.MIX)) + encode_frame(Control(encode_message(handshake.start())))
    await framed.send_raw(first)
    third = handshake.receive(await _next_message(framed, 1))
    assert third is not None
    await framed.send(Control(encode_message(third)))
    assert handshake.peer_key is not None
    return handshake.peer_key


async def respond(framed: FramedStream, secret: bytes) -> bytes:
    """(After the peer's HELLO as a node.) Authenticate both ends; the peer's link key."""
    handshake = LinkHandshake(False, secret)
    second = handshake.receive(await _next_message(framed, 0))
    assert second is not None
    await framed.send(Control(encode_message(second)))
    handshake.receive(await _next_message(framed, 2))
    assert handshake.peer_key is not None
    return handshake.peer_key


async def _next_message(framed: FramedStream, index: int) -> bytes:
    frame = await framed.receive()
    if frame is None:
        raise LinkAuthError(f"the peer closed the link before handshake message {index + 1}", reason="closed")
    if not isinstance(frame, Control):
        raise LinkAuthError(f"expected handshake message {index + 1}, got a {type(frame).__name__} frame",
                            reason="unexpected")
    return decode_message(frame.message, index)
