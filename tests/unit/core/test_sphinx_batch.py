"""The batch path (anonmail/core/sphinxbatch.py) gives sphinx.process's outcomes, compiled or not."""

from __future__ import annotations

import random

import pytest

from anonmail.core import sphinx as S
from anonmail.core import sphinxbatch
from anonmail.core.sizes import HEADER_BYTES, MAILBOX_ID_BYTES, PACKET_BYTES

pytestmark = pytest.mark.unit

needs_compiled = pytest.mark.skipif(not sphinxbatch.COMPILED, reason="anonmail.core._sphinxfast not built")


def _rng(seed: int):
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


ME_SECRET, ME_PUBLIC = S.generate_node_keypair(_rng(1))
OLD_SECRET, OLD_PUBLIC = S.generate_node_keypair(_rng(2))
NEXT_SECRET, NEXT_PUBLIC = S.generate_node_keypair(_rng(3))
ME, NEXT = b"M" * 16, b"N" * 16
MAILBOX = b"\x07" * MAILBOX_ID_BYTES
# The canonical encodings of two points of order 8 and 4 (libsodium's blocklist): every
# multiplication gives the all-zero point.
LOW_ORDER = (bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
             bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000000"))


def _packets() -> list:
    relay = S.build_forward([S.Hop(ME, ME_PUBLIC, 250), S.Hop(NEXT, NEXT_PUBLIC, 0)], MAILBOX, b"hi", rng=_rng(10))
    old = S.build_forward([S.Hop(ME, OLD_PUBLIC, 7), S.Hop(NEXT, NEXT_PUBLIC, 0)], MAILBOX, b"old", rng=_rng(11))
    final = S.build_forward([S.Hop(ME, ME_PUBLIC, 0)], MAILBOX, b"loop", rng=_rng(12))
    keys, surb = S.build_surb([S.Hop(ME, ME_PUBLIC, 0)], MAILBOX, rng=_rng(13))
    reply = S.package_surb(surb, b"reply")
    other = S.build_forward([S.Hop(ME, ME_PUBLIC, 0)], MAILBOX, b"other", rng=_rng(14))
    tampered_body = other[:-1] + bytes([other[-1] ^ 1])
    tampered_header = relay[:40] + bytes([relay[40] ^ 1]) + relay[41:]
    not_canonical = b"\xff" * 31 + b"\x7f" + relay[32:]
    low = [p + relay[32:] for p in LOW_ORDER]
    fresh = S.build_forward([S.Hop(ME, ME_PUBLIC, 3), S.Hop(NEXT, NEXT_PUBLIC, 0)], MAILBOX, b"x", rng=_rng(15))
    zeroed_body = fresh[:HEADER_BYTES] + bytes(PACKET_BYTES - HEADER_BYTES)  # a relay cannot tell
    return [relay, relay, old, final, reply, tampered_body, tampered_header, not_canonical, *low,
            b"\x00" * 100, bytearray(relay), zeroed_body]


def _run(compiled: bool) -> tuple[list, list]:
    asked: list = []
    seen: set = set()

    def is_replay(index: int, tag: bytes) -> bool:
        asked.append((index, tag))
        if (index, tag) in seen:
            return True
        seen.add((index, tag))
        return False

    outcomes = sphinxbatch.process_batch(_packets(), [ME_SECRET, OLD_SECRET], is_replay, compiled=compiled)
    return [(i, o if not isinstance(o, Exception) else (type(o), str(o))) for i, o in outcomes], asked


def test_the_pure_path_gives_what_process_gives():
    outcomes, asked = _run(False)
    kinds = [o if isinstance(o, tuple) else type(o) for _, o in outcomes]
    names = [k[0].__name__ if isinstance(k, tuple) else k.__name__ for k in kinds]
    assert names == ["Forward", "ReplayError", "Forward", "Deliver", "SurbDelivery", "BodyTamperedError",
                     "HeaderMacError", "BadGroupElementError", "BadGroupElementError", "BadGroupElementError",
                     "PacketSizeError", "ReplayError", "Forward"]
    assert [i for i, _ in outcomes][:5] == [0, None, 1, 0, 0]
    assert outcomes[0][1] == S.process(_packets()[0], ME_SECRET)
    assert asked[0] == asked[1]


@needs_compiled
def test_the_compiled_path_gives_the_same_outcomes_and_asks_the_same_questions():
    fast, fast_asked = _run(True)
    slow, slow_asked = _run(False)
    assert fast == slow
    # Key by key rather than packet by packet: the same questions, in packet order under each key.
    assert fast_asked == [q for q in slow_asked if q[0] == 0] + [q for q in slow_asked if q[0] == 1]


@needs_compiled
@pytest.mark.parametrize("seed", range(5))
def test_random_routes_unwrap_to_the_same_packets(seed):
    rng = random.Random(seed)
    keys = [S.generate_node_keypair(rng.randbytes) for _ in range(5)]
    route = [S.Hop(rng.randbytes(16), pub, rng.randrange(100) if i < 4 else 0) for i, (_, pub) in enumerate(keys)]
    packets = [S.build_forward(route, rng.randbytes(MAILBOX_ID_BYTES), rng.randbytes(rng.randrange(1, 3000)))
               for _ in range(8)]
    for secret, _ in keys:
        fast = sphinxbatch.process_batch(packets, [secret], lambda i, t: False, compiled=True)
        slow = sphinxbatch.process_batch(packets, [secret], lambda i, t: False, compiled=False)
        assert fast == slow
        packets = [o.packet for _, o in fast if isinstance(o, S.Forward)]
    assert not packets  # the last hop delivered every one
