"""``anonmail bench``: micro-benchmarks of the packet layer, printed as one JSON object (`anonmail bench --json`).

Each figure is the best of several timed batches of CPU time (the least disturbed by other work
on the machine), in microseconds per operation; X25519 and Sphinx processing, whose ratio is the
figure that counts, are timed in alternating batches. ``mix_pps`` is measured through a real
``mixnode run`` process over loopback tcp (:mod:`anonmail.bench.mix`), whose source dials it over
an authenticated link; ``mix=False`` skips it (``None``). ``link_handshake_us`` is the CPU of one
whole link handshake, both ends in one process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from nacl.bindings import crypto_scalarmult

from anonmail.core import sphinx
from anonmail.core.fragments import FRAGMENT_DATA_BYTES
from anonmail.core.linkauth import LinkHandshake, generate_link_secret, link_public
from anonmail.core.sizes import HEADER_BYTES, MAX_HOPS, NODE_ID_BYTES, PACKET_BYTES

__all__ = ["run_benchmarks", "time_per_call_us", "interleaved_us"]


def time_per_call_us(fn: Callable[[], object], *, number: int, repeat: int = 7) -> float:
    """Best per-call time in µs over ``repeat`` batches of ``number`` calls."""
    return interleaved_us([fn], number=number, repeat=repeat)[0]


def interleaved_us(fns: Sequence[Callable[[], object]], *, number: int, repeat: int) -> list[float]:
    """Best per-call CPU time in µs of each of ``fns``, timed in alternating batches.

    CPU time of this process, not wall time: on a shared machine the wall clock also counts the
    time other processes hold the core. Alternating the batches exposes the functions to the
    same disturbances (frequency changes, caches), so the ratio of two results keeps its meaning.
    """
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.process_time()
            for _ in range(number):
                fn()
            best[i] = min(best[i], (time.process_time() - start) / number)
    return [b * 1e6 for b in best]


def _sphinxmix_process_us(route, secret: bytes, number: int) -> float | None:
    """Time unmodified sphinxmix on the same packet, for comparison (None if unavailable)."""
    try:
        from sphinxmix.SphinxNode import sphinx_process

        from anonmail.core.petlib_compat import reference_params
    except ImportError:
        return None
    params = reference_params()
    packet = sphinx.build_forward(route, bytes(16), b"bench")
    header = (packet[:32], packet[32 : HEADER_BYTES - 16], packet[HEADER_BYTES - 16 : HEADER_BYTES])
    delta = packet[HEADER_BYTES:]
    return time_per_call_us(lambda: sphinx_process(params, secret, header, delta), number=number)


def _link_handshake(initiator_secret: bytes, responder_secret: bytes, responder_public: bytes) -> None:
    """One whole link handshake, both ends in this process (what a new link costs in CPU)."""
    initiator = LinkHandshake(True, initiator_secret, expected_peer=responder_public)
    responder = LinkHandshake(False, responder_secret)
    third = initiator.receive(responder.receive(initiator.start()) or b"")
    responder.receive(third or b"")
    assert responder.finished and initiator.finished


def run_benchmarks(
    *, scale: float = 1.0, progress: Callable[[str], None] | None = None, reference: bool = True, mix: bool = True
) -> dict[str, Any]:
    """Measure the packet layer and return the figures `anonmail bench --json` promises (plus a few more)."""
    say = progress or (lambda _msg: None)
    n = max(1, int(2000 * scale))
    keys = [sphinx.generate_node_keypair() for _ in range(MAX_HOPS)]
    route = [
        sphinx.Hop(os.urandom(NODE_ID_BYTES), pub, 10 if i < MAX_HOPS - 1 else 0)
        for i, (_, pub) in enumerate(keys)
    ]
    secret0, public1 = keys[0][0], keys[1][1]

    say("Sphinx packet creation (5 hops)")
    payload = os.urandom(sphinx.PAYLOAD_BYTES)
    create_us = time_per_call_us(
        lambda: sphinx.build_forward(route, bytes(16), payload), number=max(1, n // 10)
    )
    say("X25519 scalar multiplication and Sphinx processing (one hop), alternating")
    packet = sphinx.build_forward(route, bytes(16), payload)
    # 70 alternating batches of n/10 calls each: as many calls as 7 batches of n, in slices short
    # enough for some to run undisturbed on a busy machine
    x25519_us, process_us = interleaved_us(
        [lambda: crypto_scalarmult(secret0, public1), lambda: sphinx.process(packet, secret0)],
        number=max(1, n // 10), repeat=70,
    )
    from anonmail.bench.e2e import measure_e2e

    say("end-to-end sessions (ratchet, PQXDH)")
    e2e_result = measure_e2e(scale=scale)
    say("link handshake (Noise XX, both ends)")
    dialler, listener = generate_link_secret(), generate_link_secret()
    handshake_us = time_per_call_us(lambda: _link_handshake(dialler, listener, link_public(listener)),
                                    number=max(1, n // 20))
    reference_us = None
    if reference:
        say("sphinxmix reference processing (one hop)")
        reference_us = _sphinxmix_process_us(route, secret0, max(1, n // 4))

    mix_result: dict[str, Any] = {"mix_pps": None}
    if mix:
        from anonmail.bench.mix import measure_mix_pps

        say("mix node throughput (a mixnode process over loopback tcp)")
        mix_result = measure_mix_pps(max(500, int(20000 * scale)), progress=lambda m: say(f"mix node: {m}"))

    return {
        **mix_result,
        **e2e_result,
        "x25519_us": round(x25519_us, 2),
        "sphinx_create_us": round(create_us, 2),
        "sphinx_process_us": round(process_us, 2),
        "floor_pps": round(1e6 / (2 * x25519_us), 1),
        "link_handshake_us": round(handshake_us, 1),
        "payload_bytes": sphinx.PAYLOAD_BYTES,
        "packet_bytes": PACKET_BYTES,
        "header_bytes": HEADER_BYTES,
        "fragment_data_bytes": FRAGMENT_DATA_BYTES,
        "process_over_2x25519": round(process_us / (2 * x25519_us), 3),
        "sphinxmix_process_us": None if reference_us is None else round(reference_us, 2),
        "hops": MAX_HOPS,
    }
