"""Tests for anonmail.core.address: the address contract of docs/design.md, "Addresses"."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonmail.core.address import (
    MAX_ADDRESS_LENGTH,
    Address,
    format_address,
    parse_address,
    validate_provider_name,
)
from anonmail.core.keys import IdentityKey, fingerprint
from anonmail.errors import AddressError

pytestmark = pytest.mark.unit

B32 = "abcdefghijklmnopqrstuvwxyz234567"
KEY = IdentityKey.from_seed(bytes(range(32))).public
OTHER_KEY = IdentityKey.from_seed(bytes(range(1, 33))).public
ADDR = str(Address.for_key(KEY, "provider-1"))
USER = ADDR.split("@")[0]

providers = st.from_regex(re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"), fullmatch=True)


def _parse_error(text: str) -> AddressError:
    with pytest.raises(AddressError) as ei:
        parse_address(text)
    err = ei.value
    assert isinstance(err.position, int)
    assert err.text == text.strip()
    return err


def test_shape_and_known_construction() -> None:
    assert len(USER) == 56
    assert len(ADDR) <= MAX_ADDRESS_LENGTH == 120
    fpr = fingerprint(KEY)
    checksum = binascii.crc_hqx(b"anonmail-address-checksum" + fpr + b"\x01", 0).to_bytes(2, "big")
    expected = base64.b32encode(fpr + checksum + b"\x01").decode().lower().rstrip("=")
    assert USER == expected
    assert ADDR == format_address(fpr, "provider-1")


def test_mailbox_id() -> None:
    addr = parse_address(ADDR)
    expected = hashlib.blake2b(fingerprint(KEY), digest_size=16, person=b"anonmail-mbox-v1")
    assert addr.mailbox_id == expected.digest()


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32), providers)
def test_roundtrip(public: bytes, provider: str) -> None:
    addr = Address.for_key(public, provider)
    text = str(addr)
    assert len(text) <= MAX_ADDRESS_LENGTH
    assert parse_address(text) == addr
    assert text == text.lower()


def test_uppercase_and_surrounding_whitespace_accepted() -> None:
    expected = parse_address(ADDR)
    assert parse_address(ADDR.upper()) == expected
    assert parse_address(f"  \t{ADDR}\n ") == expected
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(ADDR))
    assert parse_address(mixed) == expected


@pytest.mark.parametrize("seed", range(20))
def test_every_single_substitution_in_user_part_is_rejected(seed: int) -> None:
    """The CRC catches every one-character typo for any key (not just with high probability)."""
    text = str(Address.for_key(IdentityKey.from_seed(bytes([seed]) * 32).public, "p"))
    for i in range(56):
        for c in B32:
            if c == text[i]:
                continue
            typo = text[:i] + c + text[i + 1 :]
            with pytest.raises(AddressError):
                parse_address(typo)


@pytest.mark.parametrize("seed", range(20))
def test_every_swap_of_neighbouring_characters_is_rejected(seed: int) -> None:
    text = str(Address.for_key(IdentityKey.from_seed(bytes([seed + 100]) * 32).public, "p"))
    for i in range(55):
        if text[i] == text[i + 1]:
            continue
        swapped = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        with pytest.raises(AddressError):
            parse_address(swapped)


def test_checksum_message() -> None:
    i = 10
    c = "a" if USER[i] != "a" else "b"
    err = _parse_error(USER[:i] + c + USER[i + 1 :] + "@provider-1")
    assert "checksum does not match" in str(err) or "version" in str(err)


def test_version_mismatch_message() -> None:
    c = "c" if USER[-1] != "c" else "d"
    err = _parse_error(USER[:-1] + c + "@provider-1")
    assert "version" in str(err)
    assert err.position == 55


@pytest.mark.parametrize(("bad", "hint"), [("0", "'o'"), ("1", "'l'"), ("8", "'b'"), ("9", "'g'")])
def test_non_base32_character_names_position_and_hint(bad: str, hint: str) -> None:
    err = _parse_error(USER[:12] + bad + USER[13:] + "@provider-1")
    assert err.position == 12
    assert "character 13" in str(err)
    assert repr(bad) in str(err)
    assert hint in str(err)


def test_missing_at() -> None:
    err = _parse_error(USER + "provider-1")
    assert "missing '@'" in str(err)


def test_more_than_one_at() -> None:
    err = _parse_error(ADDR + "@x")
    assert "more than one '@'" in str(err)
    assert err.position == len(ADDR)
    assert f"character {len(ADDR) + 1}" in str(err)


@pytest.mark.parametrize("n", [0, 1, 55, 57])
def test_user_part_wrong_length(n: int) -> None:
    user = (USER * 2)[:n]
    err = _parse_error(user + "@p")
    assert f"has {n} characters, expected 56" in str(err)


@pytest.mark.parametrize(
    ("provider", "index", "needle"),
    [
        ("exa_mple", 3, "'_'"),
        ("example.com", 7, "domain name"),
        ("-abc", 0, "start with '-'"),
        ("abc-", 3, "end with '-'"),
        ("", 0, "missing"),
        ("a" * 64, 63, "at most 63"),
    ],
)
def test_bad_provider_names_position(provider: str, index: int, needle: str) -> None:
    err = _parse_error(USER + "@" + provider)
    assert err.position == 57 + index
    assert needle in str(err)
    if provider:
        assert str(57 + index + 1) in str(err)
    with pytest.raises(AddressError):
        validate_provider_name(provider)


def test_provider_upper_case_normalized_in_addresses_only() -> None:
    assert parse_address(USER + "@Provider-1").provider == "provider-1"
    with pytest.raises(AddressError, match="lower case"):
        validate_provider_name("Provider-1")
    assert validate_provider_name("provider-1") == "provider-1"


@pytest.mark.parametrize("value", [None, 42, b"abc@def", ["x"]])
def test_non_str_input(value: object) -> None:
    with pytest.raises(AddressError):
        parse_address(value)  # type: ignore[arg-type]


def test_empty() -> None:
    err = _parse_error("   ")
    assert "empty" in str(err)
    assert err.text == ""


def test_long_input_is_rejected_with_a_short_message() -> None:
    err = _parse_error(USER + "@" + "a" * 10_000)
    assert "at most 63" in str(err)
    assert len(str(err)) < 400


def test_address_constructor_validates() -> None:
    with pytest.raises(AddressError):
        Address(b"\x00" * 31, "p")
    with pytest.raises(AddressError):
        Address(b"\x00" * 32, "bad name")


def test_verify_key() -> None:
    addr = parse_address(ADDR)
    addr.verify_key(KEY)
    with pytest.raises(AddressError):
        addr.verify_key(OTHER_KEY)
    with pytest.raises(AddressError):
        addr.verify_key(b"\x00" * 5)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_arbitrary_text_only_address_error(text: str) -> None:
    try:
        result = parse_address(text)
    except AddressError as err:
        assert err.text == text.strip()
        assert isinstance(err.position, int)
        assert 0 <= err.position <= len(err.text)
    else:
        assert isinstance(result, Address)


# Includes look-alikes, separators and non-ASCII letters whose case mappings are tricky.
_mutation_chars = st.sampled_from(
    list(B32 + B32.upper() + "0189@-_. =\t\u00e9\u0130\u017f\u212a\x00")
)


@st.composite
def near_valid(draw: st.DrawFn) -> str:
    public = draw(st.binary(min_size=32, max_size=32))
    provider = draw(providers)
    text = str(Address.for_key(public, provider))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        if op == "replace":
            text = text[:i] + draw(_mutation_chars) + text[i + 1 :]
        elif op == "insert":
            text = text[:i] + draw(_mutation_chars) + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + 1 :]
        elif i + 1 < len(text):
            text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text


@settings(max_examples=500, deadline=None)
@given(near_valid())
def test_near_valid_only_address_error(text: str) -> None:
    try:
        result = parse_address(text)
    except AddressError as err:
        assert isinstance(err.position, int)
        assert 0 <= err.position <= len(err.text)
        assert str(err)
    else:
        assert str(result) == text.strip().lower()
