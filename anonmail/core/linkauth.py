"""Authenticated links between nodes: a Noise XX handshake, sans-IO.

Every node-to-node link (provider → layer 1 → layer 2 → layer 3 → provider) starts with a
handshake that proves to each end which node of the consensus is at the other end. Each node
has a long-term X25519 *link key* (``link.key`` in its data directory, 0600); its public half is
in the node's signed descriptor. The handshake is ``Noise_XX_25519_ChaChaPoly_BLAKE2b`` (the
``noiseprotocol`` package) with the prologue :data:`PROLOGUE`; its three messages ride in
CONTROL frames ``{"type": "link_auth", "msg": <base64>}`` right after the initiator's HELLO::

    initiator (dials)                                   responder (listens)
    HELLO(MIX) + link_auth[ -> e ]             32 B ─▶
                                   ◀─ link_auth[ <- e, ee, s, es ]  96 B
    rs must be the link key of the node it dialled (else wrong_key)
    link_auth[ -> s, se ]                      64 B ─▶
                                                        rs → the consensus node with that link
                                                        key, from the layer allowed to send here
    PACKET frames ...                                ─▶

Each message has one exact size (the payloads are empty); anything else is refused before it
is parsed. A replayed first or third message fails: the responder's fresh ephemeral key enters
every key the third message is checked with. Every failure raises
:class:`~anonmail.errors.LinkAuthError` with a stable ``reason`` (``truncated``, ``oversized``,
``bad_message``, ``wrong_key``, ``unexpected``) and the link must be closed.

After the handshake the stream carries plain frames: the transports (Tor onion services, I2P
destinations) already encrypt and authenticate the stream end to end; the handshake binds the
peer's node identity to that stream, which the transport alone cannot.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from nacl.bindings import crypto_scalarmult_base
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import NoiseHandshakeError, NoiseInvalidMessage, NoiseValueError

from anonmail.errors import LinkAuthError

__all__ = [
    "PROTOCOL_NAME",
    "PROLOGUE",
    "MESSAGE_BYTES",
    "CONTROL_TYPE",
    "LinkHandshake",
    "generate_link_secret",
    "link_public",
    "encode_message",
    "decode_message",
]

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"anonmail-link-v1"
#: Exact size of handshake message 1, 2 and 3 (empty payloads).
MESSAGE_BYTES = (32, 96, 64)
#: The CONTROL ``type`` that carries a handshake message.
CONTROL_TYPE = "link_auth"


def generate_link_secret() -> bytes:
    """A fresh X25519 link secret (32 random bytes; clamping is X25519's)."""
    return os.urandom(32)


def link_public(secret: bytes) -> bytes:
    """The public link key of a secret (what the descriptor publishes)."""
    return crypto_scalarmult_base(secret)


def encode_message(message: bytes) -> dict:
    """The CONTROL message carrying one handshake message."""
    return {"type": CONTROL_TYPE, "msg": base64.b64encode(message).decode("ascii")}


def decode_message(control: dict, index: int) -> bytes:
    """The handshake message ``index`` (0, 1, 2) out of a CONTROL message; LinkAuthError if malformed."""
    if control.get("type") != CONTROL_TYPE or set(control) != {"type", "msg"} or not isinstance(control["msg"], str):
        raise LinkAuthError("expected a link_auth message", reason="unexpected")
    text = control["msg"]
    limit = MESSAGE_BYTES[index]
    if len(text) > 4 * (limit + 2) // 3 + 4:
        raise LinkAuthError(f"handshake message {index + 1} is oversized", reason="oversized")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LinkAuthError(f"handshake message {index + 1} is not base64", reason="bad_message") from None
    _check_size(data, index)
    return data


def _check_size(data: bytes, index: int) -> None:
    want = MESSAGE_BYTES[index]
    if len(data) < want:
        raise LinkAuthError(f"handshake message {index + 1} is truncated ({len(data)} < {want} bytes)",
                            reason="truncated")
    if len(data) > want:
        raise LinkAuthError(f"handshake message {index + 1} is oversized ({len(data)} > {want} bytes)",
                            reason="oversized")


@dataclass
class LinkHandshake:
    """One side of the handshake as a small state machine: feed it messages, send what it returns.

    ``expected_peer`` (initiator only) is the link key the dialled node publishes. After
    :attr:`finished`, :attr:`peer_key` is the other end's authenticated link key.
    """

    initiator: bool
    static_secret: bytes
    expected_peer: bytes | None = None
    peer_key: bytes | None = None
    _step: int = 0
    _noise: NoiseConnection = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.initiator and self.expected_peer is None:
            raise ValueError("an initiator must know the link key of the node it dials")
        noise = NoiseConnection.from_name(PROTOCOL_NAME)
        if self.initiator:
            noise.set_as_initiator()
        else:
            noise.set_as_responder()
        noise.set_keypair_from_private_bytes(Keypair.STATIC, self.static_secret)
        noise.set_prologue(PROLOGUE)
        noise.start_handshake()
        self._noise = noise

    @property
    def finished(self) -> bool:
        """Whether both ends are authenticated."""
        return self.peer_key is not None and self._step == 3

    def start(self) -> bytes:
        """(Initiator.) The first message."""
        if not self.initiator or self._step != 0:
            raise LinkAuthError("start is the initiator's first step", reason="unexpected")
        self._step = 1
        return bytes(self._noise.write_message())

    def receive(self, message: bytes) -> bytes | None:
        """Take the peer's next message; return ours to send (None when the handshake is done)."""
        index = self._step
        if index > 2 or (index % 2 == 0) != (not self.initiator):
            raise LinkAuthError("handshake message out of turn", reason="unexpected")
        _check_size(message, index)
        state = self._noise.noise_protocol.handshake_state  # kept: the library drops it when done
        try:
            self._noise.read_message(message)
            if self.initiator:  # we read message 2: the responder's static key is known now
                if bytes(state.rs.public_bytes) != self.expected_peer:
                    raise LinkAuthError("the node at this address holds another link key than its descriptor",
                                        reason="wrong_key")
                reply: bytes | None = bytes(self._noise.write_message())
            elif index == 0:
                reply = bytes(self._noise.write_message())
            else:
                reply = None
        except (InvalidTag, NoiseInvalidMessage, NoiseValueError, NoiseHandshakeError, ValueError) as exc:
            # ValueError: cryptography refuses a low-order point (an all-zero shared secret).
            self._step = 3
            raise LinkAuthError(f"handshake message {index + 1} does not verify ({type(exc).__name__})",
                                reason="bad_message") from None
        except LinkAuthError:
            self._step = 3
            raise
        if reply is None or self.initiator:
            self.peer_key = bytes(state.rs.public_bytes)
        self._step = 3 if self.peer_key is not None else index + 2
        return reply
