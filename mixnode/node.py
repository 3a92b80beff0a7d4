"""The mix node service: unwrap, replay check, hold for the sender's delay, forward; loop cover.

Pipeline (every queue bounded; overload drops and counts, it never grows or blocks a reader)::

    connections ──PACKET──▶ inbound queue ──▶ unwrap workers (threads, batches) ──▶ replay store
         (one task each,     (inbound_limit)    sphinx.process + tag check,        (fsynced before
          never blocks)                          results back on the event loop      forwarding)
                                  │
                                  ▼
              delay heap (queue_limit) ──due──▶ per-next-hop link queue ──▶ persistent connection
                                                 (link_queue_limit)          (reconnect w/ backoff)

What a mix learns (DESIGN.md §7): the previous and next hop of each packet and the delay chosen
for it at this hop; never the sender, the recipient, the position on the path beyond its own
layer, or the content. Logs carry counters and node names from the public consensus only.

Time: delays and schedules use anyio's clock (virtual under trio's MockClock in tests); epochs
use ``wall_clock()`` (Unix seconds), injected so tests can move it too.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
from nacl.bindings import crypto_scalarmult_base

from anonmail.core import sphinx
from anonmail.core.fragments import KIND_LOOP, encode_cover_payload
from anonmail.core.keys import IdentityKey, node_id, read_key_file, write_key_file
from anonmail.core.pki import Consensus, epoch_at, epoch_start, sign_descriptor
from anonmail.core.policy import PoissonSchedule, loop_route, sample_delay_ms
from anonmail.core.sizes import MAILBOX_ID_BYTES
from anonmail.core.wire import Close, Hello, Packet, Role, encode_frame
from anonmail.clients.directory import DirectoryClient, upload_descriptor
from anonmail.daemon.containment import FaultCounter
from anonmail.daemon.identity import load_or_create_identity
from anonmail.daemon.node_config import NodeConfig
from anonmail.daemon.status import write_status
from anonmail.errors import (
    DirectoryError,
    HeaderMacError,
    LinkError,
    PacketError,
    PathError,
    StoreError,
    TransportError,
    WireError,
)
from anonmail.net.base import Transport
from anonmail.net.framed import FramedStream
from anonmail.net.router import Router
from mixnode.replay import ReplayStore

__all__ = ["MixNode"]

log = logging.getLogger("mixnode")

REPLAY_DB = "replay.sqlite"
#: Reconnect backoff of outbound links, seconds.
BACKOFF_INITIAL, BACKOFF_MAX = 0.2, 10.0
CONNECT_TIMEOUT = 60.0
#: Seconds between checks for a new consensus whose next-layer nodes need links.
LINK_REFRESH = 5.0
SEND_TIMEOUT = 60.0
HELLO_TIMEOUT = 30.0
#: Most inbound connections served at once; more are closed at once.
MAX_INBOUND_CONNECTIONS = 512
#: Seconds around an epoch boundary during which the neighbouring epoch's key is also tried.
EPOCH_GRACE_MAX = 60.0
STATUS_INTERVAL = 1.0
_HELLO_MIX = encode_frame(Hello(1, Role.MIX))


@dataclass
class _Link:
    """An outbound link to one next hop: a bounded queue drained by one connection task."""

    node_id: bytes
    name: str
    send: anyio.abc.ObjectSendStream
    receive: anyio.abc.ObjectReceiveStream
    connected: bool = False
    failures: int = 0
    #: Connect at once and stay connected, packets or not (links to the next layer).
    eager: bool = False


@dataclass
class Stats:
    """The node's counters (what ``mixnode status`` shows)."""

    received: int = 0
    forwarded: int = 0
    dropped: Counter = field(default_factory=Counter)
    loops_sent: int = 0
    loops_returned: int = 0
    loops_lost: int = 0
    link_failures: int = 0

    def as_dict(self) -> dict:
        """JSON-ready counters."""
        return {
            "received": self.received,
            "forwarded": self.forwarded,
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_total": sum(self.dropped.values()),
            "loops_sent": self.loops_sent,
            "loops_returned": self.loops_returned,
            "loops_lost": self.loops_lost,
            "link_failures": self.link_failures,
        }


class MixNode:
    """One mix node; ``await node.run()`` serves until cancelled (use ``tg.start(node.run)``).

    Subclass hooks (the provider uses them): :attr:`role` goes into the descriptor;
    :meth:`_serve_client` serves connections that announce HELLO role CLIENT when
    :attr:`serves_clients` is true; :meth:`_process_batch` and :meth:`_dispatch` act on unwrap
    results. ``link_loss`` drops each packet sent on a link with that probability (test
    networks and demos only; counted as ``dropped["link_loss"]``).
    """

    #: The role published in this node's descriptor.
    role = "mix"
    #: Whether CLIENT connections get :meth:`_serve_client` (otherwise they are read as packets).
    serves_clients = False

    def __init__(
        self,
        config: NodeConfig,
        transports: Sequence[Transport],
        *,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        link_loss: float = 0.0,
    ) -> None:
        if not 0.0 <= link_loss < 1.0:
            raise ValueError(f"link_loss must be in [0, 1), got {link_loss}")
        self.link_loss = link_loss
        self.config = config
        self.transports = list(transports)
        self.wall_clock = wall_clock
        # Paths and delays of our own loops must be unpredictable: system randomness by default.
        self.rng = rng if rng is not None else random.SystemRandom()
        self.stats = Stats()
        #: Items (packets, requests) dropped after an unexpected error, by reason (logged once each).
        self.faults = FaultCounter(log, f"{self.role} {config.name}")
        self.addresses: list[str] = []
        self.identity: IdentityKey | None = None
        self.router: Router | None = None
        self.directory: DirectoryClient | None = None
        self.replay: ReplayStore | None = None
        self._secrets: dict[int, bytes] = {}
        self._publics: dict[int, bytes] = {}
        self._published: set[int] = set()
        self._heap: list[tuple[float, int, bytes, bytes]] = []
        self._seq = itertools.count()
        self._wake = anyio.Event()
        self._links: dict[bytes, _Link] = {}
        self._pending_loops: dict[bytes, float] = {}
        self._inbound_connections = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._index: tuple[int, dict[bytes, object]] = (-1, {})

    # ------------------------------------------------------------------ lifecycle

    @property
    def node_id(self) -> bytes:
        """This node's routing id."""
        assert self.identity is not None
        return node_id(self.identity.public)

    async def run(self, *, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started(self)`` once listening."""
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.identity = await self._blocking(load_or_create_identity, config.data_dir)
        self.replay = await self._blocking(ReplayStore, config.data_dir / REPLAY_DB)
        now_epoch = self.epoch()
        for epoch in (now_epoch - 1, now_epoch, now_epoch + 1):
            await self._blocking(self._load_epoch_key, epoch, epoch >= now_epoch)
        loaded = await self._blocking(self.replay.load, [now_epoch - 1, now_epoch, now_epoch + 1])
        inbound_send, inbound_receive = anyio.create_memory_object_stream[tuple[float, bytes]](config.inbound_limit)
        self._inbound_send = inbound_send
        limiter = anyio.CapacityLimiter(max(1, config.workers))
        try:
            async with AsyncExitStack() as stack:
                for transport in self.transports:
                    await stack.enter_async_context(transport)
                self.router = Router(self.transports, production=config.production)
                self.directory = DirectoryClient(
                    self.router,
                    [(a.address, a.public_key) for a in config.authorities],
                    config.threshold,
                    production=config.production,
                    wall_clock=self.wall_clock,
                    epoch_seconds=config.epoch_seconds,
                )
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    self.addresses = await self.router.listen(self._serve_connection)
                    log.info("mix %s (layer %d) listening on %d address(es); %d replay tags loaded",
                             config.name, config.layer, len(self.addresses), loaded)
                    for _ in range(max(1, config.workers)):
                        tg.start_soon(self._unwrap_worker, inbound_receive.clone(), limiter)
                    tg.start_soon(self._scheduler)
                    tg.start_soon(self._publisher)
                    await tg.start(self.directory.run)
                    tg.start_soon(self._loop_cover)
                    tg.start_soon(self._link_keeper)
                    tg.start_soon(self._status_writer)
                    task_status.started(self)
        finally:
            inbound_send.close()
            inbound_receive.close()
            for link in self._links.values():
                link.send.close()
                link.receive.close()
            self._links.clear()
            if self.replay is not None:
                self.replay.close()
            self._write_status(False)

    async def _blocking(self, fn: Callable, *args: object) -> object:
        """Run file/SQLite/crypto work in a thread (inline when ``workers = 0``, for virtual time)."""
        if self.config.workers == 0:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)

    def epoch(self) -> int:
        """The current epoch by the wall clock."""
        return epoch_at(self.wall_clock(), self.config.epoch_seconds)

    # ------------------------------------------------------------------ keys

    def _key_path(self, epoch: int) -> Path:
        return self.config.data_dir / f"sphinx-{epoch}.key"

    def _load_epoch_key(self, epoch: int, create: bool) -> None:
        """Load (or make, for the current and next epoch) the Sphinx key of an epoch."""
        if epoch in self._secrets:
            return
        path = self._key_path(epoch)
        if path.exists():
            secret = read_key_file(path)
        elif create:
            secret, _ = sphinx.generate_node_keypair()
            write_key_file(path, secret)
        else:
            return
        self._secrets[epoch] = secret
        self._publics[epoch] = crypto_scalarmult_base(secret)

    def _forget_epochs_before(self, epoch: int) -> None:
        """Delete keys of finished epochs (forward secrecy) and their replay tags."""
        for old in [e for e in self._secrets if e < epoch]:
            del self._secrets[old]
            self._publics.pop(old, None)
        for path in self.config.data_dir.glob("sphinx-*.key"):
            try:
                if int(path.stem.split("-", 1)[1]) < epoch:
                    path.unlink()
            except (ValueError, OSError):
                continue
        assert self.replay is not None
        self.replay.purge_before(epoch)

    # ------------------------------------------------------------------ inbound

    async def _serve_connection(self, stream: anyio.abc.ByteStream) -> None:
        """Read frames from one peer; packets go to the inbound queue without ever waiting."""
        if self._inbound_connections >= MAX_INBOUND_CONNECTIONS:
            self.stats.dropped["too_many_connections"] += 1
            return
        self._inbound_connections += 1
        framed = FramedStream(stream)
        try:
            with anyio.fail_after(HELLO_TIMEOUT):
                hello = await framed.expect_hello()
            if hello.role == Role.CLIENT and self.serves_clients:
                await self._serve_client(framed)
                return
            while True:
                frames = await framed.receive_batch()
                if frames is None:
                    return
                now = anyio.current_time()
                for frame in frames:
                    if isinstance(frame, Packet):
                        self.stats.received += 1
                        try:
                            self._inbound_send.send_nowait((now, frame.data))
                        except anyio.WouldBlock:
                            self.stats.dropped["queue_full"] += 1
                    elif isinstance(frame, Close):
                        return
                    else:
                        self.stats.dropped["unexpected_frame"] += 1
        except WireError:
            self.stats.dropped["bad_frame"] += 1
        except TimeoutError:
            self.stats.dropped["no_hello"] += 1
        except LinkError:
            pass  # the peer went away
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # our inbound queue is closed: the node is stopping
        finally:
            self._inbound_connections -= 1

    async def _serve_client(self, framed: FramedStream) -> None:
        """Hook: serve a user agent's session (providers); a mix never gets here."""

    async def _unwrap_worker(
        self, receive: anyio.abc.ObjectReceiveStream, limiter: anyio.CapacityLimiter
    ) -> None:
        """Take batches off the inbound queue, unwrap them in a thread, act on the results."""
        batch_size = self.config.batch
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < batch_size:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                packets = [p for _, p in batch]
                try:
                    if self.config.workers == 0:  # inline: deterministic under a virtual clock
                        await anyio.lowlevel.checkpoint()
                        results = self._process_batch(packets, self.wall_clock())
                    else:
                        results = await anyio.to_thread.run_sync(
                            self._process_batch, packets, self.wall_clock(), limiter=limiter
                        )
                except Exception as exc:  # containment: a batch never stops the node
                    self.faults.record(exc, "packet batch")
                    results = ["unexpected_error"] * len(packets)
                for (received_at, _), result in zip(batch, results, strict=True):
                    try:
                        self._dispatch(received_at, result)
                    except Exception as exc:  # containment: one packet never stops the node
                        self.faults.record(exc, "packet")
                        self.stats.dropped["unexpected_error"] += 1

    def _candidate_epochs(self, now: float) -> list[int]:
        seconds = self.config.epoch_seconds
        epoch = epoch_at(now, seconds)
        grace = min(EPOCH_GRACE_MAX, seconds / 10)
        candidates = [epoch]
        if now - epoch_start(epoch, seconds) < grace:
            candidates.append(epoch - 1)
        if epoch_start(epoch + 1, seconds) - now < grace:
            candidates.append(epoch + 1)
        return candidates

    def _process_batch(self, packets: list[bytes], now: float) -> list[object]:
        """(Worker thread.) Unwrap each packet; record new tags durably before returning."""
        assert self.replay is not None
        replay = self.replay
        candidates = [(e, self._secrets[e]) for e in self._candidate_epochs(now) if e in self._secrets]
        results: list[object] = []
        fresh: dict[int, list[bytes]] = {}
        for packet in packets:
            outcome: object = "bad_mac"
            for epoch, secret in candidates:
                try:
                    outcome = sphinx.process(packet, secret, is_replay=lambda tag, e=epoch: replay.check_and_add(e, tag))
                except HeaderMacError:
                    continue
                except PacketError as exc:
                    outcome = exc.reason
                except Exception as exc:  # containment: one packet never stops the node
                    self.faults.record(exc, "packet")
                    outcome = "unexpected_error"
                else:
                    fresh.setdefault(epoch, []).append(outcome.tag)  # type: ignore[attr-defined]
                break
            results.append(outcome)
        try:
            for epoch, tags in fresh.items():
                replay.persist(epoch, tags)
        except StoreError as exc:
            # Without a durable tag the packet could be replayed after a restart: drop the batch.
            log.error("%s", exc)
            return ["store_error" if not isinstance(r, str) else r for r in results]
        return results

    def _dispatch(self, received_at: float, result: object) -> None:
        """Act on one unwrap result on the event loop."""
        if isinstance(result, str):
            self.stats.dropped[result] += 1
        elif isinstance(result, sphinx.Forward):
            if result.delay_ms == 0:
                self._send_to(result.next_node, result.packet)
            elif len(self._heap) >= self.config.queue_limit:
                self.stats.dropped["queue_full"] += 1
            else:
                due = received_at + result.delay_ms / 1000
                heapq.heappush(self._heap, (due, next(self._seq), result.next_node, result.packet))
                self._wake.set()
        elif isinstance(result, sphinx.Deliver) and result.mailbox_id in self._pending_loops:
            del self._pending_loops[result.mailbox_id]
            self.stats.loops_returned += 1
        else:
            self.stats.dropped["not_for_a_mix"] += 1

    # ------------------------------------------------------------------ holding and sending

    async def _scheduler(self) -> None:
        """Release held packets when their delay is over."""
        heap = self._heap
        while True:
            if not heap:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            delay = heap[0][0] - anyio.current_time()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._wake.wait()
                if self._wake.is_set():
                    self._wake = anyio.Event()
                continue
            now = anyio.current_time()
            while heap and heap[0][0] <= now:
                _, _, next_node, packet = heapq.heappop(heap)
                self._send_to(next_node, packet)

    def _lookup(self, node_id: bytes):
        """The descriptor of a next hop in the consensus we hold (current, else next)."""
        assert self.directory is not None
        consensus: Consensus | None = self.directory.current()
        if consensus is None:
            return None
        if self._index[0] != id(consensus):
            self._index = (id(consensus), {d.node_id: d for d in consensus.nodes})
        return self._index[1].get(node_id)

    def _open_link(self, node_id: bytes, *, eager: bool = False) -> _Link | None:
        """The link to ``node_id``, started if new (None if the node is not in the consensus)."""
        link = self._links.get(node_id)
        if link is not None:
            link.eager = link.eager or eager
            return link
        descriptor = self._lookup(node_id)
        if descriptor is None:
            return None
        send, receive = anyio.create_memory_object_stream[bytes](self.config.link_queue_limit)
        link = _Link(node_id, descriptor.name, send, receive, eager=eager)
        self._links[node_id] = link
        assert self._tg is not None
        self._tg.start_soon(self._run_link, link)
        return link

    def _send_to(self, node_id: bytes, packet: bytes) -> None:
        """Queue a packet on the link to ``node_id`` (drop and count when impossible or full)."""
        link = self._open_link(node_id)
        if link is None:
            self.stats.dropped["unknown_next_hop"] += 1
            return
        if self.link_loss and self.rng.random() < self.link_loss:
            self.stats.dropped["link_loss"] += 1
            return
        try:
            link.send.send_nowait(packet)
        except anyio.WouldBlock:
            self.stats.dropped["link_full"] += 1

    def _next_layer(self, consensus: Consensus) -> list[bytes]:
        """Ids of the nodes this one forwards to: the next mix layer; providers after the last."""
        me = consensus.by_id(self.node_id)
        if me is None:
            return []
        topology = consensus.topology()
        if me.layer < len(topology.layers):
            candidates = topology.layers[me.layer]  # layer 0 (a provider) feeds layer 1, and so on
        else:
            candidates = topology.providers
        return [n.node_id for n in candidates if n.node_id != self.node_id]

    async def _link_keeper(self) -> None:
        """Hold a connection open to every reachable node of the next layer, before any packet.

        A link set up on a packet's arrival delays that packet by the connection set-up (seconds
        over Tor or I2P on first contact) and tells an observer of the link when its first packet
        came; links opened with each consensus and kept up carry their first packet like any other.
        """
        assert self.directory is not None
        seen = None
        while True:
            consensus = self.directory.current()
            if consensus is not None and consensus is not seen:
                seen = consensus
                for node in self._next_layer(consensus):
                    if self._address_for(node) is not None:
                        self._open_link(node, eager=True)
            await anyio.sleep(LINK_REFRESH)

    def _address_for(self, node_id: bytes) -> str | None:
        assert self.router is not None
        descriptor = self._lookup(node_id)
        if descriptor is None:
            return None
        for address in descriptor.addresses:
            if self.router.can_reach(address):
                return address
        return None

    async def _run_link(self, link: _Link) -> None:
        """Keep one persistent connection to a next hop and drain its queue into it."""
        assert self.router is not None
        backoff = BACKOFF_INITIAL
        unsent = b""
        unsent_count = 0
        while True:
            if not unsent and not link.eager:
                first = await link.receive.receive()
                unsent, unsent_count = encode_frame(Packet(first)), 1
            address = self._address_for(link.node_id)
            if address is None:
                self.stats.dropped["unknown_next_hop"] += unsent_count
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
            backoff = BACKOFF_INITIAL
            link.connected = True
            try:
                async with stream:
                    with anyio.fail_after(SEND_TIMEOUT):
                        await stream.send(_HELLO_MIX + unsent)
                    self.stats.forwarded += unsent_count
                    unsent, unsent_count = b"", 0
                    while True:
                        packets = [await link.receive.receive()]
                        while len(packets) < 64:
                            try:
                                packets.append(link.receive.receive_nowait())
                            except anyio.WouldBlock:
                                break
                        unsent = b"".join(encode_frame(Packet(p)) for p in packets)
                        unsent_count = len(packets)
                        with anyio.fail_after(SEND_TIMEOUT):
                            await stream.send(unsent)
                        self.stats.forwarded += unsent_count
                        unsent, unsent_count = b"", 0
            except (TransportError, TimeoutError, anyio.EndOfStream) as exc:  # EndOfStream: our queue closed
                link.failures += 1
                self.stats.link_failures += 1
                log.info("link to %s broke (%s); reconnecting", link.name, type(exc).__name__)
            finally:
                link.connected = False

    # ------------------------------------------------------------------ directory

    async def _publisher(self) -> None:
        """Publish descriptors for this epoch and the next; rotate keys at epoch changes."""
        assert self.directory is not None and self.router is not None and self.identity is not None
        pins = [a.address for a in self.config.authorities]
        while True:
            epoch = self.epoch()
            retry = False
            for target in (epoch, epoch + 1):
                if target in self._published:
                    continue
                await self._blocking(self._load_epoch_key, target, True)
                descriptor = sign_descriptor(
                    self.identity,
                    name=self.config.name,
                    role=self.role,
                    layer=self.config.layer,
                    epoch=target,
                    sphinx_key=self._publics[target],
                    addresses=self.addresses,
                    production=self.config.production,
                )
                try:
                    accepted = await upload_descriptor(self.router, pins, descriptor)
                except DirectoryError as exc:
                    if exc.reason == "too_late":
                        # Joined mid-epoch: this epoch's document exists; we appear in the next.
                        log.info("epoch %d consensus already built; listed from epoch %d", target, target + 1)
                        self._published.add(target)
                        continue
                    log.warning("descriptor upload for epoch %d failed: %s", target, exc)
                    accepted = 0
                if accepted >= min(self.config.threshold, len(pins)):
                    self._published.add(target)
                else:
                    retry = True
            await self._blocking(self._forget_epochs_before, epoch - 1)
            self._published = {e for e in self._published if e >= epoch - 1}
            until_next = epoch_start(epoch + 1, self.config.epoch_seconds) - self.wall_clock()
            await anyio.sleep(2.0 if retry else max(0.5, min(until_next + 0.5, 30.0)))

    # ------------------------------------------------------------------ cover traffic

    async def _loop_cover(self) -> None:
        """Send loop cover at rate λ_M through the other layers back to this node."""
        assert self.directory is not None and self.identity is not None
        schedule = PoissonSchedule(self.config.lambda_loop, self.rng, start=anyio.current_time())
        while True:
            deadline = schedule.next()
            if deadline == float("inf"):
                await anyio.sleep_forever()
            await anyio.sleep(max(0.0, deadline - anyio.current_time()))
            consensus = self.directory.current()
            me = consensus.by_id(self.node_id) if consensus is not None else None
            if me is None:
                continue
            try:
                route = loop_route(self.rng, consensus.topology(), me.node_ref())
            except PathError:
                self.stats.dropped["loop_no_path"] += 1
                continue
            hops = []
            for i, ref in enumerate(route):
                last = i == len(route) - 1
                is_mix = ref.layer > 0
                delay = sample_delay_ms(self.rng, self.config.loop_delay_mean) if is_mix and not last else 0
                hops.append(sphinx.Hop(ref.node_id, ref.data.sphinx_key, delay))  # type: ignore[attr-defined]
            mailbox = os.urandom(MAILBOX_ID_BYTES)
            try:
                packet = await self._blocking(sphinx.build_forward, hops, mailbox, encode_cover_payload(KIND_LOOP))
            except PathError:  # NodeKeyError: a hop's key is unusable (refused at parse time already)
                self.stats.dropped["loop_bad_key"] += 1
                continue
            self._pending_loops[mailbox] = anyio.current_time()
            self.stats.loops_sent += 1
            self._send_to(route[0].node_id, packet)

    def _expire_loops(self) -> None:
        """Count loops that did not come back in time as lost."""
        limit = anyio.current_time() - self.config.loop_timeout
        for mailbox in [m for m, sent in self._pending_loops.items() if sent < limit]:
            del self._pending_loops[mailbox]
            self.stats.loops_lost += 1

    # ------------------------------------------------------------------ status

    def status(self, running: bool = True) -> dict:
        """A snapshot of the node's state for ``mixnode status``."""
        consensus = self.directory.current() if self.directory is not None else None
        return {
            "name": self.config.name,
            "layer": self.config.layer,
            "running": running,
            "pid": os.getpid(),
            "updated_at": self.wall_clock(),
            "epoch": self.epoch(),
            "consensus_epoch": consensus.epoch if consensus is not None else None,
            "directory_grace": bool(self.directory is not None and self.directory.in_grace),
            "in_consensus": bool(consensus and self.identity and consensus.by_id(self.node_id)),
            "addresses": self.addresses,
            "node_id": self.node_id.hex() if self.identity is not None else None,
            # What users pin (anonmail init --provider NAME=KEY) and authorities admit.
            "identity_key": base64.b64encode(self.identity.public).decode() if self.identity is not None else None,
            # Public keys only (they are published in descriptors anyway).
            "sphinx_keys": {str(e): base64.b64encode(k).decode() for e, k in sorted(self._publics.items())},
            **self.stats.as_dict(),
            "queue_length": len(self._heap),
            "queue_limit": self.config.queue_limit,
            "inbound_queue": self._inbound_send.statistics().current_buffer_used
            if hasattr(self, "_inbound_send") else 0,
            "loops_pending": len(self._pending_loops),
            "links": {
                link.name: {"connected": link.connected, "queued": link.send.statistics().current_buffer_used,
                            "failures": link.failures}
                for link in self._links.values()
            },
            "inbound_connections": self._inbound_connections,
            "faults": self.faults.as_dict(),
        }

    def _write_status(self, running: bool = True) -> None:
        """(Thread.) Replace the status file atomically."""
        try:
            write_status(self.config.data_dir, self.status(running))
        except OSError as exc:
            log.warning("cannot write status file: %s", exc.strerror)

    async def _status_writer(self) -> None:
        """Rewrite the status file every second while running."""
        while True:
            self._expire_loops()
            self._write_status(True)
            await anyio.sleep(STATUS_INTERVAL)

