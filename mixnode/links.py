"""Outbound links of a node: one bounded queue and one persistent connection per next hop.

::

    send(node_id, packet) ──▶ per-next-hop queue (link_queue_limit) ──▶ one task: connect (backoff),
                              full: Drop(LINK_FULL)                      HELLO, write batches of ≤ 64

Every connection starts with the link handshake (:mod:`mixnode.handshake`): the node at the
other end must prove it holds the link key its descriptor publishes, and learns ours. Links to
every reachable node of the next layer are opened with each consensus and kept up
(:meth:`LinkPool.keep`; a CONTROL ``ping`` every :data:`KEEPALIVE` seconds on a quiet link), so
no packet waits for a connection set-up and no observer learns from a link's first packet when
it came. A node forwards only to the next layer (the decision step drops anything else), so a
link opens only to such a node. A queue never grows past its limit and a writer never blocks.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.abc

from anonmail.core.pki import Consensus, NodeDescriptor
from anonmail.core.wire import Control, Packet, encode_frame
from anonmail.errors import LinkAuthError, TransportError, WireError
from anonmail.net.framed import FramedStream
from anonmail.net.router import Router
from mixnode.decisions import DropReason
from mixnode.handshake import initiate
from mixnode.topology import next_hops

__all__ = ["LinkPool", "LinkStats", "Link"]

log = logging.getLogger("mixnode.links")

#: Reconnect backoff of outbound links, seconds.
BACKOFF_INITIAL, BACKOFF_MAX = 0.2, 10.0
CONNECT_TIMEOUT = 60.0
SEND_TIMEOUT = 60.0
#: Seconds between checks for a new consensus whose next-layer nodes need links.
LINK_REFRESH = 5.0
#: Packets written to a connection in one send.
WRITE_BATCH = 64
#: Bound on the link handshake (connect excluded), seconds.
HANDSHAKE_TIMEOUT = 20.0
#: A quiet link sends a ping this often, so the receiving end's idle timeout spares it.
KEEPALIVE = 60.0
_PING = encode_frame(Control({"type": "ping"}))


@dataclass
class LinkStats:
    """Counters the links bump (shared with the node's own counters)."""

    forwarded: int = 0
    link_failures: int = 0
    dropped: Counter = field(default_factory=Counter)
    #: Outbound handshakes that failed, by LinkAuthError reason.
    link_auth_failures: Counter = field(default_factory=Counter)


@dataclass
class Link:
    """An outbound link to one next hop: a bounded queue drained by one connection task."""

    node_id: bytes
    name: str
    send: anyio.abc.ObjectSendStream
    receive: anyio.abc.ObjectReceiveStream
    connected: bool = False
    #: Whether the peer proved its link key on the current connection.
    authenticated: bool = False
    failures: int = 0
    #: Connect at once and stay connected, packets or not (links to the next layer).
    eager: bool = False


class LinkPool:
    """The links of one node; serve them with ``await tg.start(pool.run)``.

    ``consensus()`` returns the consensus the node holds (or None); ``link_loss`` drops each
    packet handed to :meth:`send` with that probability (test networks and demos only).
    """

    def __init__(
        self,
        router: Router,
        consensus: Callable[[], Consensus | None],
        stats: LinkStats,
        *,
        link_secret: bytes,
        queue_limit: int,
        rng: random.Random,
        link_loss: float = 0.0,
    ) -> None:
        self.router = router
        self.consensus = consensus
        self.link_secret = link_secret
        self.stats = stats
        self.queue_limit = queue_limit
        self.rng = rng
        self.link_loss = link_loss
        self._links: dict[bytes, Link] = {}
        self._index: tuple[int, dict[bytes, NodeDescriptor]] = (-1, {})
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the link tasks until cancelled; ``started()`` once :meth:`send` may be called."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            for link in self._links.values():
                link.send.close()
                link.receive.close()
            self._links.clear()

    def lookup(self, node_id: bytes) -> NodeDescriptor | None:
        """The descriptor of a node in the consensus we hold."""
        consensus = self.consensus()
        if consensus is None:
            return None
        if self._index[0] != id(consensus):
            self._index = (id(consensus), {d.node_id: d for d in consensus.nodes})
        return self._index[1].get(node_id)

    def address_for(self, node_id: bytes) -> str | None:
        """The first address of ``node_id`` a transport here can reach (None if none, unknown or no link key)."""
        descriptor = self.lookup(node_id)
        if descriptor is None or descriptor.link_key is None:
            return None
        for address in descriptor.addresses:
            if self.router.can_reach(address):
                return address
        return None

    def open(self, node_id: bytes, *, eager: bool = False) -> Link | None:
        """The link to ``node_id``, started if new (None if the node is not in the consensus)."""
        link = self._links.get(node_id)
        if link is not None:
            link.eager = link.eager or eager
            return link
        descriptor = self.lookup(node_id)
        if descriptor is None or self._tg is None:
            return None
        send, receive = anyio.create_memory_object_stream[bytes](self.queue_limit)
        link = Link(node_id, descriptor.name, send, receive, eager=eager)
        self._links[node_id] = link
        self._tg.start_soon(self._run_link, link)
        return link

    def send(self, node_id: bytes, packet: bytes) -> DropReason | None:
        """Queue a packet on the link to ``node_id``; the reason it was dropped, if it was (counted)."""
        reason = self._queue(node_id, packet)
        if reason is not None:
            self.stats.dropped[reason] += 1
        return reason

    def _queue(self, node_id: bytes, packet: bytes) -> DropReason | None:
        link = self.open(node_id)
        if link is None:
            return DropReason.UNKNOWN_NEXT_HOP
        if self.link_loss and self.rng.random() < self.link_loss:
            return DropReason.LINK_LOSS
        try:
            link.send.send_nowait(packet)
        except anyio.WouldBlock:
            return DropReason.LINK_FULL
        return None

    async def keep(self, me: Callable[[], bytes]) -> None:
        """Hold a connection open to every reachable node of the next layer, before any packet.

        A link set up on a packet's arrival delays that packet by the connection set-up (seconds
        over Tor or I2P on first contact) and tells an observer of the link when its first packet
        came; links opened with each consensus and kept up carry their first packet like any other.
        """
        seen = None
        while True:
            consensus = self.consensus()
            if consensus is not None and consensus is not seen:
                seen = consensus
                for node in sorted(next_hops(consensus, me())):
                    if self.address_for(node) is not None:
                        self.open(node, eager=True)
            await anyio.sleep(LINK_REFRESH)

    def status(self) -> dict:
        """Per-link state for the status file (node names are public)."""
        return {
            link.name: {"connected": link.connected, "authenticated": link.authenticated,
                        "queued": link.send.statistics().current_buffer_used, "failures": link.failures}
            for link in self._links.values()
        }

    def connected(self) -> dict[str, bool]:
        """Whether each link is connected, by node name."""
        return {link.name: link.connected for link in self._links.values()}

    async def _run_link(self, link: Link) -> None:
        """Keep one persistent connection to a next hop and drain its queue into it."""
        backoff = BACKOFF_INITIAL
        unsent = b""
        unsent_count = 0
        while True:
            if not unsent and not link.eager:
                first = await link.receive.receive()
                unsent, unsent_count = encode_frame(Packet(first)), 1
            address = self.address_for(link.node_id)
            if address is None:
                self.stats.dropped[DropReason.UNKNOWN_NEXT_HOP] += unsent_count
                unsent, unsent_count = b"", 0
                if link.eager:  # it left the consensus (or we cannot reach it): wait, as a lazy link
                    link.eager = False
                continue
            try:
                with anyio.fail_after(CONNECT_TIMEOUT):
                    stream = await self.router.connect(address)
            except (TransportError, TimeoutError) as exc:
                link.failures += 1
                self.stats.link_failures += 1
                log.info("link to %s failed (%s); retrying in %.1f s", link.name, type(exc).__name__, backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            link.connected = True
            up_since = anyio.current_time()
            try:
                async with stream:
                    descriptor = self.lookup(link.node_id)
                    if descriptor is None or descriptor.link_key is None:
                        continue
                    framed = FramedStream(stream)
                    with anyio.fail_after(HANDSHAKE_TIMEOUT):
                        await initiate(framed, self.link_secret, descriptor.link_key)
                    link.authenticated = True
                    up_since = anyio.current_time()
                    if unsent:
                        with anyio.fail_after(SEND_TIMEOUT):
                            await stream.send(unsent)
                    self.stats.forwarded += unsent_count
                    unsent, unsent_count = b"", 0
                    while True:
                        packets = []
                        with anyio.move_on_after(KEEPALIVE):
                            packets.append(await link.receive.receive())
                        while packets and len(packets) < WRITE_BATCH:
                            try:
                                packets.append(link.receive.receive_nowait())
                            except anyio.WouldBlock:
                                break
                        unsent = b"".join(encode_frame(Packet(p)) for p in packets) if packets else _PING
                        unsent_count = len(packets)
                        with anyio.fail_after(SEND_TIMEOUT):
                            await stream.send(unsent)
                        self.stats.forwarded += unsent_count
                        unsent, unsent_count = b"", 0
            except LinkAuthError as exc:
                link.failures += 1
                self.stats.link_failures += 1
                self.stats.link_auth_failures[exc.reason] += 1
                log.warning("link to %s refused: %s; retrying in %.1f s", link.name, exc, backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except (TransportError, TimeoutError, WireError, anyio.EndOfStream) as exc:  # EndOfStream: our queue closed
                link.failures += 1
                self.stats.link_failures += 1
                log.info("link to %s broke (%s); reconnecting", link.name, type(exc).__name__)
                if link.authenticated and anyio.current_time() - up_since > BACKOFF_MAX:
                    backoff = BACKOFF_INITIAL  # it was up a while: an ordinary break
                link.connected = link.authenticated = False
                await anyio.sleep(backoff)  # never a busy loop, e.g. on a peer that closes at once
                backoff = min(backoff * 2, BACKOFF_MAX)
            finally:
                link.connected = link.authenticated = False
