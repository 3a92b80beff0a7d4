"""The mix node service: unwrap, replay check, hold for the sender's delay, forward; loop cover.

Pipeline (every queue bounded; overload drops and counts, it never grows or blocks a reader)::

    connections ──PACKET──▶ inbound queue ──▶ unwrap workers (threads, batches) ──▶ replay store
    (Inbound: handshake,     (inbound_limit)    decisions.unwrap_batch, the GIL     (group commit,
     previous layer only,                        released per batch                  fsynced before
                                                                                     forwarding)
     budgets, never blocks)
                                  │
                                  ▼  decisions.decide: Forward | LoopReturned | Stored | Answered | Drop(reason)
                                     (delay ≤ the consensus max_delay, next hop in the next layer)
              delay heap (queue_limit) ──due──▶ LinkPool: per-next-hop queue ──▶ persistent connection
                                                 (link_queue_limit)          (reconnect w/ backoff)

Every decision about a packet is made by the pure functions of :mod:`mixnode.decisions`; this
module only moves bytes and time and acts on them. Links in both directions are authenticated
with the node's link key (:mod:`mixnode.inbound`, :mod:`mixnode.links`); held packets whose
epoch key is deleted are purged with it. A provider is this engine plus a
:class:`NodeServices` (delivery into mailboxes, client sessions), handed in at construction.

What a mix learns: the previous and next hop of each packet and the delay chosen for it at this
hop; never the sender, the recipient, the position on the path beyond its own layer, or the
content. Logs carry counters and node names from the public consensus only.

A provider's ACKs (``Stored.ack``, ``Answered.ack``) are reply packets whose first hop is the
provider itself: they go back into its own inbound queue and leave after the hold their sender
chose for that hop, like any packet a mix holds (docs/design.md, "Cover traffic and ACKs").

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
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from anonmail.core import sphinx
from anonmail.core.fragments import KIND_LOOP, encode_cover_payload
from anonmail.core.keys import IdentityKey, node_id
from anonmail.core.linkauth import link_public
from anonmail.core.loopwatch import LoopWatch
from anonmail.core.pki import Consensus, epoch_at, epoch_start, sign_descriptor
from anonmail.core.policy import PoissonSchedule, loop_route
from anonmail.core.sizes import MAILBOX_ID_BYTES
from anonmail.clients.directory import DirectoryClient, upload_descriptor
from anonmail.daemon.containment import FaultCounter
from anonmail.daemon.identity import load_or_create_identity
from anonmail.daemon.node_config import NodeConfig
from anonmail.daemon.status import write_status
from anonmail.errors import DirectoryError, PathError, StoreError
from anonmail.net.base import Transport
from anonmail.net.router import Router
from mixnode.decisions import (
    Answered,
    Decision,
    Drop,
    DropReason,
    Forward,
    LoopReturned,
    Rules,
    Stored,
    Unwrapped,
    UnwrapResult,
    decide,
    fail_batch,
    unwrap_batch,
)
from mixnode.epochkeys import EpochKeys
from mixnode.handshake import load_or_create_link_secret
from mixnode.inbound import Inbound
from mixnode.params import loop_delay_ms, loop_rate, max_delay_ms
from mixnode.interfaces import NodeServices
from mixnode.links import LinkPool, LinkStats
from mixnode.replay import ReplayStore
from mixnode.topology import next_hops

__all__ = ["MixNode", "Stats"]

log = logging.getLogger("mixnode")

REPLAY_DB = "replay.sqlite"
STATUS_INTERVAL = 1.0


@dataclass
class Stats(LinkStats):
    """The node's counters (what ``mixnode status`` shows)."""

    received: int = 0
    loops_sent: int = 0
    loops_returned: int = 0
    loops_lost: int = 0
    #: What the recent loops say (:mod:`anonmail.core.loopwatch`): share lost, alarm, suspects.
    loop_loss_rate: float = 0.0
    loop_alarm: bool = False
    loop_suspects: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """JSON-ready counters."""
        return {
            "received": self.received,
            "forwarded": self.forwarded,
            "dropped": {str(k): v for k, v in sorted(self.dropped.items())},
            "dropped_total": sum(self.dropped.values()),
            "loops_sent": self.loops_sent,
            "loops_returned": self.loops_returned,
            "loops_lost": self.loops_lost,
            "loop_loss_rate": self.loop_loss_rate,
            "loop_alarm": self.loop_alarm,
            "loop_suspects": list(self.loop_suspects),
            "link_failures": self.link_failures,
        }


class MixNode:
    """One mix node (or, with ``services``, the engine of a provider); serve with ``tg.start(node.run)``.

    ``link_loss`` drops each packet sent on a link with that probability (test networks and
    demos only; counted as ``dropped["link_loss"]``).
    """

    def __init__(
        self,
        config: NodeConfig,
        transports: Sequence[Transport],
        *,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        link_loss: float = 0.0,
        services: NodeServices | None = None,
    ) -> None:
        if not 0.0 <= link_loss < 1.0:
            raise ValueError(f"link_loss must be in [0, 1), got {link_loss}")
        self.link_loss = link_loss
        self.config = config
        self.transports = list(transports)
        self.wall_clock = wall_clock
        self.services = services
        self.role = services.role if services is not None else "mix"
        self._foreign_final = services.foreign_final if services is not None else DropReason.NOT_FOR_A_MIX
        self._rules: tuple[Consensus | None, Rules] = (None, Rules(self._foreign_final))
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
        self.links: LinkPool | None = None
        self.inbound: Inbound | None = None
        self.link_secret: bytes | None = None
        self.keys = EpochKeys(config.data_dir, config.epoch_seconds)
        self._published: set[int] = set()
        self._heap: list[tuple[float, int, bytes, bytes, int | None]] = []
        self._seq = itertools.count()
        self._wake = anyio.Event()
        self.loop_watch = LoopWatch(self.config.loop_timeout)  # this node's loops in flight and their fate
        self._inbound_send: anyio.abc.ObjectSendStream[tuple[float, bytes]] | None = None

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
        self.identity = await self.blocking(load_or_create_identity, config.data_dir)
        self.link_secret = await self.blocking(load_or_create_link_secret, config.data_dir)
        self.replay = await self.blocking(lambda: ReplayStore(config.data_dir / REPLAY_DB, capacity=config.replay_capacity))
        now_epoch = self.epoch()
        for epoch in (now_epoch - 1, now_epoch, now_epoch + 1):
            await self.blocking(self.keys.load, epoch, epoch >= now_epoch)
        loaded = await self.blocking(self.replay.load, [now_epoch - 1, now_epoch, now_epoch + 1])
        inbound_send, inbound_receive = anyio.create_memory_object_stream[tuple[float, bytes]](config.inbound_limit)
        self._inbound_send = inbound_send
        limiter = anyio.CapacityLimiter(max(1, config.workers))
        # Commits run on as many threads as batches are in flight: those that overlap share one
        # transaction (ReplayStore.persist_many), so a slow fsync gathers the next batches' tags.
        store_limiter = anyio.CapacityLimiter(2 * max(1, config.workers))
        try:
            async with AsyncExitStack() as stack:
                if self.services is not None:
                    await self.services.open()
                    stack.callback(self.services.close)
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
                self.links = LinkPool(self.router, self.directory.current, self.stats, link_secret=self.link_secret,
                                      queue_limit=config.link_queue_limit, rng=self.rng, link_loss=self.link_loss)
                self.inbound = Inbound(
                    link_secret=self.link_secret, me=lambda: self.node_id, consensuses=self._consensuses,
                    submit=self.submit, dropped=self.stats.dropped,
                    serve_client=self.services.serve_client if self.services is not None else None,
                    peer_rate=config.peer_rate,
                )
                async with anyio.create_task_group() as tg:
                    await tg.start(self.links.run)
                    self.addresses = await self.router.listen(self.inbound.serve)
                    log.info("%s %s (layer %d) listening on %d address(es); %d replay tags loaded",
                             self.role, config.name, config.layer, len(self.addresses), loaded)
                    # Twice as many batches in flight as unwrap threads: one batch's tags are
                    # committed while the next batch is unwrapped (inline, one after the other).
                    for _ in range(2 * config.workers or 1):
                        tg.start_soon(self._unwrap_worker, inbound_receive.clone(), limiter, store_limiter)
                    tg.start_soon(self._scheduler)
                    tg.start_soon(self._publisher)
                    await tg.start(self.directory.run)
                    tg.start_soon(self._loop_cover)
                    tg.start_soon(self.links.keep, lambda: self.node_id)
                    tg.start_soon(self._status_writer)
                    task_status.started(self)
        finally:
            inbound_send.close()
            inbound_receive.close()
            if self.replay is not None:
                self.replay.close()
            self._write_status(False)

    async def blocking(self, fn: Callable, *args: object) -> object:
        """Run file/SQLite/crypto work in a thread (inline when ``workers = 0``, for virtual time)."""
        if self.config.workers == 0:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)

    def epoch(self) -> int:
        """The current epoch by the wall clock."""
        return epoch_at(self.wall_clock(), self.config.epoch_seconds)

    def _consensuses(self) -> list:
        """The consensuses a peer is judged by: the current one, then the next one if held."""
        if self.directory is None:
            return []
        return [self.directory.current(), self.directory.get(self.epoch() + 1)]

    def rules(self) -> Rules:
        """The rules for packets this node forwards, from the consensus it holds."""
        consensus = self.directory.current() if self.directory is not None else None
        if consensus is None or self.identity is None:
            return Rules(self._foreign_final)
        if self._rules[0] is not consensus:
            hops = next_hops(consensus, self.node_id)
            self._rules = (consensus, Rules(self._foreign_final, max_delay_ms(consensus), hops))
        return self._rules[1]

    def _forget_epochs_before(self, epoch: int) -> None:
        """(Thread.) Delete keys of finished epochs (forward secrecy) and their replay tags."""
        self.keys.forget_before(epoch)
        assert self.replay is not None
        self.replay.purge_before(epoch)

    def _purge_held(self) -> None:
        """Drop held packets whose epoch key is gone (they were unwrapped under a deleted key)."""
        kept = [entry for entry in self._heap if entry[4] is None or self.keys.has(entry[4])]
        purged = len(self._heap) - len(kept)
        if purged:
            heapq.heapify(kept)
            self._heap[:] = kept
            self.stats.dropped[DropReason.EPOCH_KEY_GONE] += purged
            self._wake.set()

    # ------------------------------------------------------------------ inbound

    def submit(self, packet: bytes, received_at: float) -> DropReason | None:
        """Put a received packet on the inbound queue without waiting; the drop reason if it is full."""
        self.stats.received += 1
        assert self._inbound_send is not None
        try:
            self._inbound_send.send_nowait((received_at, packet))
        except anyio.WouldBlock:
            self.stats.dropped[DropReason.QUEUE_FULL] += 1
            return DropReason.QUEUE_FULL
        return None

    async def _unwrap_worker(
        self, receive: anyio.abc.ObjectReceiveStream, limiter: anyio.CapacityLimiter,
        store_limiter: anyio.CapacityLimiter,
    ) -> None:
        """Take batches off the inbound queue, unwrap them in a thread, commit their tags, act on the decisions."""
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
                    now = self.wall_clock()
                    if self.config.workers == 0:  # inline: deterministic under a virtual clock
                        await anyio.lowlevel.checkpoint()
                        results = self._commit_batch(self._unwrap_batch(packets, now), now)
                    else:  # unwrap on the worker threads; commits that overlap are one
                        unwrapped = await anyio.to_thread.run_sync(self._unwrap_batch, packets, now, limiter=limiter)
                        results = await anyio.to_thread.run_sync(self._commit_batch, unwrapped, now,
                                                                 limiter=store_limiter)
                except Exception as exc:  # containment: a batch never stops the node
                    self.faults.record(exc, "packet batch")
                    results = [(Drop(DropReason.UNEXPECTED_ERROR), None)] * len(packets)
                rules = self.rules()
                for (received_at, _), (result, epoch) in zip(batch, results, strict=True):
                    try:
                        self._act(received_at, decide(result, self.loop_watch, rules, epoch))
                    except Exception as exc:  # containment: one packet never stops the node
                        self.faults.record(exc, "packet")
                        self.stats.dropped[DropReason.UNEXPECTED_ERROR] += 1

    def _unwrap_batch(self, packets: list[bytes], now: float) -> UnwrapResult:
        """(Worker thread.) Unwrap with the keys of the epoch window; new tags enter the replay filter."""
        assert self.replay is not None
        return unwrap_batch(packets, self.keys.candidates(now), self.replay.check_and_add,
                            on_fault=lambda exc: self.faults.record(exc, "packet"))

    def _commit_batch(self, unwrapped: UnwrapResult, now: float) -> list[tuple[Unwrapped | Decision, int | None]]:
        """(Store thread.) Record the new tags durably, then let the services store deliveries.

        Returns each packet's result with the epoch whose key opened it; nothing of a batch moves
        on before its tags are on disk.
        """
        replay = self.replay
        assert replay is not None
        results: list[Unwrapped | Decision]
        try:
            replay.persist_many(unwrapped.fresh_tags)
        except StoreError as exc:
            # Without a durable tag the packet could be replayed after a restart: drop the batch.
            log.error("%s", exc)
            results = list(fail_batch(unwrapped.results, DropReason.STORE_ERROR))
        else:
            results = list(unwrapped.results) if self.services is None else self.services.deliver(unwrapped.results, now)
        return list(zip(results, unwrapped.epochs, strict=True))

    def _act(self, received_at: float, decision: Decision) -> None:
        """Carry out one decision on the event loop."""
        if isinstance(decision, Drop):
            self.stats.dropped[decision.reason] += 1
        elif isinstance(decision, Forward):
            self._hold(received_at, decision)
        elif isinstance(decision, LoopReturned):
            if self.loop_watch.returned(decision.mailbox_id):
                self.stats.loops_returned += 1
        elif isinstance(decision, Stored):
            assert self.services is not None
            self.services.stored(decision)
            if decision.ack is not None:
                self.submit(decision.ack, anyio.current_time())
        elif isinstance(decision, Answered):
            self.stats.dropped[DropReason.DROP_COVER] += 1
            self.submit(decision.ack, anyio.current_time())

    def _hold(self, received_at: float, forward: Forward) -> None:
        """Queue a packet for its delay (or at once on its link)."""
        if forward.delay_ms == 0:
            self.send(forward.next_node, forward.packet)
        elif len(self._heap) >= self.config.queue_limit:
            self.stats.dropped[DropReason.QUEUE_FULL] += 1
        else:
            due = received_at + forward.delay_ms / 1000
            heapq.heappush(self._heap, (due, next(self._seq), forward.next_node, forward.packet, forward.epoch))
            self._wake.set()

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
                _, _, next_node, packet, _ = heapq.heappop(heap)
                self.send(next_node, packet)

    def send(self, node_id: bytes, packet: bytes) -> DropReason | None:
        """Queue a packet on the link to ``node_id``; the reason it was dropped, if it was (counted)."""
        if self.links is None:
            self.stats.dropped[DropReason.UNKNOWN_NEXT_HOP] += 1
            return DropReason.UNKNOWN_NEXT_HOP
        return self.links.send(node_id, packet)

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
                await self.blocking(self.keys.load, target, True)
                descriptor = sign_descriptor(
                    self.identity,
                    name=self.config.name,
                    role=self.role,
                    layer=self.config.layer,
                    epoch=target,
                    sphinx_key=self.keys.public(target),
                    addresses=self.addresses,
                    production=self.config.production,
                    link_key=link_public(self.link_secret),
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
            await self.blocking(self._forget_epochs_before, epoch - 1)
            self._purge_held()
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
            if deadline == float("inf"):  # rate 0 here: look again later, a consensus may ask for loops
                schedule.deadline = deadline = anyio.current_time() + 10.0
            await anyio.sleep(max(0.0, deadline - anyio.current_time()))
            consensus = self.directory.current()
            me = consensus.by_id(self.node_id) if consensus is not None else None
            if me is None:
                continue
            schedule.rate = loop_rate(self.config.lambda_loop, consensus)
            if schedule.rate == 0:
                continue
            try:
                route = loop_route(self.rng, consensus.topology(), me.node_ref())
            except PathError:
                self.stats.dropped[DropReason.LOOP_NO_PATH] += 1
                continue
            hops = []
            for i, ref in enumerate(route):
                last = i == len(route) - 1
                is_mix = ref.layer > 0
                delay = loop_delay_ms(self.rng, self.config.loop_delay_mean, consensus) if is_mix and not last else 0
                hops.append(sphinx.Hop(ref.node_id, ref.data.sphinx_key, delay))  # type: ignore[attr-defined]
            mailbox = os.urandom(MAILBOX_ID_BYTES)
            try:
                packet = await self.blocking(sphinx.build_forward, hops, mailbox, encode_cover_payload(KIND_LOOP))
            except PathError:  # NodeKeyError: a hop's key is unusable (refused at parse time already)
                self.stats.dropped[DropReason.LOOP_BAD_KEY] += 1
                continue
            self.loop_watch.sent(mailbox, anyio.current_time(), [ref.name for ref in route])
            self.stats.loops_sent += 1
            self.send(route[0].node_id, packet)  # type: ignore[arg-type]

    def _expire_loops(self) -> None:
        """Count loops that did not come back in time as lost; warn once when the losses look like an attack."""
        self.stats.loops_lost += self.loop_watch.expire(anyio.current_time())
        verdict = self.loop_watch.verdict()
        self.stats.loop_loss_rate = round(verdict.loss_rate, 3)
        self.stats.loop_suspects = tuple(verdict.suspect_lines)
        news = verdict.news(self.stats.loop_alarm)
        if news is not None:
            log.log(news[0], "%s: %s", self.config.name, news[1])
        self.stats.loop_alarm = verdict.alarm

    # ------------------------------------------------------------------ status

    def status(self, running: bool = True) -> dict:
        """A snapshot of the node's state for ``mixnode status`` (and the provider's)."""
        consensus = self.directory.current() if self.directory is not None else None
        status = {
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
            "sphinx_keys": {str(e): base64.b64encode(k).decode() for e, k in self.keys.publics().items()},
            **self.stats.as_dict(),
            "queue_length": len(self._heap),
            "queue_limit": self.config.queue_limit,
            "inbound_queue": self._inbound_send.statistics().current_buffer_used
            if self._inbound_send is not None else 0,
            "loops_pending": self.loop_watch.pending,
            "links": self.links.status() if self.links is not None else {},
            "faults": self.faults.as_dict(),
            "link_auth_failures": {str(k): v for k, v in sorted(self.stats.link_auth_failures.items())},
            "max_delay_ms": self.rules().max_delay_ms,
            "replay_filter_bytes": self.replay.memory_bytes() if self.replay is not None else 0,
            "replay_over_capacity": self.replay.over_capacity() if self.replay is not None else [],
            **(self.inbound.status() if self.inbound is not None else {}),
        }
        if self.services is not None:
            status.update(self.services.status_fields())
        return status

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
