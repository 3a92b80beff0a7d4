"""The client <-> provider protocol helpers (sans-IO)."""

from __future__ import annotations

import os

import pytest

from anonmail.core.keys import IdentityKey
from anonmail.core.mailproto import (
    ENTRY_DATA_BYTES,
    ENTRY_FRAGMENT,
    ENTRY_REPLY,
    NONCE_BYTES,
    Entry,
    b64d,
    b64e,
    decode_entry,
    dummy_entry,
    encode_entry,
    error_message,
    require_fields,
    sign_auth,
    verify_auth,
)
from anonmail.core.sizes import PACKET_BYTES
from anonmail.errors import ProtocolError


@pytest.mark.parametrize("data", [b"", b"x", os.urandom(3856), os.urandom(ENTRY_DATA_BYTES)])
def test_entries_round_trip_at_one_fixed_size(data):
    entry = Entry(ENTRY_FRAGMENT, 12345, 7, data)
    blob = encode_entry(entry)
    assert len(blob) == PACKET_BYTES
    assert decode_entry(blob) == entry


def test_dummy_entries_have_the_same_size_and_say_what_remains():
    blob = dummy_entry(3)
    assert len(blob) == PACKET_BYTES
    entry = decode_entry(blob)
    assert entry.kind == 0 and entry.remaining == 3 and entry.data == b""
    assert len(encode_entry(Entry(ENTRY_REPLY, 1, 0, os.urandom(16 + 3840)))) == PACKET_BYTES


def test_malformed_entries_are_refused():
    with pytest.raises(ValueError):
        encode_entry(Entry(ENTRY_FRAGMENT, 1, 0, bytes(ENTRY_DATA_BYTES + 1)))
    with pytest.raises(ProtocolError) as info:
        decode_entry(b"short")
    assert info.value.reason == "bad_entry"
    bad_kind = b"\x09" + encode_entry(Entry(ENTRY_FRAGMENT, 1, 0, b"x"))[1:]
    with pytest.raises(ProtocolError):
        decode_entry(bad_kind)


def test_auth_signature_binds_nonce_provider_operation_and_key():
    key, other = IdentityKey.generate(), IdentityKey.generate()
    nonce = os.urandom(NONCE_BYTES)
    signature = sign_auth(key, nonce, "alpha", "login")
    verify_auth(key.public, signature, nonce, "alpha", "login")
    for args in (
        (key.public, signature, os.urandom(NONCE_BYTES), "alpha", "login"),  # another nonce
        (key.public, signature, nonce, "beta", "login"),  # another provider
        (key.public, signature, nonce, "alpha", "register"),  # another operation
        (other.public, signature, nonce, "alpha", "login"),  # another key
        (key.public, bytes(64), nonce, "alpha", "login"),  # garbage
        (key.public, b"short", nonce, "alpha", "login"),
    ):
        with pytest.raises(ProtocolError) as info:
            verify_auth(*args)
        assert info.value.reason == "bad_signature"
    with pytest.raises(ValueError):
        sign_auth(key, nonce, "alpha", "delete")


def test_base64_fields_are_checked():
    assert b64d(b64e(b"abc"), "x") == b"abc"
    for bad in ("not base64!", 12, None, "YWJj\n", "☃"):
        with pytest.raises(ProtocolError) as info:
            b64d(bad, "field")
        assert info.value.reason == "malformed" and "field" in str(info.value)
    with pytest.raises(ProtocolError, match="must be 32 bytes"):
        b64d(b64e(b"abc"), "identity", 32)


def test_require_fields_and_errors():
    require_fields({"type": "fetch"}, [])
    with pytest.raises(ProtocolError, match="missing \\['ids'\\], unexpected \\['x'\\]"):
        require_fields({"type": "confirm", "x": 1}, ["ids"])
    assert error_message("quota", "full") == {"type": "error", "reason": "quota", "message": "full"}
