"""The Double Ratchet alone: order, duplicates, skipped-key bounds and expiry, storage, refusals."""

from __future__ import annotations

import os
import random

import pytest

from anonmail.core import ratchet as R
from anonmail.errors import SessionError

pytestmark = pytest.mark.unit


def _pair() -> tuple[R.Ratchet, R.Ratchet]:
    shared = os.urandom(32)
    secret, public = R.x25519_keypair()
    return R.Ratchet.initiator(shared, public, b"AD"), R.Ratchet.responder(shared, secret, b"AD")


def test_both_directions_in_order() -> None:
    a, b = _pair()
    for i in range(5):
        assert b.decrypt(a.encrypt(b"a%d" % i, b"m"), b"m", now=0) == b"a%d" % i
        assert a.decrypt(b.encrypt(b"b%d" % i, b"m"), b"m", now=0) == b"b%d" % i


def test_any_order_across_chains_each_once() -> None:
    a, b = _pair()
    sent = []
    for round_ in range(6):
        sent += [(i, a.encrypt(b"%d-%d" % (round_, i))) for i in range(7)]
        # b answers the first message of each round, so a's chain turns
        assert b.decrypt(sent[-7][1], now=0) == b"%d-0" % round_
        a.decrypt(b.encrypt(b"ack"), now=0)
        sent[-7] = (None, None)
    rest = [m for _, m in sent if m is not None]
    random.Random(1).shuffle(rest)
    opened = [b.decrypt(m, now=0) for m in rest]
    assert len(set(opened)) == len(rest) == 36
    for m in rest:  # each key was used once and is gone
        with pytest.raises(SessionError) as info:
            b.decrypt(m, now=0)
        assert info.value.reason in ("duplicate", "auth")


def test_duplicate_changes_nothing() -> None:
    a, b = _pair()
    m1, m2 = a.encrypt(b"1"), a.encrypt(b"2")
    b.decrypt(m2, now=0)
    b.decrypt(m1, now=0)
    before = b.to_bytes()
    for m in (m1, m2):
        with pytest.raises(SessionError) as info:
            b.decrypt(m, now=0)
        assert info.value.reason == "duplicate"
    assert b.to_bytes() == before


def test_tampered_or_wrong_ad_refused_without_change() -> None:
    a, b = _pair()
    m = a.encrypt(b"hello", b"id-1")
    before = b.to_bytes()
    with pytest.raises(SessionError) as info:
        b.decrypt(m, b"id-2", now=0)
    assert info.value.reason == "auth"
    bad = m[:-1] + bytes([m[-1] ^ 1])
    with pytest.raises(SessionError):
        b.decrypt(bad, b"id-1", now=0)
    assert b.to_bytes() == before
    assert b.decrypt(m, b"id-1", now=0) == b"hello"


def test_gap_larger_than_max_skip_refused() -> None:
    a, b = _pair()
    for _ in range(R.MAX_SKIP + 1):
        a.encrypt(b"lost")
    with pytest.raises(SessionError) as info:
        b.decrypt(a.encrypt(b"far"), now=0)
    assert info.value.reason == "too_many_skipped"


def test_skipped_keys_bounded_and_expire() -> None:
    a, b = _pair()
    lost = [a.encrypt(b"%d" % i) for i in range(R.MAX_SKIP)]
    b.decrypt(a.encrypt(b"x"), now=100)
    assert len(b.skipped) == R.MAX_SKIP
    # turn chains three times, each skipping MAX_SKIP keys: the oldest go beyond MAX_SKIPPED
    for _ in range(2):
        a.decrypt(b.encrypt(b"turn"), now=100)
        for _ in range(R.MAX_SKIP):
            a.encrypt(b"lost")
        b.decrypt(a.encrypt(b"y"), now=100)
    assert len(b.skipped) == R.MAX_SKIPPED
    with pytest.raises(SessionError):
        b.decrypt(lost[0], now=100)  # evicted first
    late = b.copy()
    assert late.expire(100 + R.SKIPPED_TTL) == 0
    assert late.expire(101 + R.SKIPPED_TTL) == R.MAX_SKIPPED
    with pytest.raises(SessionError) as info:
        b.decrypt(lost[-1], now=101 + R.SKIPPED_TTL)
    assert info.value.reason in ("duplicate", "auth")


def test_state_roundtrip_and_damage() -> None:
    a, b = _pair()
    b.decrypt(a.encrypt(b"1"), now=5)
    a.encrypt(b"skipme")
    b.decrypt(a.encrypt(b"3"), now=5)
    again = R.Ratchet.from_bytes(b.to_bytes())
    assert again == b
    raw = b.to_bytes()
    for bad in (raw[:-1], raw + b"x", b"XXXXXX" + raw[6:], raw[:6] + b"\x09" + raw[7:]):
        with pytest.raises(SessionError):
            R.Ratchet.from_bytes(bad)


def test_header_parser_refuses_small_order_and_short() -> None:
    with pytest.raises(SessionError):
        R.parse_header(b"\x00" * (R.HEADER_BYTES + R.TAG_BYTES))
    with pytest.raises(SessionError):
        R.parse_header(b"\x09" * R.HEADER_BYTES)


def test_responder_cannot_send_first() -> None:
    _a, b = _pair()
    with pytest.raises(SessionError) as info:
        b.encrypt(b"x")
    assert info.value.reason == "no_session"
