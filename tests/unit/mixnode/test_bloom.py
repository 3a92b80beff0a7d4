"""The replay filter: fixed memory, no false negatives, false positives near the stated rate."""

from __future__ import annotations

import os

import pytest

from mixnode.bloom import BloomFilter, bits_for

pytestmark = pytest.mark.unit


def test_size_follows_capacity_and_rate_and_not_traffic():
    assert bits_for(2_000_000, 1e-6) / 2_000_000 == pytest.approx(29.2, abs=0.1)
    bloom = BloomFilter(10_000, 1e-3)
    before = bloom.nbytes
    for _ in range(30_000):  # three times its capacity
        bloom.add(os.urandom(32))
    assert bloom.nbytes == before and bloom.over_capacity


def test_every_added_tag_is_found_and_strangers_rarely_are():
    bloom = BloomFilter(20_000, 1e-3)
    tags = [os.urandom(32) for _ in range(20_000)]
    assert not any(bloom.add(t) for t in tags[:100])  # fresh tags are new (at this fill, surely)
    for tag in tags[100:]:
        bloom.add(tag)
    assert all(t in bloom for t in tags) and all(bloom.add(t) for t in tags[:1000])
    false = sum(os.urandom(32) in bloom for _ in range(40_000))
    # At capacity the rate is 1e-3: 40 expected; a filter 4x too small would give ~20x more.
    assert false < 120
    assert 19_950 <= bloom.count <= 20_000  # a tag whose bits were all set already is not counted


def test_filters_with_other_keys_set_other_bits():
    tag = os.urandom(32)
    a, b = BloomFilter(1000, 1e-6, key=b"a" * 32), BloomFilter(1000, 1e-6, key=b"b" * 32)
    assert a._indices(tag) != b._indices(tag)
    assert BloomFilter(1000, 1e-6, key=b"a" * 32)._indices(tag) == a._indices(tag)


def test_the_compiled_bit_loop_sets_the_bits_the_python_loop_sets():
    from mixnode import bloom

    if bloom._bloom_add is None:
        pytest.skip("anonmail.core._sphinxfast not built")
    fast, pure = BloomFilter(5000, 1e-6, key=b"k" * 32), BloomFilter(5000, 1e-6, key=b"k" * 32)
    tags = [os.urandom(16) for _ in range(3000)] * 2
    assert [fast.add(t) for t in tags] == [pure._add_pure(t) for t in tags]
    assert fast._array[:] == pure._array[:] and fast.count == pure.count == 3000
