"""Targets for invitations: the rendezvous requests a provider serves, its answers, and introductions."""

from __future__ import annotations

import itertools

from anonmail.core import strictjson, wire
from anonmail.core.address import Address
from anonmail.core.invite import PAKE_BYTES, SEALED_BYTES, Introduction, decode_introduction, encode_introduction
from anonmail.core.keys import IdentityKey, certify_encryption_key
from anonmail.core.rendezvous import (
    CloseRequest,
    GetRequest,
    JoinRequest,
    OpenRequest,
    PutRequest,
    parse_joined,
    parse_opened,
    parse_request,
    parse_state,
)
from anonmail.errors import InviteError, JSONError, ProtocolError, WireError
from anonmail.provider.node import TokenBucket
from anonmail.provider.rendezvous import RendezvousTable
from fuzz.registry import target

_TOKEN = bytes(range(16))
_ACCOUNT = b"m" * 16
_PARSERS = {"invite_opened": parse_opened, "invite_joined": parse_joined, "invite_state": parse_state}


def _fixed_tokens():
    """Tokens the seeds can name: the table hands out _TOKEN every time."""
    return lambda n: _TOKEN[:n] if n <= 16 else bytes(n)


def _requests_seed(*messages: dict) -> bytes:
    return b"".join(wire.encode_frame(wire.Control(m)) for m in messages)


def _request_seeds():
    join = JoinRequest(7, b"B" + bytes(32)).to_message()
    return [
        _requests_seed(OpenRequest().to_message(), PutRequest(7, _TOKEN, "pake", b"A" + bytes(32)).to_message(),
                       join, PutRequest(7, _TOKEN, "sealed", bytes(SEALED_BYTES)).to_message(),
                       GetRequest(7, _TOKEN).to_message(), CloseRequest(7, _TOKEN, "mismatch").to_message()),
        _requests_seed(join, join, CloseRequest(7, _TOKEN, "done").to_message()),
    ]


@target("rendezvous_request", allowed=(WireError,), seeds=_request_seeds, max_len=16384)
def rendezvous_request(data: bytes) -> None:
    """Accepted requests round-trip; the table answers each with a reply its client parser accepts."""
    table = RendezvousTable(join_bucket=TokenBucket(1000, 1000, 0.0), open_bucket=TokenBucket(1000, 1000, 0.0),
                            randbelow=lambda n: 6, token_bytes=_fixed_tokens())
    accounts = itertools.cycle([_ACCOUNT, None])
    for now, frame in enumerate(wire.FrameDecoder().feed(data)):
        if not isinstance(frame, wire.Control):
            continue
        try:
            request = parse_request(frame.message)
        except ProtocolError as exc:
            assert exc.reason == "malformed"
            continue
        assert parse_request(request.to_message()) == request
        try:
            reply = table.handle(request, account=next(accounts), now=float(now))
        except ProtocolError:
            continue
        kind = reply["type"]
        assert kind == "ok" or _PARSERS[kind](reply).to_message() == reply
        assert len(table) <= table.max_open


def _reply_seeds():
    return [strictjson.dumps({"type": "invite_opened", "nameplate": 5, "token": "AAECAwQFBgcICQoLDA0ODw==",
                              "expires_in": 600}),
            strictjson.dumps({"type": "invite_state", "state": "joined", "pake": "Q" + "A" * 43, "sealed": None})]


@target("rendezvous_reply", allowed=(JSONError, ProtocolError), seeds=_reply_seeds, max_len=16384)
def rendezvous_reply(data: bytes) -> None:
    """A provider's answer: whatever the client parser accepts encodes to a message that parses the same.

    (Text equality would be too strict: base64 with non-zero padding bits decodes, as everywhere.)
    """
    message = strictjson.loads(data, what="reply")
    if not isinstance(message, dict):
        return
    parser = _PARSERS.get(message.get("type"))  # type: ignore[arg-type]
    if parser is not None:
        parsed = parser(message)
        assert parser(parsed.to_message()) == parsed


def _intro_seeds():
    me = IdentityKey.from_seed(bytes([9]) * 32)
    cert = certify_encryption_key(me, bytes(range(32)), not_before=1_800_000_000, lifetime_s=3600)
    intro = Introduction(str(Address.for_key(me.public, "alpha")), me.public, (cert.to_bytes(),), {"prekeys": "AA=="})
    return [encode_introduction(intro, bytes(64))]


@target("introduction", allowed=(InviteError,), seeds=_intro_seeds, max_len=8192)
def introduction(data: bytes) -> None:
    """A decrypted introduction (a code holder may send anything): strict parse, and what parses re-encodes."""
    intro, proof = decode_introduction(data)
    assert len(intro.identity) == 32 and len(proof) == 64 and 1 <= len(intro.certs) <= 4
    assert decode_introduction(encode_introduction(intro, proof)) == (intro, proof)
    assert PAKE_BYTES == 33
