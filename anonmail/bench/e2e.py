"""``anonmail bench``: what end-to-end sessions cost per message, in bytes and CPU (part of ``anonmail bench --json``).

Figures (µs are the best of several timed batches, on a 1 KiB message):

* ``e2e_session_overhead_bytes``: what a message on an established session adds (frame, ratchet
  header, AEAD tag); ``e2e_prekey_overhead_bytes``: what a message adds until the peer answers
  (the initial header with its ML-KEM-768 ciphertext rides along);
* ``e2e_encrypt_us`` / ``e2e_decrypt_us``: one message on the same chain (one symmetric step);
* ``e2e_round_trip_us``: one message each way, both with a DH ratchet step (X25519 keygen + 2 DH
  at each end): the worst case of a conversation;
* ``e2e_start_us`` / ``e2e_accept_us``: starting a session on a bundle and opening its first
  message (PQXDH: 4 X25519 agreements and ML-KEM-768 at each end).
"""

from __future__ import annotations

import os
from typing import Any

from anonmail.bench.packet import time_per_call_us
from anonmail.core.keys import IdentityKey
from anonmail.core.prekeys import PrekeyUpload, make_one_time_prekey, make_pq_prekey, make_signed_prekey
from anonmail.core.sessions import MAX_OVERHEAD, SESSION_OVERHEAD, PeerSessions

__all__ = ["measure_e2e"]

_NOW = 1_000_000


class _Prekeys:
    def __init__(self, signed: bytes, pq: bytes, one_time: bytes) -> None:
        self._s, self._p, self._o = signed, pq, one_time

    def signed_secret(self, key_id: int) -> bytes:
        return self._s

    def pq_secret(self, key_id: int) -> bytes:
        return self._p

    def one_time_secret(self, key_id: int) -> bytes:
        return self._o


def measure_e2e(*, scale: float = 1.0) -> dict[str, Any]:
    """Measure the per-message cost of end-to-end sessions (see the module docstring)."""
    n = max(1, int(500 * scale))
    alice, bob = IdentityKey.generate(), IdentityKey.generate()
    spk_s, spk = make_signed_prekey(bob, 1, not_after=_NOW * 2)
    pq_s, pq = make_pq_prekey(bob, 2, not_after=_NOW * 2)
    opk_s, opk = make_one_time_prekey(3)
    bundle = PrekeyUpload(bob.public, spk, pq, (opk,)).bundle(opk)
    secrets = _Prekeys(spk_s, pq_s, opk_s)
    message = os.urandom(1024)

    def start() -> bytes:
        return PeerSessions(alice.public, bob.public).start(alice, bundle) and b""

    def first() -> tuple[PeerSessions, bytes]:
        a = PeerSessions(alice.public, bob.public)
        a.start(alice, bundle)
        return a, a.encrypt(message, b"id")

    start_us = time_per_call_us(start, number=max(1, n // 5))
    a, wire = first()
    accept_us = time_per_call_us(
        lambda: PeerSessions(bob.public, alice.public).decrypt(bob, wire, b"id", now=_NOW, prekeys=secrets),
        number=max(1, n // 5))
    b = PeerSessions(bob.public, alice.public)
    b.decrypt(bob, wire, b"id", now=_NOW, prekeys=secrets)
    a.decrypt(alice, b.encrypt(message), now=_NOW, prekeys=secrets)

    batch = [a.encrypt(message, b"id") for _ in range(n)]
    spare = PeerSessions.from_bytes(a.to_bytes())  # its messages are never delivered
    encrypt_us = time_per_call_us(lambda: spare.encrypt(message, b"id"), number=n, repeat=3)
    queue = list(batch)
    decrypt_us = time_per_call_us(lambda: b.decrypt(bob, queue.pop(0), b"id", now=_NOW, prekeys=secrets),
                                  number=n, repeat=1)

    def round_trip() -> None:
        a.decrypt(alice, b.encrypt(message), now=_NOW, prekeys=secrets)
        b.decrypt(bob, a.encrypt(message), now=_NOW, prekeys=secrets)

    round_trip_us = time_per_call_us(round_trip, number=max(1, n // 5))
    return {
        "e2e_session_overhead_bytes": SESSION_OVERHEAD,
        "e2e_prekey_overhead_bytes": MAX_OVERHEAD,
        "e2e_encrypt_us": round(encrypt_us, 2),
        "e2e_decrypt_us": round(decrypt_us, 2),
        "e2e_round_trip_us": round(round_trip_us, 2),
        "e2e_start_us": round(start_us, 2),
        "e2e_accept_us": round(accept_us, 2),
    }
