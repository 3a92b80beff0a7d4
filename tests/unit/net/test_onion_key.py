"""Creating a node's onion key offline: the address is known before tor ever sees the key."""

from __future__ import annotations

import base64
import hashlib
import stat

import pytest
from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp

from anonmail.core.uri import parse_transport_address
from anonmail.errors import KeyFileError
from anonmail.net.tor import ONION_KEY_FILE, create_onion_key, load_onion_key, onion_host

pytestmark = pytest.mark.unit


def test_onion_host_matches_the_rend_spec_v3_encoding():
    # The address is base32(public key | 2-byte SHA3 checksum | version 3), lower case.
    public = bytes(range(32))
    host = onion_host(public)
    assert len(host) == 56 + len(".onion") and host.endswith(".onion")
    raw = base64.b32decode(host[:-6].upper())
    assert raw[:32] == public and raw[34:] == b"\x03"
    assert raw[32:34] == hashlib.sha3_256(b".onion checksum" + public + b"\x03").digest()[:2]


def test_create_onion_key_writes_a_0600_key_that_the_transport_loads_and_derives_the_address(tmp_path):
    address = create_onion_key(tmp_path / "tor", virtual_port=7000)
    parsed = parse_transport_address(address)
    assert parsed.scheme == "onion" and parsed.port == 7000
    path = tmp_path / "tor" / ONION_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key_type, content = load_onion_key(tmp_path / "tor")
    assert key_type == "ED25519-V3"
    expanded = base64.b64decode(content)
    assert len(expanded) == 64
    scalar = expanded[:32]
    assert scalar[0] & 7 == 0 and scalar[31] & 0x80 == 0 and scalar[31] & 0x40  # clamped as Ed25519 requires
    assert address == f"onion://{onion_host(crypto_scalarmult_ed25519_base_noclamp(scalar))}:7000"


def test_create_onion_key_gives_a_new_address_each_time_and_never_overwrites(tmp_path):
    first = create_onion_key(tmp_path / "a")
    assert create_onion_key(tmp_path / "b") != first
    before = (tmp_path / "a" / ONION_KEY_FILE).read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        create_onion_key(tmp_path / "a")
    assert (tmp_path / "a" / ONION_KEY_FILE).read_bytes() == before
