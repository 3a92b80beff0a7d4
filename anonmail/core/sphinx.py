"""Sphinx packets: building, per-hop processing, SURBs — byte-compatible with sphinxmix 0.0.7.

The cryptography is exactly sphinxmix's (``SphinxParams`` with the Curve25519 group,
LIONESS body, HMAC-SHA256 header MAC, AES-CTR routing stream), reimplemented on
``cryptography`` and libsodium because sphinxmix spends most of its per-hop time in
petlib's per-call overhead. ``tests/unit/core/test_sphinx_compat.py`` shows that packets
built here are processed by unmodified sphinxmix functions and vice versa, with identical
outputs, and that with the same random bytes both build identical packets.

One deliberate difference, documented in the README: the blinding scalar. sphinxmix's
``Group_C25519.makeexp`` returns a 16-byte value that libsodium then reads as 32 bytes, i.e.
16 bytes past the end of the Python buffer, so multi-hop packets fail at random. Zero-extending
those 16 bytes (our first definition) left a clamped scalar of the form 2^254 + 8m with
m < 2^125, so linking a mix's input alpha to its output was an interval discrete logarithm of
about 2^62.5 work (audit finding 13). The blinding scalar is now the full 32 bytes
SHA-256(:data:`BLINDING_LABEL` | hb), clamped by X25519 like any scalar (:data:`BLINDING_VERSION`
2; the wire's HELLO version went to 2 with it, so nodes of the two definitions refuse each other
instead of dropping each other's packets). :func:`reference_params
<anonmail.core.petlib_compat.reference_params>` hands sphinxmix the same definition through its
own extension point (a group object).

Wire layout of every packet (:data:`~anonmail.core.sizes.PACKET_BYTES` bytes)::

    +-----------+-------------+------------+------------------------------+
    | alpha 32  |  beta 208   |  gamma 16  |  delta (body) 3840           |
    +-----------+-------------+------------+------------------------------+

Routing information revealed at a hop (sphinxmix ``nodelist`` entries and ``dest``):

* relay (hops that forward)::  0x01 | flags (1) | delay_ms (u32 BE) | next node id (16)
* final, forward message:  msgpack ``["\\xf1"]`` — mailbox id and payload are in the body,
  encoded as msgpack ``[mailbox_id, payload]`` (sphinxmix ``create_forward_message``)
* final, SURB reply:  msgpack ``["\\xf2", mailbox_id, surb_id]`` (sphinxmix ``create_surb``)

Everything here is sans-IO: randomness comes from the ``rng`` argument (a callable
``rng(n) -> n bytes``; the default is :func:`os.urandom`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable, Sequence
from typing import Any
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from anonmail.core.sizes import (
    ALPHA_BYTES,
    BETA_BYTES,
    BODY_BYTES,
    HEADER_BYTES,
    K,
    MAILBOX_ID_BYTES,
    MAX_HOPS,
    NODE_ID_BYTES,
    PACKET_BYTES,
    SPHINX_MAX_LEN,
)
from anonmail.errors import (
    BadGroupElementError,
    BodyTamperedError,
    HeaderMacError,
    NodeKeyError,
    PacketSizeError,
    PayloadTooLargeError,
    ReplayError,
    RoutingError,
)

__all__ = [
    "RandomBytes",
    "Hop",
    "Forward",
    "Deliver",
    "SurbDelivery",
    "Surb",
    "SurbKeys",
    "RELAY_BYTES",
    "SURB_BYTES",
    "PAYLOAD_BYTES",
    "SURB_REPLY_BYTES",
    "MAX_DELAY_MS",
    "generate_node_keypair",
    "build_forward",
    "build_surb",
    "package_surb",
    "open_surb_reply",
    "process",
    "hop_result",
]

RandomBytes = Callable[[int], bytes]

_P = 2**255 - 19
_ZERO_IV = bytes(16)
_BETA_PAD = bytes(2 * SPHINX_MAX_LEN)

#: The five 16-byte "flavours" sphinxmix derives per-hop keys with (AES of each under aes_s).
_FLAVOURS = b"hbhbhbhbhbhbhbhb" + b"hrhohrhohrhohrho" + b"hmu:hmu:hmu:hmu:" + b"htauhtauhtauhtau" + b"hpi:hpi:hpi:hpi:"

_RELAY_KIND = 0x01
_RELAY = struct.Struct(">BBI16s")
#: Size of a relay command revealed at a forwarding hop.
RELAY_BYTES = _RELAY.size
#: Flags a relay command may carry (none are defined yet; unknown bits are rejected).
KNOWN_FLAGS = 0x00
#: Longest per-hop delay a relay command can carry.
MAX_DELAY_MS = 2**32 - 1

_DEST_FINAL = b"\x91\xa2\xc3\xb1"  # msgpack ["\xf1"] as sphinxmix encodes Dest_flag
_SURB_FINAL_PREFIX = b"\x93\xa2\xc3\xb2"  # msgpack array of 3, then "\xf2"
_BIN8_16 = b"\xc4\x10"  # msgpack bin8 header for 16 bytes

#: Largest payload one forward packet carries (msgpack [mailbox_id, payload] in the padded body).
PAYLOAD_BYTES = BODY_BYTES - K - 1 - (1 + 2 + MAILBOX_ID_BYTES + 3)
#: Largest message a SURB reply carries.
SURB_REPLY_BYTES = BODY_BYTES - K - 1
#: Serialized SURB: first hop node id | header | ktilde.
SURB_BYTES = NODE_ID_BYTES + HEADER_BYTES + K


# --------------------------------------------------------------------------- primitives


try:  # the cipher context Cipher(...).encryptor() returns, without its per-call type checks
    from cryptography.hazmat.bindings._rust import openssl as _rust_openssl

    _new_encryptor = _rust_openssl.ciphers.create_encryption_ctx
except (ImportError, AttributeError):  # a cryptography without it: the public API, same bytes

    def _new_encryptor(algorithm: Any, mode: Any) -> Any:
        return Cipher(algorithm, mode).encryptor()


_ECB = modes.ECB()

#: Domain label of the blinding scalar's hash (see the module docstring).
BLINDING_LABEL = b"anonmail-sphinx-blinding-v2"
#: Which blinding definition this code uses; the compiled helper must say the same.
BLINDING_VERSION = 2


try:  # the hop's AES/SHA-256/HMAC in C (anonmail/core/_sphinxfast.pyx), built by pip install -e .
    from anonmail.core import _sphinxfast as _fast
except ImportError:  # not built (no compiler or OpenSSL headers): the same bytes from the code below
    _fast = None
if _fast is not None and getattr(_fast, "BLINDING_VERSION", 1) != BLINDING_VERSION:
    _fast = None  # built from an older source (another blinding): rebuild with pip install -e .


def _aes_ecb(key: bytes, data: bytes) -> bytes:
    return _new_encryptor(algorithms.AES(key), _ECB).update(data)


def _aes_ctr(key: bytes, data: bytes, iv: bytes = _ZERO_IV) -> bytes:
    return _new_encryptor(algorithms.AES(key), modes.CTR(iv)).update(data)


def _xor16(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


def _mu(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")[:K]


def _aes_key(s: bytes) -> bytes:
    """sphinxmix ``get_aes_key``: the per-hop AES key from the shared secret ``s``."""
    return hashlib.sha256(b"aes_key:" + s).digest()[:K]


def _hop_keys(aes_s: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """Return (hb, hrho, hmu, htau, hpi) for ``aes_s``: one AES-ECB call for all five."""
    m = _aes_ecb(aes_s, _FLAVOURS)
    return m[0:16], m[16:32], m[32:48], m[48:64], m[64:80]


def _blinding(hb: bytes) -> bytes:
    """The 32-byte blinding scalar, full width: SHA-256(label | hb) (see the module docstring)."""
    return hashlib.sha256(BLINDING_LABEL + hb).digest()


def _sha256_tail(data: bytes, key: bytes, label: bytes) -> bytes:
    """sha256(data + key + label)[:K] without copying the 3.8 kB ``data``."""
    h = hashlib.sha256(data)
    h.update(key + label)
    return h.digest()[:K]


class _AesStream:
    """Every AES use of one key from a single CTR context: CTR from any nonce, and one block of
    ECB as CTR at nonce = that block. Building a cipher context costs more than the AES work
    on a 3.8 kB body, so LIONESS builds one instead of three."""

    __slots__ = ("_ctx", "_reset")

    def __init__(self, key: bytes, nonce: bytes) -> None:
        self._ctx = _new_encryptor(algorithms.AES(key), modes.CTR(nonce))
        self._reset = getattr(self._ctx, "reset_nonce", None)  # cryptography >= 43
        if self._reset is None:
            aes = algorithms.AES(key)

            def fresh(nonce: bytes) -> None:
                self._ctx = _new_encryptor(aes, modes.CTR(nonce))

            self._reset = fresh

    def ctr(self, nonce: bytes, data: bytes) -> bytes:
        """AES-CTR of ``data`` from counter ``nonce``."""
        self._reset(nonce)
        return self._ctx.update(data)

    def first(self, data: bytes) -> bytes:
        """AES-CTR of ``data`` from the nonce the stream was made with (no reset needed)."""
        return self._ctx.update(data)


def _lioness_enc(key: bytes, m: bytes) -> bytes:
    k1 = _sha256_tail(m[K:], key, b"1")
    aes = _AesStream(key, k1)
    left = aes.first(m[:K])  # m[:K] xor AES(k1)
    right = aes.ctr(left, m[K:])
    k3 = _sha256_tail(right, key, b"3")
    left = aes.ctr(k3, left)  # left xor AES(k3)
    return left + aes.ctr(left, right)


def _lioness_dec(key: bytes, m: bytes) -> bytes:
    left = m[:K]
    aes = _AesStream(key, left)
    right = aes.first(m[K:])
    k3 = _sha256_tail(right, key, b"3")
    left = aes.ctr(k3, left)
    right = aes.ctr(left, right)
    k1 = _sha256_tail(right, key, b"1")
    return aes.ctr(k1, left) + right


def _pad_body(size: int, body: bytes) -> bytes:
    body = body + b"\x7f"
    return body + b"\xff" * (size - len(body))


def _unpad_body(body: bytes) -> bytes:
    stripped = body.rstrip(b"\xff")
    if stripped.endswith(b"\x7f"):
        return stripped[:-1]
    return b""


def _msgpack_bin(data: bytes) -> bytes:
    n = len(data)
    if n < 0x100:
        return b"\xc4" + bytes([n]) + data
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big") + data
    return b"\xc6" + n.to_bytes(4, "big") + data


def _read_msgpack_bin(buf: bytes, pos: int) -> tuple[bytes, int]:
    """Read one msgpack bin object at ``pos``; return (value, next position)."""
    if pos >= len(buf):
        raise RoutingError("payload encoding ends early")
    head = buf[pos]
    width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(head)
    if width is None:
        raise RoutingError(f"payload encoding: expected a byte string at offset {pos}")
    start = pos + 1 + width
    if start > len(buf):
        raise RoutingError("payload encoding ends early")
    end = start + int.from_bytes(buf[pos + 1 : start], "big")
    if end > len(buf):
        raise RoutingError("payload encoding: byte string runs past the body")
    return buf[start:end], end


def _encode_dest_payload(mailbox_id: bytes, payload: bytes) -> bytes:
    return b"\x92" + _msgpack_bin(mailbox_id) + _msgpack_bin(payload)


def _decode_dest_payload(data: bytes) -> tuple[bytes, bytes]:
    if not data.startswith(b"\x92"):
        raise RoutingError("payload encoding: expected [mailbox id, payload]")
    dest, pos = _read_msgpack_bin(data, 1)
    payload, pos = _read_msgpack_bin(data, pos)
    if pos != len(data):
        raise RoutingError("payload encoding: trailing bytes after payload")
    return dest, payload


def generate_node_keypair(rng: RandomBytes = os.urandom) -> tuple[bytes, bytes]:
    """Return a (secret, public) Curve25519 pair for a node's Sphinx key."""
    secret = rng(32)
    return secret, crypto_scalarmult_base(secret)


# --------------------------------------------------------------------------- sphinxmix core


def _create_header(
    nodelist: Sequence[bytes], route: Sequence[Hop], dest: bytes, rng: RandomBytes
) -> tuple[tuple[bytes, bytes, bytes], list[bytes]]:
    """sphinxmix ``create_header`` (no associated data): return ((alpha, beta, gamma), secrets).

    A hop whose public key is unusable (small order: libsodium refuses the shared secret) raises
    NodeKeyError naming that hop, so the caller can leave the node out and build again.
    """
    keys = [h.public_key for h in route]
    nu = len(nodelist)
    node_meta = [bytes([len(n)]) + n for n in nodelist]
    x = rng(32)
    aes_keys: list[bytes] = []
    hrhos: list[bytes] = []
    hmus: list[bytes] = []
    alpha = first_alpha = crypto_scalarmult_base(x)
    blinds: list[bytes] = [x]
    for i, key in enumerate(keys):
        if i:
            alpha = crypto_scalarmult(blinds[-1], alpha)
        s = key
        try:
            for f in blinds:
                s = crypto_scalarmult(f, s)
        except RuntimeError:  # nacl.exceptions.RuntimeError: an all-zero shared secret
            raise NodeKeyError(f"hop {i + 1}'s Sphinx key is of small order", node_id=route[i].node_id) from None
        aes_s = _aes_key(s)
        hb, hrho, hmu, _, _ = _hop_keys(aes_s)
        aes_keys.append(aes_s)
        hrhos.append(hrho)
        hmus.append(hmu)
        blinds.append(_blinding(hb))

    phi = b""
    min_len = SPHINX_MAX_LEN - 32
    for i in range(1, nu):
        plain = phi + bytes(K + len(node_meta[i]))
        phi = _aes_ctr(hrhos[i - 1], bytes(min_len) + plain)[min_len:]
        min_len -= len(node_meta[i]) + K

    final_routing = bytes([len(dest)]) + dest
    len_meta = sum(map(len, node_meta[1:]))
    pad_len = (SPHINX_MAX_LEN - 32) - len_meta - (nu - 1) * K - len(final_routing)
    if pad_len < 0:
        raise RoutingError(f"route of {nu} hops does not fit into the {BETA_BYTES}-byte header")
    beta = _aes_ctr(hrhos[nu - 1], final_routing + rng(pad_len)) + phi
    gamma = _mu(hmus[nu - 1], beta)
    for i in range(nu - 2, -1, -1):
        node_id = node_meta[i + 1]
        plain_len = (SPHINX_MAX_LEN - 32) - K - len(node_id)
        beta = _aes_ctr(hrhos[i], node_id + gamma + beta[:plain_len])
        gamma = _mu(hmus[i], beta)
    return (first_alpha, beta, gamma), aes_keys


def _hpi(aes_s: bytes) -> bytes:
    return _aes_ecb(aes_s, b"hpi:hpi:hpi:hpi:")


def _unwrap(
    secret: bytes,
    alpha: bytes,
    beta: bytes,
    gamma: bytes,
    delta: bytes,
    is_replay: Callable[[bytes], bool] | None = None,
) -> tuple[bytes, bytes, tuple[bytes, bytes, bytes], bytes, bytes]:
    """sphinxmix ``sphinx_process``: return (tag, routing, (alpha, beta, gamma), delta, mac_key)."""
    if int.from_bytes(alpha, "little") >= _P:
        raise BadGroupElementError("alpha is not a canonical Curve25519 point")
    try:
        s = crypto_scalarmult(secret, alpha)
    except RuntimeError as exc:  # libsodium refuses low-order points (all-zero result)
        raise BadGroupElementError("alpha is a low-order point") from exc
    fast = _fast
    if fast is not None:
        keys = fast.header_keys(s, beta, gamma)
        if keys is None:
            raise HeaderMacError("header MAC mismatch (tampered, or not addressed to this node)")
        hb, hrho, htau, hpi = keys
    else:
        hb, hrho, hmu, htau, hpi = _hop_keys(_aes_key(s))
        if not hmac.compare_digest(gamma, _mu(hmu, beta)):
            raise HeaderMacError("header MAC mismatch (tampered, or not addressed to this node)")
    if is_replay is not None and is_replay(htau):
        raise ReplayError("packet tag already seen in this epoch")
    if fast is not None:
        b, body = fast.unwrap(hrho, beta, hpi, delta)
    else:
        b, body = _aes_ctr(hrho, beta + _BETA_PAD), _lioness_dec(hpi, delta)
    length = b[0]
    routing = b[1 : 1 + length]
    rest = b[1 + length :]
    new_alpha = crypto_scalarmult(_blinding(hb), alpha)
    header = (new_alpha, rest[K : K + BETA_BYTES], rest[:K])
    return htau, routing, header, body, hpi


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True, slots=True)
class Hop:
    """One node on a route: its id, its Sphinx public key, and how long it holds the packet."""

    node_id: bytes
    public_key: bytes
    delay_ms: int = 0

    def __post_init__(self) -> None:
        if len(self.node_id) != NODE_ID_BYTES:
            raise ValueError(f"node id must be {NODE_ID_BYTES} bytes, got {len(self.node_id)}")
        if len(self.public_key) != 32:
            raise ValueError(f"Sphinx public key must be 32 bytes, got {len(self.public_key)}")
        if not 0 <= self.delay_ms <= MAX_DELAY_MS:
            raise ValueError(f"delay_ms must be in 0..{MAX_DELAY_MS}, got {self.delay_ms}")


@dataclass(frozen=True, slots=True)
class Forward:
    """Decision: hold ``packet`` for ``delay_ms`` then send it to ``next_node``."""

    next_node: bytes
    delay_ms: int
    flags: int
    packet: bytes
    tag: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    """Decision: this hop is the egress provider; store ``payload`` in mailbox ``mailbox_id``."""

    mailbox_id: bytes
    payload: bytes
    tag: bytes


@dataclass(frozen=True, slots=True)
class SurbDelivery:
    """Decision: a SURB reply for mailbox ``mailbox_id``; its owner opens ``body`` by ``surb_id``."""

    mailbox_id: bytes
    surb_id: bytes
    body: bytes
    tag: bytes


@dataclass(frozen=True, slots=True)
class Surb:
    """A single-use reply block as handed to the party that will reply (it learns no route)."""

    first_hop: bytes
    header: bytes
    ktilde: bytes

    def to_bytes(self) -> bytes:
        """Serialize to exactly :data:`SURB_BYTES` bytes."""
        return self.first_hop + self.header + self.ktilde

    @classmethod
    def from_bytes(cls, data: bytes) -> Surb:
        """Parse a serialized SURB; raise :class:`PacketSizeError` on a wrong length."""
        if len(data) != SURB_BYTES:
            raise PacketSizeError(f"SURB must be {SURB_BYTES} bytes, got {len(data)}")
        return cls(
            data[:NODE_ID_BYTES],
            data[NODE_ID_BYTES : NODE_ID_BYTES + HEADER_BYTES],
            data[NODE_ID_BYTES + HEADER_BYTES :],
        )


@dataclass(frozen=True, slots=True)
class SurbKeys:
    """What the SURB's creator keeps to open the reply: its id, ktilde and the per-hop keys."""

    surb_id: bytes
    ktilde: bytes
    hop_keys: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"SurbKeys(surb_id={self.surb_id.hex()}, hops={len(self.hop_keys)})"


def _relay_command(next_node: bytes, delay_ms: int, flags: int = 0) -> bytes:
    return _RELAY.pack(_RELAY_KIND, flags, delay_ms, next_node)


def _nodelist(route: Sequence[Hop]) -> list[bytes]:
    """sphinxmix ``nodelist``: entry i+1 is what hop i learns (next node, its own delay)."""
    if not 1 <= len(route) <= MAX_HOPS:
        raise ValueError(f"a route has 1..{MAX_HOPS} hops, got {len(route)}")
    if route[-1].delay_ms:
        raise ValueError("the last hop delivers at once: its delay_ms must be 0")
    return [route[0].node_id] + [
        _relay_command(route[i + 1].node_id, route[i].delay_ms) for i in range(len(route) - 1)
    ]


def build_forward(
    route: Sequence[Hop], mailbox_id: bytes, payload: bytes, rng: RandomBytes = os.urandom
) -> bytes:
    """Build a forward packet through ``route`` delivering ``payload`` to ``mailbox_id``."""
    if len(mailbox_id) != MAILBOX_ID_BYTES:
        raise ValueError(f"mailbox id must be {MAILBOX_ID_BYTES} bytes, got {len(mailbox_id)}")
    if len(payload) > PAYLOAD_BYTES:
        raise PayloadTooLargeError(f"payload of {len(payload)} bytes exceeds {PAYLOAD_BYTES}")
    nodelist = _nodelist(route)
    (alpha, beta, gamma), secrets = _create_header(
        nodelist, route, _DEST_FINAL, rng
    )
    hpis = [_hpi(s) for s in secrets]
    body = _pad_body(BODY_BYTES - K, _encode_dest_payload(mailbox_id, payload))
    delta = _mu(hpis[-1], body) + body
    for key in reversed(hpis):
        delta = _lioness_enc(key, delta)
    return alpha + beta + gamma + delta


def build_surb(
    route: Sequence[Hop], mailbox_id: bytes, rng: RandomBytes = os.urandom
) -> tuple[SurbKeys, Surb]:
    """Create a SURB whose replies travel ``route`` to ``mailbox_id``; keep the keys, hand out the SURB."""
    if len(mailbox_id) != MAILBOX_ID_BYTES:
        raise ValueError(f"mailbox id must be {MAILBOX_ID_BYTES} bytes, got {len(mailbox_id)}")
    nodelist = _nodelist(route)
    surb_id = rng(K)
    final = _SURB_FINAL_PREFIX + _BIN8_16 + mailbox_id + _BIN8_16 + surb_id
    (alpha, beta, gamma), secrets = _create_header(
        nodelist, route, final, rng
    )
    ktilde = rng(K)
    keys = SurbKeys(surb_id, ktilde, tuple(_hpi(s) for s in secrets))
    return keys, Surb(route[0].node_id, alpha + beta + gamma, ktilde)


def package_surb(surb: Surb, message: bytes) -> bytes:
    """Build the reply packet for ``surb`` carrying ``message``; send it to ``surb.first_hop``."""
    if len(message) > SURB_REPLY_BYTES:
        raise PayloadTooLargeError(f"reply of {len(message)} bytes exceeds {SURB_REPLY_BYTES}")
    body = _pad_body(BODY_BYTES - K, message)
    return surb.header + _lioness_enc(surb.ktilde, _mu(surb.ktilde, body) + body)


def open_surb_reply(keys: SurbKeys, body: bytes) -> bytes:
    """Recover the reply message from a delivered SURB body; raise BodyTamperedError if modified."""
    if len(body) != BODY_BYTES:
        raise PacketSizeError(f"SURB reply body must be {BODY_BYTES} bytes, got {len(body)}")
    delta = body
    for key in reversed(keys.hop_keys):
        delta = _lioness_enc(key, delta)
    delta = _lioness_dec(keys.ktilde, delta)
    if not hmac.compare_digest(delta[:K], _mu(keys.ktilde, delta[K:])):
        raise BodyTamperedError("SURB reply body was modified in transit")
    return _unpad_body(delta[K:])


def process(
    packet: bytes, secret: bytes, *, is_replay: Callable[[bytes], bool] | None = None
) -> Forward | Deliver | SurbDelivery:
    """Unwrap one layer of ``packet`` with this node's Sphinx ``secret`` and say what to do next.

    ``is_replay(tag)`` is consulted right after the header MAC verifies and before the costly
    work, so replays are cheap to drop. Raises a :class:`~anonmail.errors.PacketError` subclass
    for every packet that must be dropped (its ``reason`` names the counter to bump).
    """
    if len(packet) != PACKET_BYTES:
        raise PacketSizeError(f"packet must be {PACKET_BYTES} bytes, got {len(packet)}")
    tag, routing, (alpha, beta, gamma), delta, mac_key = _unwrap(
        secret,
        packet[:ALPHA_BYTES],
        packet[ALPHA_BYTES : ALPHA_BYTES + BETA_BYTES],
        packet[ALPHA_BYTES + BETA_BYTES : HEADER_BYTES],
        packet[HEADER_BYTES:],
        is_replay,
    )
    return hop_result(tag, routing, alpha + beta + gamma + delta, mac_key)


def hop_result(tag: bytes, routing: bytes, forwarded: bytes, mac_key: bytes) -> Forward | Deliver | SurbDelivery:
    """What an unwrapped hop asks for, from its routing command and the packet it leaves (shared by the batch path)."""
    if len(routing) == RELAY_BYTES and routing[0] == _RELAY_KIND:
        _, flags, delay_ms, next_node = _RELAY.unpack(routing)
        if flags & ~KNOWN_FLAGS:
            raise RoutingError(f"relay command has unknown flags 0x{flags:02x}")
        return Forward(next_node, delay_ms, flags, forwarded, tag)
    delta = forwarded[HEADER_BYTES:]
    if routing == _DEST_FINAL:
        if not hmac.compare_digest(delta[:K], _mu(mac_key, delta[K:])):
            raise BodyTamperedError("body MAC mismatch at the final hop")
        mailbox_id, payload = _decode_dest_payload(_unpad_body(delta[K:]))
        if len(mailbox_id) != MAILBOX_ID_BYTES:
            raise RoutingError(f"mailbox id must be {MAILBOX_ID_BYTES} bytes, got {len(mailbox_id)}")
        return Deliver(mailbox_id, payload, tag)
    if (
        len(routing) == len(_SURB_FINAL_PREFIX) + 2 * (2 + K)
        and routing.startswith(_SURB_FINAL_PREFIX)
        and routing[4:6] == _BIN8_16
        and routing[22:24] == _BIN8_16
    ):
        return SurbDelivery(routing[6:22], routing[24:40], delta, tag)
    raise RoutingError("unknown routing command")
