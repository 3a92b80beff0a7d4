"""Sphinx packets: routing, SURBs, tamper detection and bad input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonmail.core import sphinx as S
from anonmail.core.sizes import ALPHA_BYTES, BODY_BYTES, HEADER_BYTES, MAX_HOPS, PACKET_BYTES
from anonmail.errors import (
    BadGroupElementError,
    BodyTamperedError,
    HeaderMacError,
    PacketError,
    PacketSizeError,
    PayloadTooLargeError,
    ReplayError,
)

pytestmark = pytest.mark.unit


def _network(seed: int, hops: int = MAX_HOPS):
    rng = random.Random(seed)
    keys = [S.generate_node_keypair(rng.randbytes) for _ in range(hops)]
    route = [
        S.Hop(rng.randbytes(16), pub, 100 * (i + 1) if i < hops - 1 else 0)
        for i, (_, pub) in enumerate(keys)
    ]
    return [sec for sec, _ in keys], route, rng


def _walk(packet: bytes, secrets):
    decisions = []
    for secret in secrets:
        decision = S.process(packet, secret)
        decisions.append(decision)
        if isinstance(decision, S.Forward):
            packet = decision.packet
    return decisions


def test_every_packet_kind_has_the_same_size():
    secrets, route, rng = _network(1)
    forward = S.build_forward(route, rng.randbytes(16), b"", rng.randbytes)
    full = S.build_forward(route, rng.randbytes(16), rng.randbytes(S.PAYLOAD_BYTES), rng.randbytes)
    _, surb = S.build_surb(route[1:], rng.randbytes(16), rng.randbytes)
    reply = S.package_surb(surb, b"ok")
    assert {len(forward), len(full), len(reply)} == {PACKET_BYTES}
    assert all(len(d.packet) == PACKET_BYTES for d in _walk(full, secrets) if isinstance(d, S.Forward))
    assert len(surb.to_bytes()) == S.SURB_BYTES
    assert S.Surb.from_bytes(surb.to_bytes()) == surb


def test_route_commands_delays_and_delivery():
    secrets, route, rng = _network(2)
    mailbox = rng.randbytes(16)
    decisions = _walk(S.build_forward(route, mailbox, b"payload", rng.randbytes), secrets)
    assert [d.next_node for d in decisions[:-1]] == [h.node_id for h in route[1:]]
    assert [d.delay_ms for d in decisions[:-1]] == [h.delay_ms for h in route[:-1]]
    assert decisions[-1].mailbox_id == mailbox and decisions[-1].payload == b"payload"
    tags = [d.tag for d in decisions]
    assert len(set(tags)) == len(tags)


def test_hops_see_unlinkable_bytes():
    secrets, route, rng = _network(3)
    packet = S.build_forward(route, rng.randbytes(16), b"x", rng.randbytes)
    seen = [packet] + [d.packet for d in _walk(packet, secrets) if isinstance(d, S.Forward)]
    for a, b in zip(seen, seen[1:]):
        assert a[:ALPHA_BYTES] != b[:ALPHA_BYTES]
        assert a[HEADER_BYTES:] != b[HEADER_BYTES:]


def test_five_hop_surb_round_trip():
    secrets, route, rng = _network(4)
    keys, surb = S.build_surb(route, b"m" * 16, rng.randbytes)
    decisions = _walk(S.package_surb(surb, b"ACK"), secrets)
    final = decisions[-1]
    assert isinstance(final, S.SurbDelivery) and final.surb_id == keys.surb_id
    assert S.open_surb_reply(keys, final.body) == b"ACK"
    assert "hop" in repr(keys) and keys.ktilde.hex() not in repr(keys)


def test_header_bit_flips_are_rejected_at_the_first_hop():
    secrets, route, rng = _network(5)
    packet = bytearray(S.build_forward(route, rng.randbytes(16), b"x", rng.randbytes))
    for bit in range(HEADER_BYTES * 8):
        tampered = bytearray(packet)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises((HeaderMacError, BadGroupElementError)):
            S.process(bytes(tampered), secrets[0])


@settings(max_examples=40, deadline=None)
@given(bit=st.integers(0, BODY_BYTES * 8 - 1), seed=st.integers(0, 3))
def test_body_bit_flips_are_rejected_at_the_final_hop(bit, seed):
    secrets, route, rng = _network(seed)
    packet = bytearray(S.build_forward(route, rng.randbytes(16), b"secret", rng.randbytes))
    packet[HEADER_BYTES + bit // 8] ^= 1 << (bit % 8)
    packet = bytes(packet)
    for secret in secrets[:-1]:
        decision = S.process(packet, secret)
        assert isinstance(decision, S.Forward)
        packet = decision.packet
    with pytest.raises(BodyTamperedError):
        S.process(packet, secrets[-1])


@settings(max_examples=20, deadline=None)
@given(bit=st.integers(0, BODY_BYTES * 8 - 1))
def test_tampered_surb_reply_is_rejected_by_its_owner(bit):
    secrets, route, rng = _network(6, hops=4)
    keys, surb = S.build_surb(route, b"m" * 16, rng.randbytes)
    packet = bytearray(S.package_surb(surb, b"ACK"))
    packet[HEADER_BYTES + bit // 8] ^= 1 << (bit % 8)
    final = _walk(bytes(packet), secrets)[-1]
    with pytest.raises(BodyTamperedError):
        S.open_surb_reply(keys, final.body)


def test_non_canonical_alpha_is_rejected():
    secrets, route, rng = _network(7)
    packet = bytearray(S.build_forward(route, rng.randbytes(16), b"x", rng.randbytes))
    packet[ALPHA_BYTES - 1] |= 0x80  # libsodium would ignore this bit; we refuse it
    with pytest.raises(BadGroupElementError):
        S.process(bytes(packet), secrets[0])
    zero = bytes(ALPHA_BYTES) + bytes(packet[ALPHA_BYTES:])  # low-order point
    with pytest.raises(BadGroupElementError):
        S.process(zero, secrets[0])


def test_packet_for_another_node_is_rejected():
    secrets, route, rng = _network(8)
    packet = S.build_forward(route, rng.randbytes(16), b"x", rng.randbytes)
    with pytest.raises(HeaderMacError):
        S.process(packet, secrets[1])


def test_replay_callback_stops_processing_early():
    secrets, route, rng = _network(9)
    packet = S.build_forward(route, rng.randbytes(16), b"x", rng.randbytes)
    seen: set[bytes] = set()

    def is_replay(tag: bytes) -> bool:
        if tag in seen:
            return True
        seen.add(tag)
        return False

    S.process(packet, secrets[0], is_replay=is_replay)
    with pytest.raises(ReplayError) as info:
        S.process(packet, secrets[0], is_replay=is_replay)
    assert info.value.reason == "replay"


def test_limits_on_building():
    secrets, route, rng = _network(10)
    with pytest.raises(PayloadTooLargeError):
        S.build_forward(route, rng.randbytes(16), bytes(S.PAYLOAD_BYTES + 1), rng.randbytes)
    with pytest.raises(ValueError):
        S.build_forward(route + route[:1], rng.randbytes(16), b"", rng.randbytes)
    with pytest.raises(ValueError):
        S.build_forward(route, b"short", b"", rng.randbytes)
    with pytest.raises(ValueError):
        S.build_forward(route[:-1], rng.randbytes(16), b"", rng.randbytes)  # last hop with a delay
    with pytest.raises(PayloadTooLargeError):
        S.package_surb(S.build_surb(route, bytes(16), rng.randbytes)[1], bytes(S.SURB_REPLY_BYTES + 1))
    with pytest.raises(ValueError):
        S.Hop(b"x", bytes(32))
    with pytest.raises(ValueError):
        S.Hop(bytes(16), bytes(32), -1)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=PACKET_BYTES + 10))
def test_arbitrary_bytes_only_raise_packet_errors(data):
    secrets, _, _ = _network(11, hops=1)
    with pytest.raises(PacketError):
        S.process(data, secrets[0])


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), flips=st.lists(st.integers(0, PACKET_BYTES - 1), max_size=8))
def test_random_packets_only_raise_packet_errors(seed, flips):
    secrets, _, _ = _network(12, hops=1)
    data = bytearray(random.Random(seed).randbytes(PACKET_BYTES))
    for i in flips:
        data[i] ^= 0xFF
    with pytest.raises(PacketError):
        S.process(bytes(data), secrets[0])


@settings(max_examples=150, deadline=None)
@given(routing=st.binary(max_size=120), body=st.binary(max_size=S.SURB_REPLY_BYTES))
def test_validly_authenticated_garbage_is_rejected_cleanly(routing, body):
    """A malicious sender can MAC anything: routing and body content must still parse strictly."""
    secrets, route, rng = _network(13, hops=1)
    (alpha, beta, gamma), aes_keys = S._create_header([route[0].node_id], [route[0]], routing, rng.randbytes)
    hpi = S._hpi(aes_keys[0])
    padded = S._pad_body(BODY_BYTES - 16, body)
    delta = S._lioness_enc(hpi, S._mu(hpi, padded) + padded)
    try:
        decision = S.process(alpha + beta + gamma + delta, secrets[0])
    except PacketError:
        return
    assert isinstance(decision, (S.Forward, S.Deliver, S.SurbDelivery))


def test_wrong_sizes():
    secrets, _, _ = _network(14, hops=1)
    for n in (0, 1, PACKET_BYTES - 1, PACKET_BYTES + 1):
        with pytest.raises(PacketSizeError):
            S.process(bytes(n), secrets[0])
    with pytest.raises(PacketSizeError):
        S.Surb.from_bytes(b"short")


@pytest.mark.parametrize("surb", [False, True], ids=["forward", "surb"])
def test_attack_a_small_order_hop_key_is_a_typed_error_naming_the_node(surb):
    """Building through a node with a small-order key raises NodeKeyError (not a nacl crash)."""
    from anonmail.errors import NodeKeyError, PathError

    _, route, _ = _network(1, hops=3)
    bad = S.Hop(route[1].node_id, bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
                route[1].delay_ms)
    route = [route[0], bad, route[2]]
    with pytest.raises(NodeKeyError) as info:
        if surb:
            S.build_surb(route, bytes(16))
        else:
            S.build_forward(route, bytes(16), b"hello")
    assert info.value.node_id == route[1].node_id
    assert isinstance(info.value, PathError)


def test_attack_blinding_scalars_are_full_width_so_linking_a_hop_is_no_short_discrete_log():
    """Audit finding 13: a blinding scalar of 16 random bytes, zero-extended, is 2^254 + 8m with m < 2^125
    after clamping, so whoever sees a mix's input and output alpha links them with ~2^62.5 work (an
    interval discrete log). Each hop's scalar must be full width: its high half as random as its low."""
    from nacl.bindings import crypto_scalarmult

    secrets, route, rng = _network(13)
    high_halves = set()
    for _ in range(8):
        packet = S.build_forward(route, rng.randbytes(16), b"x", rng.randbytes)
        for secret in secrets[:-1]:
            alpha = packet[:ALPHA_BYTES]
            hb = S._hop_keys(S._aes_key(crypto_scalarmult(secret, alpha)))[0]
            blind = S._blinding(hb)
            decision = S.process(packet, secret)
            assert isinstance(decision, S.Forward)
            assert decision.packet[:ALPHA_BYTES] == crypto_scalarmult(blind, alpha)  # the scalar the hop used
            assert decision.packet[:ALPHA_BYTES] != crypto_scalarmult(hb + bytes(16), alpha)
            high_halves.add(blind[16:31])  # (byte 31 loses its top bits to clamping)
            packet = decision.packet
    assert len(high_halves) == 8 * (len(secrets) - 1)  # never zero, never repeated
