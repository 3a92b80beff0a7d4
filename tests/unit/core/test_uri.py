"""Transport URIs: what parses, what is refused, and the messages."""

from __future__ import annotations

import os

import pytest

from anonmail.core.uri import onion_address_from_key, parse_transport_address
from anonmail.errors import TransportAddressError

ONION = onion_address_from_key(bytes(range(32)))


def test_onion_round_trip():
    parsed = parse_transport_address(f"onion://{ONION}:7000", production=True)
    assert (parsed.scheme, parsed.host, parsed.port) == ("onion", ONION, 7000)
    assert str(parsed) == f"onion://{ONION}:7000"


def test_onion_checksum_catches_a_typo():
    bad = ("b" if ONION[5] != "b" else "c").join([ONION[:5], ONION[6:]])
    with pytest.raises(TransportAddressError, match="checksum"):
        parse_transport_address(f"onion://{bad}:7000")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("onion://abc.onion:7000", "56 base32"),
        (f"onion://{ONION}", "needs a port"),
        (f"onion://{ONION}:0", "outside"),
        (f"onion://{ONION}:70000", "outside"),
        ("i2p://short.b32.i2p", "52 base32"),
        ("tcp://192.168.1.1:7000", "loopback"),
        ("tcp://localhost:7000", "loopback"),
        ("tcp://127.0.0.1", "needs a port"),
        ("mem://", "1-64"),
        ("http://example.com", "unknown scheme"),
        ("example.com:80", "SCHEME://"),
    ],
)
def test_bad_addresses_say_what_is_wrong(text, fragment):
    with pytest.raises(TransportAddressError, match=fragment):
        parse_transport_address(text)


def test_production_refuses_test_schemes():
    for text in ("tcp://127.0.0.1:7000", "mem://mix"):
        parse_transport_address(text)
        with pytest.raises(TransportAddressError, match="tests only"):
            parse_transport_address(text, production=True)


def test_i2p_and_tcp_v6():
    host = "a" * 52 + ".b32.i2p"
    assert str(parse_transport_address(f"i2p://{host}", production=True)) == f"i2p://{host}"
    assert str(parse_transport_address("tcp://[::1]:9")) == "tcp://[::1]:9"


def test_port_zero_only_when_asked():
    with pytest.raises(TransportAddressError):
        parse_transport_address("tcp://127.0.0.1:0")
    assert parse_transport_address("tcp://127.0.0.1:0", allow_port_zero=True).port == 0


def test_random_onion_keys_always_parse():
    for _ in range(50):
        host = onion_address_from_key(os.urandom(32))
        parse_transport_address(f"onion://{host}:1")
