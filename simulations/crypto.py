"""``--crypto``: carry real Sphinx packets through the simulation and follow what they say.

Each packet is built with :func:`anonmail.core.sphinx.build_forward` along the route and delays
the policy drew; at every hop the node unwraps it with :func:`anonmail.core.sphinx.process`, and
the simulation takes the hop's delay from the unwrapped routing command. The next hop and the
final mailbox must match the opaque route, else :class:`SimulationMismatch` is raised. Sphinx
randomness comes from a stream of its own, so a ``--crypto`` run draws exactly the same traffic
as the opaque run with the same seed and gives the same metrics: that is the check that the two
modes agree. About 1 ms per packet built: meant for small networks.
"""

from __future__ import annotations

import random
import struct

from anonmail.core import sphinx
from anonmail.core.sizes import MAILBOX_ID_BYTES

__all__ = ["SphinxLayer", "SimulationMismatch"]

_PAYLOAD = struct.Struct(">BBq")  # magic, kind, message id (-1 for cover)
_MAGIC = 0xA5
_NOBODY = b"\xff" * MAILBOX_ID_BYTES  # drop cover and mix loops: stored nowhere


class SimulationMismatch(AssertionError):
    """A Sphinx packet disagreed with the route the simulator drew (a bug, not an input error)."""


class SphinxLayer:
    """Node keys for one simulated network, and the wrap/unwrap hooks the engine calls."""

    def __init__(self, sim, rng: random.Random) -> None:
        self.sim = sim
        self._bytes = rng.randbytes
        self.keys = [sphinx.generate_node_keypair(self._bytes) for _ in sim.refs]
        self.index = {ref.node_id: ref.data for ref in sim.refs}
        self.unwrapped = 0

    def wrap(self, pkt) -> None:
        """Build the Sphinx packet for ``pkt``'s route and delays (first hop excluded: the sender)."""
        refs = self.sim.refs
        hops = [
            sphinx.Hop(refs[node].node_id, self.keys[node][1], round(delay * 1000))
            for node, delay in zip(pkt.route, pkt.delays)
        ]
        mid = pkt.msg.mid if pkt.msg is not None else -1
        payload = _PAYLOAD.pack(_MAGIC, pkt.kind, mid)
        pkt.sphinx = sphinx.build_forward(hops, _mailbox(pkt.dest), payload, self._bytes)

    def hop(self, pkt, node: int) -> None:
        """Unwrap at ``node``; take its delay from the packet; check next hop or mailbox."""
        result = sphinx.process(pkt.sphinx, self.keys[node][0])
        self.unwrapped += 1
        pos = pkt.pos
        if isinstance(result, sphinx.Forward):
            if pos == len(pkt.route) - 1 or self.index.get(result.next_node) != pkt.route[pos + 1]:
                raise SimulationMismatch(f"packet at {self.sim.refs[node].name} names an unexpected next hop")
            pkt.delays[pos] = result.delay_ms / 1000
            pkt.sphinx = result.packet
            return
        if not isinstance(result, sphinx.Deliver) or pos != len(pkt.route) - 1:
            raise SimulationMismatch(f"packet delivered early at {self.sim.refs[node].name}")
        magic, kind, mid = _PAYLOAD.unpack(result.payload)
        expected = pkt.msg.mid if pkt.msg is not None else -1
        if magic != _MAGIC or kind != pkt.kind or mid != expected or result.mailbox_id != _mailbox(pkt.dest):
            raise SimulationMismatch(f"payload or mailbox changed on the way to {self.sim.refs[node].name}")
        pkt.sphinx = None


def _mailbox(dest: int) -> bytes:
    return _NOBODY if dest < 0 else dest.to_bytes(MAILBOX_ID_BYTES, "big")
