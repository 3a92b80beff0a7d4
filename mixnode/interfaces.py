"""The engine's seam: the services a provider plugs into the mix engine.

A :class:`~mixnode.node.MixNode` is the whole forwarding engine. A node that is more than a
mix (a provider) hands it a :class:`NodeServices` at construction; the engine calls these
methods, and nothing of the provider reaches into the engine's private state.
"""

from __future__ import annotations

from typing import Protocol

from anonmail.net.framed import FramedStream
from mixnode.decisions import Decision, DropReason, Stored, Unwrapped
from mixnode.inbound import ClientSlot

__all__ = ["NodeServices"]


class NodeServices(Protocol):
    """What a node that is more than a mix adds to the engine (a provider: mailboxes, users).

    The engine calls these and nothing else; a plain mix has none.
    """

    #: The role published in the node's descriptor.
    role: str
    #: What a final-hop packet that is no loop of ours is dropped as.
    foreign_final: DropReason

    async def open(self) -> None:
        """Before serving: open stores (may use :meth:`MixNode.blocking`)."""

    def close(self) -> None:
        """After serving: close stores."""

    def deliver(self, results: list[Unwrapped], now: float) -> list[Unwrapped | Decision]:
        """(Worker thread.) Turn deliveries into :class:`Stored` or :class:`Drop`; leave the rest."""

    def stored(self, decision: Stored) -> None:
        """(Event loop.) Book a committed delivery (its ACK is sent by the engine)."""

    async def serve_client(self, framed: FramedStream, slot: ClientSlot) -> None:
        """Serve one connection that said HELLO as a CLIENT; ``slot.promote()`` once the user logged in."""

    def status_fields(self) -> dict:
        """Fields added to the node's status."""
