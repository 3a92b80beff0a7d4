"""A fixed-size Bloom filter of replay tags: memory bounded whatever the traffic.

Sized for ``capacity`` tags at false-positive rate ``fp_rate`` with :data:`HASHES` indices per
tag: ``bits = -HASHES * capacity / ln(1 - fp_rate ** (1 / HASHES))`` (29.2 bits per tag at
1e-6, so 2,000,000 tags take 7.0 MiB). Beyond ``capacity`` the false-positive rate rises (it
never forgets a tag): :attr:`BloomFilter.over_capacity` says so, and the node counts it.
A false positive drops an honest packet as a replay; a false negative cannot happen.

The indices come from keyed BLAKE2b of the tag, with a key of the node's own (random, per
filter), so nobody who builds packets can aim tags at chosen bits. Written here rather than
taken from a package: it is a bytearray and one hash call per lookup, and the packages that
exist either are pure-Python and slower than this, or need a Python hash callback to be saved.
The bit loop of :meth:`BloomFilter.add` runs in the compiled helper when it is built
(``anonmail.core._sphinxfast.bloom_add``, a fifth of the pure loop's time: it runs once per
packet, holding the GIL); the loop below computes the same bits without it.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import struct

__all__ = ["BloomFilter", "HASHES", "bits_for"]

try:
    from anonmail.core._sphinxfast import bloom_add as _bloom_add
except ImportError:  # not built: the Python loop of BloomFilter.add
    _bloom_add = None

#: Bit indices per tag (4 bytes each from one 64-byte BLAKE2b digest).
HASHES = 16
_WORDS = struct.Struct(f"<{HASHES}I")


def bits_for(capacity: int, fp_rate: float) -> int:
    """Bits a filter needs to hold ``capacity`` tags at ``fp_rate`` with :data:`HASHES` indices."""
    if capacity < 1 or not 0.0 < fp_rate < 1.0:
        raise ValueError(f"need capacity >= 1 and 0 < fp_rate < 1, got {capacity}, {fp_rate}")
    per_hash = 1.0 - fp_rate ** (1.0 / HASHES)
    return max(64, math.ceil(-HASHES * capacity / math.log(per_hash)))


class BloomFilter:
    """Tags seen; ``add`` answers whether a tag was (probably) there already. Not thread-safe."""

    __slots__ = ("capacity", "fp_rate", "bits", "count", "_array", "_key")

    def __init__(self, capacity: int, fp_rate: float, *, key: bytes | None = None) -> None:
        self.capacity = capacity
        self.fp_rate = fp_rate
        self.bits = bits_for(capacity, fp_rate)
        self.count = 0
        # Anonymous memory: zero pages cost nothing until a tag sets a bit in them.
        self._array = mmap.mmap(-1, (self.bits + 7) // 8)
        self._key = key if key is not None else os.urandom(32)

    @property
    def nbytes(self) -> int:
        """Memory the bit array may take (its bound; untouched pages are not resident)."""
        return len(self._array)

    @property
    def over_capacity(self) -> bool:
        """Whether more tags than sized for were added (the false-positive rate is above fp_rate)."""
        return self.count > self.capacity

    def _indices(self, tag: bytes) -> list[int]:
        digest = hashlib.blake2b(tag, digest_size=64, key=self._key).digest()
        bits = self.bits
        return [word % bits for word in _WORDS.unpack(digest)]

    def __contains__(self, tag: bytes) -> bool:
        array = self._array
        return all(array[i >> 3] & (1 << (i & 7)) for i in self._indices(tag))

    def add(self, tag: bytes) -> bool:
        """Insert ``tag``; True if every one of its bits was already set (seen, or a false positive)."""
        if _bloom_add is not None:
            seen = _bloom_add(self._array, hashlib.blake2b(tag, digest_size=64, key=self._key).digest(), self.bits)
            if not seen:
                self.count += 1
            return seen
        return self._add_pure(tag)

    def _add_pure(self, tag: bytes) -> bool:
        array = self._array
        seen = True
        for i in self._indices(tag):
            byte, bit = i >> 3, 1 << (i & 7)
            if not array[byte] & bit:
                seen = False
                array[byte] |= bit
        if not seen:
            self.count += 1
        return seen
