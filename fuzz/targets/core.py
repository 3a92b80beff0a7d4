"""Targets for the sans-IO core: JSON, frames, Sphinx, payloads, fragments, envelopes, entries,
addresses and transport URIs."""

from __future__ import annotations

import random
import struct

from nacl.public import PrivateKey, SealedBox

from anonmail.core import envelope as E
from anonmail.core import fragments as F
from anonmail.core import linkauth, mailproto, sphinx, strictjson, wire
from anonmail.core.address import Address, parse_address
from anonmail.core.keys import IdentityKey, node_id
from anonmail.core.sizes import BODY_BYTES, MAILBOX_ID_BYTES, PACKET_BYTES
from anonmail.core.uri import parse_transport_address
from anonmail.errors import (
    AddressError,
    FragmentError,
    JSONError,
    LinkAuthError,
    PacketError,
    ProtocolError,
    ReassemblyError,
    TransportAddressError,
    WireError,
)
from fuzz.registry import target

# Fixed keys, so every run of a target sees the same node and the same recipient.
_rng = random.Random(17)
_NODE_SECRET = bytes(_rng.randbytes(32))
_NODE_PUBLIC = bytes(PrivateKey(_NODE_SECRET).public_key)
_NODE_ID = node_id(IdentityKey.from_seed(bytes(32)).public)
_OTHER_ID = node_id(IdentityKey.from_seed(bytes([1]) * 32).public)
_SENDER = IdentityKey.from_seed(bytes([2]) * 32)
_SENDER_ADDRESS = Address.for_key(_SENDER.public, "alpha")
_RECIPIENT = IdentityKey.from_seed(bytes([3]) * 32)
_RECIPIENT_ADDRESS = Address.for_key(_RECIPIENT.public, "beta")
_RECIPIENT_SECRET = bytes(_rng.randbytes(32))
_RECIPIENT_PUBLIC = bytes(PrivateKey(_RECIPIENT_SECRET).public_key)
_RECIPIENT_BOX = SealedBox(PrivateKey(_RECIPIENT_SECRET).public_key)


def _randbytes(seed: int):
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


# --------------------------------------------------------------------------- JSON and frames

def _json_seeds():
    return [b'{"type":"fetch"}', b'{"a":[1,-2,3.5,true,null,"\\u00e9"],"b":{"c":9223372036854775807}}',
            b"[[[[[[[[1]]]]]]]]", b'"\\ud800"', b"1e400"]


@target("strict_json", allowed=(JSONError,), seeds=_json_seeds)
def strict_json(data: bytes) -> None:
    """Anything loads accepts obeys the bounds and survives a canonical round trip."""
    value = strictjson.loads(data)
    assert strictjson.loads(strictjson.dumps(value)) == value


def _frame_seeds():
    frames = [wire.Hello(wire.PROTOCOL_VERSION, wire.Role.CLIENT), wire.Control({"type": "fetch"}),
              wire.Control({"type": "confirm", "ids": [1, 2, 2**62]}), wire.Close(0, "bye"),
              wire.Packet(bytes(PACKET_BYTES))]
    return [b"".join(wire.encode_frame(f) for f in frames[:4]), wire.encode_frame(frames[4])]


@target("wire_frames", allowed=(WireError,), seeds=_frame_seeds, max_len=2 * PACKET_BYTES)
def wire_frames(data: bytes) -> None:
    """Frames decoded from a stream (fed in two pieces) encode back to the same frames."""
    decoder = wire.FrameDecoder()
    cut = data[0] if data else 0
    frames = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
    for frame in frames:
        again = wire.FrameDecoder().feed(wire.encode_frame(frame))
        assert again == [frame], frame


# --------------------------------------------------------------------------- Sphinx

def _sphinx_seeds():
    here = sphinx.Hop(_NODE_ID, _NODE_PUBLIC, 0)
    other = sphinx.Hop(_OTHER_ID, _NODE_PUBLIC, 5)
    mailbox = bytes(MAILBOX_ID_BYTES)
    deliver = sphinx.build_forward([here], mailbox, b"payload", _randbytes(1))
    forward = sphinx.build_forward([here, other, sphinx.Hop(_OTHER_ID, _NODE_PUBLIC, 0)], mailbox, b"x",
                                   _randbytes(2))
    _keys, surb = sphinx.build_surb([here], mailbox, _randbytes(3))
    reply = sphinx.package_surb(surb, b"ack")
    return [deliver, forward, reply]


@target("sphinx_process", allowed=(PacketError,), seeds=_sphinx_seeds, max_len=PACKET_BYTES + 64)
def sphinx_process(data: bytes) -> None:
    """Unwrapping a packet gives a well-formed decision or a PacketError, nothing else."""
    result = sphinx.process(data, _NODE_SECRET, is_replay=lambda tag: False)
    if isinstance(result, sphinx.Forward):
        assert len(result.packet) == PACKET_BYTES and len(result.next_node) == len(_NODE_ID)
    elif isinstance(result, sphinx.Deliver):
        assert len(result.mailbox_id) == MAILBOX_ID_BYTES
    else:
        assert isinstance(result, sphinx.SurbDelivery) and len(result.body) == BODY_BYTES


_SURB_KEYS, _SURB = sphinx.build_surb([sphinx.Hop(_NODE_ID, _NODE_PUBLIC, 0)], bytes(MAILBOX_ID_BYTES),
                                      _randbytes(4))


def _surb_reply_seeds():
    return [sphinx.process(sphinx.package_surb(_SURB, F.ACK_MESSAGE), _NODE_SECRET).body]  # type: ignore[union-attr]


@target("sphinx_surb_reply", allowed=(PacketError,), seeds=_surb_reply_seeds, max_len=BODY_BYTES + 64)
def sphinx_surb_reply(data: bytes) -> None:
    """Opening a reply body with our SURB keys: the reply, or a PacketError (tampered, wrong size)."""
    message = sphinx.open_surb_reply(_SURB_KEYS, data)
    assert isinstance(message, bytes) and len(message) <= BODY_BYTES


# --------------------------------------------------------------------------- payloads and fragments

def _seal(message: bytes, index: int = 0) -> bytes:
    frag = F.split_message(message, bytes(16))[index]
    return F.seal_fragment(frag, sender=_SENDER, sender_address=_SENDER_ADDRESS,
                           recipient_key=_RECIPIENT_PUBLIC, recipient_address=_RECIPIENT_ADDRESS,
                           recipient_identity=_RECIPIENT.public)


def _payload_seeds():
    return [F.encode_fragment_payload(_SURB, _seal(b"hello")), F.encode_cover_payload(F.KIND_DROP, _randbytes(5))]


@target("sphinx_payload", allowed=(FragmentError, PacketError), seeds=_payload_seeds, max_len=BODY_BYTES)
def sphinx_payload(data: bytes) -> None:
    """A delivered payload is a fragment with its ACK SURB, or cover; SURBs round-trip."""
    payload = F.decode_payload(data)
    if isinstance(payload, F.FragmentPayload):
        assert sphinx.Surb.from_bytes(payload.ack_surb.to_bytes()) == payload.ack_surb
        assert len(payload.sealed) == F.SEALED_FRAGMENT_BYTES


def _plain_seeds():
    plain = SealedBox(PrivateKey(_RECIPIENT_SECRET)).decrypt(_seal(b"hello"))
    return [plain, SealedBox(PrivateKey(_RECIPIENT_SECRET)).decrypt(_seal(bytes(F.FRAGMENT_DATA_BYTES + 5), 1))]


@target("fragment_open", allowed=(FragmentError,), seeds=_plain_seeds, max_len=F.SEALED_FRAGMENT_BYTES)
def fragment_open(data: bytes) -> None:
    """A fragment's plaintext (sealed here to our key) opens to a consistent fragment or fails typed."""
    sealed = _RECIPIENT_BOX.encrypt(data)
    if len(sealed) != F.SEALED_FRAGMENT_BYTES:
        return  # only one size is ever sealed; other sizes are rejected before decryption
    opened = F.open_fragment(sealed, recipient_keys=[_RECIPIENT_SECRET], recipient_address=_RECIPIENT_ADDRESS,
                             recipient=_RECIPIENT)
    frag = opened.fragment
    assert 0 <= frag.index < frag.count == F.fragment_count(frag.total_length)
    assert opened.sender.fingerprint == _SENDER_ADDRESS.fingerprint


_FRAG_HEAD = struct.Struct(">BBHHI")  # sender, message, index, count, total


def _reassembly_seeds():
    message = bytes(range(256)) * 30
    parts = []
    for frag in F.split_message(message, bytes(16)):
        parts.append(_FRAG_HEAD.pack(0, 0, frag.index, frag.count, frag.total_length) + bytes([len(frag.data) % 256]))
    return [b"".join(parts), _FRAG_HEAD.pack(1, 2, 0, 1, 5) + b"\x05"]


@target("reassembly", allowed=(ReassemblyError,), seeds=_reassembly_seeds)
def reassembly(data: bytes) -> None:
    """Fragments in any order, repeated or contradictory: each message completes at most once, whole."""
    senders = [Address.for_key(bytes([i]) * 32, "alpha") for i in range(4)]
    assembler = F.Reassembler(max_pending=4, max_pending_bytes=64 * 1024, remember_completed=8)
    completed: dict[tuple[bytes, bytes], bytes] = {}
    step = _FRAG_HEAD.size + 1
    for offset in range(0, len(data) - step + 1, step):
        who, msg, index, count, total = _FRAG_HEAD.unpack_from(data, offset)
        total %= 3 * F.FRAGMENT_DATA_BYTES
        fill = data[offset + _FRAG_HEAD.size]
        length = max(0, min(F.FRAGMENT_DATA_BYTES, total - index * F.FRAGMENT_DATA_BYTES))
        frag = F.Fragment(bytes([msg % 4]) * 16, index % 4, count % 5, total, bytes([fill]) * length)
        try:
            F._check_fragment(frag)
        except FragmentError:
            continue  # open_fragment never lets such a fragment through
        sender = senders[who % 4]
        whole = assembler.add(F.OpenedFragment(sender, bytes(32), frag))
        if whole is not None:
            key = (sender.fingerprint, frag.message_id)
            assert key not in completed, "a message completed twice"
            assert len(whole) == frag.total_length
            completed[key] = whole
        assert assembler.pending_bytes <= 64 * 1024 + F.FRAGMENT_DATA_BYTES


# --------------------------------------------------------------------------- envelopes and entries

def _envelope_seeds():
    keys = b'{"certs":["AAAA"],"sent_at":5,"type":"keys","v":1}'
    return [E.encode_mail("hi", b"body", sent_at=1_700_000_000), len(keys).to_bytes(4, "big") + keys]


@target("envelope", allowed=(FragmentError,), seeds=_envelope_seeds)
def envelope(data: bytes) -> None:
    """A decoded mail envelope re-encodes to one that decodes the same; fields stay in range."""
    decoded = E.decode_envelope(data)
    assert 0 <= decoded.sent_at <= E.MAX_SENT_AT
    if decoded.type == "mail" and "\n" not in decoded.subject and "\r" not in decoded.subject:
        again = E.decode_envelope(E.encode_mail(decoded.subject, decoded.body, sent_at=decoded.sent_at))
        assert again == decoded


def _entry_seeds():
    return [mailproto.encode_entry(mailproto.Entry(mailproto.ENTRY_FRAGMENT, 7, 3, b"data"), _randbytes(6)),
            mailproto.dummy_entry(0, _randbytes(7))]


@target("mailbox_entry", allowed=(ProtocolError,), seeds=_entry_seeds, max_len=PACKET_BYTES + 64)
def mailbox_entry(data: bytes) -> None:
    """A fetched entry decodes to fields that encode back to the same entry."""
    entry = mailproto.decode_entry(data)
    assert mailproto.decode_entry(mailproto.encode_entry(entry, _randbytes(8))) == entry


# --------------------------------------------------------------------------- addresses and URIs

def _address_seeds():
    return [str(_SENDER_ADDRESS).encode(), str(_RECIPIENT_ADDRESS).upper().encode(), b"x@y"]


@target("address", allowed=(AddressError,), seeds=_address_seeds, max_len=512)
def address(data: bytes) -> None:
    """An address that parses prints to a canonical form that parses to the same address."""
    parsed = parse_address(data.decode("utf-8", errors="replace"))
    assert parse_address(str(parsed)) == parsed


def _uri_seeds():
    uris = [b"tcp://127.0.0.1:7000", b"tcp://[::1]:1", b"mem://mix-1-0", b"i2p://" + b"a" * 52 + b".b32.i2p",
            b"onion://" + b"a" * 56 + b".onion:7000"]
    return [b"\x00" + u for u in uris] + [b"\x01" + uris[-1]]


@target("transport_uri", allowed=(TransportAddressError,), seeds=_uri_seeds, max_len=512)
def transport_uri(data: bytes) -> None:
    """A transport URI that parses prints back to a URI that parses to the same address."""
    production = bool(data[:1]) and data[0] & 1 == 1
    parsed = parse_transport_address(data[1:].decode("utf-8", errors="replace"), production=production)
    assert parse_transport_address(str(parsed), production=production) == parsed


# --------------------------------------------------------------------------- link handshake

_LINK_SECRET = bytes(_rng.randbytes(32))
_PEER_LINK_SECRET = bytes(_rng.randbytes(32))


def _link_seeds():
    initiator = linkauth.LinkHandshake(True, _PEER_LINK_SECRET, linkauth.link_public(_LINK_SECRET))
    first = wire.encode_frame(wire.Control(linkauth.encode_message(initiator.start())))
    third = wire.encode_frame(wire.Control(linkauth.encode_message(bytes(64))))
    return [first + third, first, wire.encode_frame(wire.Control({"type": "link_auth", "msg": "AAAA"}))]


@target("link_handshake", allowed=(LinkAuthError, WireError), seeds=_link_seeds, max_len=4096)
def link_handshake(data: bytes) -> None:
    """A responder fed a stranger's frames: typed refusals only, and never a peer it cannot prove."""
    responder = linkauth.LinkHandshake(False, _LINK_SECRET)
    for frame in wire.FrameDecoder().feed(data):
        if not isinstance(frame, wire.Control):
            raise LinkAuthError("expected a link_auth message", reason="unexpected")
        index = 0 if responder._step == 0 else 2
        responder.receive(linkauth.decode_message(frame.message, index))
        # Message 3 is bound to the responder's fresh ephemeral key: no input can complete it.
        assert not responder.finished
