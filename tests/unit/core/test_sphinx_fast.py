"""The compiled hop helper (anonmail/core/_sphinxfast.pyx) computes the pure-Python path's bytes."""

from __future__ import annotations

import random

import pytest

from anonmail.core import sphinx as S
from anonmail.core.sizes import ALPHA_BYTES, BETA_BYTES, BODY_BYTES, HEADER_BYTES, K
from anonmail.errors import HeaderMacError, ReplayError

pytestmark = pytest.mark.unit

fast = S._fast


def test_the_helper_is_built_by_the_install():
    # pip install -e . compiles it (setup.py); without a compiler or OpenSSL headers the pure path runs.
    assert fast is not None, "anonmail.core._sphinxfast missing: re-run scripts/bootstrap.sh"
    assert fast.__file__.endswith((".so", ".pyd"))


needs_fast = pytest.mark.skipif(fast is None, reason="anonmail.core._sphinxfast not built")


@needs_fast
@pytest.mark.parametrize("seed", range(20))
def test_header_keys_and_unwrap_match_the_pure_primitives(seed):
    rng = random.Random(seed)
    s, beta, delta = rng.randbytes(32), rng.randbytes(BETA_BYTES), rng.randbytes(BODY_BYTES)
    hb, hrho, hmu, htau, hpi = S._hop_keys(S._aes_key(s))
    gamma = S._mu(hmu, beta)
    assert fast.header_keys(s, beta, gamma) == (hb, hrho, htau, hpi)
    flipped = bytes([gamma[0] ^ (1 << rng.randrange(8))]) + gamma[1:]
    assert fast.header_keys(s, beta, flipped) is None
    assert fast.unwrap(hrho, beta, hpi, delta) == (S._aes_ctr(hrho, beta + S._BETA_PAD), S._lioness_dec(hpi, delta))


@needs_fast
def test_wrong_sizes_are_value_errors():
    with pytest.raises(ValueError, match="shared secret"):
        fast.header_keys(bytes(31), bytes(BETA_BYTES), bytes(K))
    with pytest.raises(ValueError, match="delta"):
        fast.unwrap(bytes(K), bytes(BETA_BYTES), bytes(K), bytes(BODY_BYTES - 1))


def _route(rng: random.Random, hops: int):
    keys = [S.generate_node_keypair(rng.randbytes) for _ in range(hops)]
    route = [S.Hop(rng.randbytes(16), pub, rng.randrange(100) if i < hops - 1 else 0)
             for i, (_, pub) in enumerate(keys)]
    return [sec for sec, _ in keys], route


def _walk(packet: bytes, secrets, seen: list[bytes]):
    decisions = []
    for secret in secrets:
        decision = S.process(packet, secret, is_replay=lambda tag: seen.append(tag) or False)
        decisions.append(decision)
        if isinstance(decision, S.Forward):
            packet = decision.packet
    return decisions


@needs_fast
@pytest.mark.parametrize("seed", range(5))
def test_both_paths_take_the_same_decisions_hop_by_hop(seed, monkeypatch):
    rng = random.Random(seed)
    secrets, route = _route(rng, 5)
    packet = S.build_forward(route, rng.randbytes(16), rng.randbytes(rng.randrange(S.PAYLOAD_BYTES)))
    tags_fast: list[bytes] = []
    with_fast = _walk(packet, secrets, tags_fast)
    monkeypatch.setattr(S, "_fast", None)
    tags_pure: list[bytes] = []
    assert _walk(packet, secrets, tags_pure) == with_fast
    assert tags_pure == tags_fast and len(set(tags_fast)) == 5


@needs_fast
def test_tampering_and_replays_are_rejected_the_same_way(monkeypatch):
    rng = random.Random(7)
    secrets, route = _route(rng, 3)
    packet = S.build_forward(route, rng.randbytes(16), b"x")
    beta_bit = bytearray(packet)
    beta_bit[ALPHA_BYTES + 5] ^= 0x10
    gamma_bit = bytearray(packet)
    gamma_bit[HEADER_BYTES - 1] ^= 0x01
    for use_fast in (True, False):
        monkeypatch.setattr(S, "_fast", fast if use_fast else None)
        for bad in (bytes(beta_bit), bytes(gamma_bit)):
            with pytest.raises(HeaderMacError):
                S.process(bad, secrets[0])
        with pytest.raises(ReplayError):
            S.process(packet, secrets[0], is_replay=lambda tag: True)
