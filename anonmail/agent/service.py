"""The user agent (``anonmail agent``): Poisson payload stream, loop cover, fetch, ACKs, rotation.

One task group per agent::

    directory   keeps the current consensus (k-of-n signed)
    session     one authenticated session with our provider; reconnects with back-off
    payload     every Exp(λ_P) s: the next real fragment if one is due, else drop cover; each
                carries an ACK SURB, so every slot returns one ACK to our mailbox either way
    loops       every Exp(λ_L) s: a loop (a fragment to ourselves, indistinguishable from mail;
                its ACK goes to a random mailbox, so our provider sees one fragment, as for mail)
    fetch       every ``fetch_interval`` s: confirm what was written since the last round, fetch
                a fixed-size batch (:mod:`anonmail.agent.mailbox`)
    mailbox     writes fetched entries durably, off the link (sends never wait for it)
    refill      every ``poll_interval`` s: pick up mail the CLI queued and ACKs that timed out
    keys        rotate our encryption key at half its lifetime and announce it to contacts

Delivery guarantee: a fragment is retransmitted (fresh path, fresh delays, fresh SURB) until its
ACK returns; ACKs and fragments are recorded in SQLite before they are confirmed to the
provider (at the next fetch round), and the inbox merges duplicates, so nothing is lost and
nothing is delivered twice, whenever the agent dies.

Traffic shape: the payload stream's schedule never depends on what the user does — a real
fragment only *replaces* the drop cover of a slot that happens anyway (tested statistically).

What the agent reveals: to its provider, that it is a user and when it fetches; to everyone
else nothing beyond a Poisson stream of constant-size packets. Logs carry counts and reasons,
never addresses, fingerprints, mailbox or message ids, contact names or subjects. The counters in
:class:`AgentStats` feed ``status.json`` (:mod:`anonmail.agent.status`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import replace

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from anonmail.agent import account
from anonmail.agent.e2e import EndToEnd
from anonmail.agent.inbound import Inbound
from anonmail.agent.invite import InviteRunner
from anonmail.agent.keys import AgentKeys
from anonmail.agent.mailbox import ConfirmLedger
from anonmail.agent.packets import (Built, build_drop_packet, build_fragment_packet, random_provider,
                                    surb_keys_to_bytes)
from anonmail.agent.params import AgentParams
from anonmail.agent.settings import AgentSettings
from anonmail.agent.slots import (BuildCover, BuildReal, FragmentRef, NotBuilt, PayloadQueue, Send, SlotOutcome, SlotStep,
                                  payload_slot)
from anonmail.agent.stats import AgentStats, why
from anonmail.agent.store import AgentStore
from anonmail.core import fragments as F
from anonmail.core.address import Address, parse_address
from anonmail.core.loopwatch import LoopWatch
from anonmail.core.keys import IdentityKey
from anonmail.core.policy import PoissonSchedule
from anonmail.core.sizes import MAILBOX_ID_BYTES
from anonmail.clients.directory import DirectoryClient
from anonmail.errors import (AnonmailError, KeyExpiredError, NodeKeyError, PathError,
                             ProtocolError, TransportError)
from anonmail.net.router import Router

__all__ = ["AgentSettings", "Agent", "AgentStats"]

log = logging.getLogger("anonmail.agent")

#: Payload packets built ahead and waiting for their ticks, besides the one being built.
PREBUILT = 1
#: A loop not back after this many ACK timeouts counts as lost (:mod:`anonmail.core.loopwatch`).
LOOP_TIMEOUT_ACKS = 2.0
#: Seconds between two looks at which loops are overdue.
LOOP_CHECK_INTERVAL = 10.0


class Agent(AgentKeys):
    """One user's agent; ``await tg.start(agent.run)`` runs it until cancelled."""

    def __init__(
        self,
        *,
        identity: IdentityKey,
        store: AgentStore,
        router: Router,
        directory: DirectoryClient,
        settings: AgentSettings,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        on_delivered: Callable[[int, str], None] | None = None,
        keep_emissions: bool = False,
    ) -> None:
        self.identity = identity
        self.store = store
        self.router = router
        self.directory = directory
        self.settings, self._params = settings, AgentParams(settings)  # effective: stricter of config, consensus
        self.rng = rng if rng is not None else random.SystemRandom()
        self.wall_clock = wall_clock
        self.on_delivered = on_delivered
        self.address = Address.for_key(identity.public, settings.provider)
        self.stats = AgentStats()
        self._keep_emissions = keep_emissions
        self._due = PayloadQueue()
        self._split: OrderedDict[bytes, list[F.Fragment]] = OrderedDict()
        self._excluded: set[bytes] = set()  # nodes whose published keys failed while building
        #: The epoch of a consensus refused because it rebinds our provider's name (None: all well).
        self.provider_rebound: int | None = None
        self.e2e = EndToEnd(store, identity)
        self.inbound = Inbound(store=store, address=self.address, identity=identity, e2e=self.e2e, stats=self.stats,
                               wall_clock=wall_clock, on_delivered=on_delivered)
        self.loop_watch = LoopWatch(LOOP_TIMEOUT_ACKS * settings.effective_ack_timeout())
        self.inbound.loop_watch = self.loop_watch
        self._lookups: dict[bytes, float] = {}
        self._expired_since: dict[bytes, float] = {}
        self._client = None
        self._ledger = ConfirmLedger()
        self._session_lost = anyio.Event()
        self._connected = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports started once the session with the provider is up."""
        self.inbound.secrets = await self._blocking(account.my_secrets, self.store, self.identity)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self.directory.run)
                tg.start_soon(self._session_keeper)
                await self._connected.wait()
                tg.start_soon(self._payload_stream)
                tg.start_soon(self._loop_stream)
                tg.start_soon(self._loop_checker)
                tg.start_soon(self._fetcher)
                tg.start_soon(self._refiller)
                tg.start_soon(self._key_rotator)
                tg.start_soon(InviteRunner(self).run)
                task_status.started(self)
        finally:
            client, self._client = self._client, None
            if client is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await client.aclose()

    async def _blocking(self, fn: Callable, *args: object, **kwargs: object) -> object:
        """Run store/crypto work in a thread (inline when ``threads`` is off, for virtual time)."""
        call = functools.partial(fn, *args, **kwargs)
        if not self.settings.threads:
            await anyio.lowlevel.checkpoint()
            return call()
        return await anyio.to_thread.run_sync(call)

    def now(self) -> int:
        """Wall-clock seconds (certificate validity)."""
        return int(self.wall_clock())

    @property
    def connected(self) -> bool:
        """Whether a session with the provider is up."""
        return self._client is not None

    # ------------------------------------------------------------------ session

    def _home(self):
        consensus = self.directory.current()
        if consensus is not None and self._excluded:
            consensus = replace(consensus, nodes=tuple(n for n in consensus.nodes if n.node_id not in self._excluded))
        home = consensus.by_name(self.settings.provider) if consensus is not None else None
        pinned = self.settings.provider_key
        if home is not None and pinned is not None and home.identity_key != pinned:
            if self.provider_rebound is None:
                log.warning("refusing the consensus of epoch %d: it binds provider %s to another key than the one "
                            "pinned at init (ask your provider's operator)", consensus.epoch, self.settings.provider)
            self.provider_rebound = consensus.epoch
            return None, None
        if home is not None:
            self.provider_rebound = None
        self.settings = self._params.effective(consensus)
        return consensus, home

    def _exclude(self, exc: NodeKeyError) -> None:
        """Leave a node whose key cannot build a packet out of every later path."""
        if exc.node_id not in self._excluded:
            self._excluded.add(exc.node_id)
            log.warning("a node's published key cannot build packets; it is left out of paths: %s", exc)

    async def _session_keeper(self) -> None:
        """Keep one authenticated session with our provider, reconnecting with back-off."""
        from anonmail.clients.provider import ProviderClient

        backoff = 0.5
        while True:
            _, home = self._home()
            address = None
            if home is not None:
                address = next((a for a in home.addresses if self.router.can_reach(a)), None)
            if address is None:
                await anyio.sleep(1.0)
                continue
            try:
                certs = await self._blocking(account.my_certs, self.store, now=self.now())
                client = await ProviderClient.connect(self.router, address, self.identity, self.settings.provider,
                                                      op="login", certs=certs, timeout=60.0)
            except (TransportError, ProtocolError, TimeoutError) as exc:
                self._error("login", exc)
                log.info("session with our provider failed (%s); retrying in %.1f s", why(exc), backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            self._session_lost = anyio.Event()
            self._client = client
            self._connected.set()
            log.info("session with our provider is up")
            if self._tg is not None:
                self._tg.start_soon(self._refresh_prekeys)
            await self._session_lost.wait()
            self._client = None
            with anyio.move_on_after(2):
                await client.aclose()

    def _error(self, what: str, exc: BaseException) -> None:
        """Count a connection or fetch error for the status file (no addresses: see ``why``)."""
        self.stats.errors += 1
        self.stats.last_error = f"{what}: {why(exc)}"[:200]
        self.stats.last_error_at = self.wall_clock()

    def _drop_session(self, exc: BaseException, what: str = "session") -> None:
        if self._client is not None:
            self._error(what, exc)
            log.info("session with our provider broke (%s)", why(exc))
            self._client = None
            self._session_lost.set()

    async def _send(self, packet: bytes) -> bool:
        """Hand one packet to our provider; False if no session (the slot is lost, not the mail)."""
        client = self._client
        if client is None:
            return False
        if self.settings.link_loss and self.rng.random() < self.settings.link_loss:
            return True  # lost on the link, as the demo's --loss asks
        try:
            with anyio.fail_after(30):
                await client.send_packets([packet])
        except (TransportError, ProtocolError, TimeoutError) as exc:
            self._drop_session(exc, "send")
            return False
        return True

    # ------------------------------------------------------------------ payload stream

    async def _sleep_until(self, deadline: float) -> None:
        if deadline == math.inf:
            await anyio.sleep_forever()
        await anyio.sleep(max(0.0, deadline - anyio.current_time()))

    async def _payload_stream(self) -> None:
        """One packet per Exp(λ_P) slot: a due real fragment, else drop cover.

        Packets are built ahead (:meth:`_prepare_slots`, at most :data:`PREBUILT` waiting besides
        the one being built) and each leaves at its slot's tick. A real packet costs durable writes
        (SURB keys, session state) and cover does not, so a packet built at its tick would leave
        later when it is real: a lag a provider that times arrivals could read
        (`test_attack_a_real_slot_leaves_as_soon_after_its_tick_as_a_cover_slot`). A slot now
        leaves late only when its build took longer than the two gaps before it.
        """
        ready_send, ready = anyio.create_memory_object_stream(PREBUILT)
        async with anyio.create_task_group() as tg, ready_send, ready:
            tg.start_soon(self._prepare_slots, ready_send)
            schedule = PoissonSchedule(self.settings.lambda_payload, self.rng, start=anyio.current_time())
            while True:
                await self._sleep_until(schedule.next())
                slot, step = await ready.receive()
                outcome = step
                if isinstance(step, Send):
                    sent = await self._send(step.packet)
                    try:
                        slot.send(sent)
                        raise AssertionError("a payload slot asked for more after its send")
                    except StopIteration as done:
                        outcome = done.value
                self._count_slot(outcome)
                schedule.rate = self.settings.lambda_payload

    async def _prepare_slots(self, ready: anyio.abc.ObjectSendStream) -> None:
        """Build the coming slots' packets, one after another, as fast as the stream takes them."""
        while True:
            await ready.send(await self._prepare_slot())

    async def _prepare_slot(self) -> tuple[Generator[SlotStep, object, SlotOutcome], Send | SlotOutcome]:
        """Run a slot's build steps as :func:`~anonmail.agent.slots.payload_slot` decides: its Send step, or its outcome."""
        consensus, home = self._home()
        slot = payload_slot(self._due, ready=consensus is not None and home is not None and self._client is not None)
        result: object = None
        try:
            while True:
                step = slot.send(result)
                if isinstance(step, Send):
                    return slot, step
                if isinstance(step, BuildReal):
                    result = await self._build_real_packet(consensus, home, step.item)
                else:
                    result = await self._build_cover_packet(consensus, home)
                if result is NotBuilt.NODE_KEY:  # paths from now on leave that node out
                    consensus, home = self._home()
        except StopIteration as done:
            return slot, done.value

    def _count_slot(self, outcome: SlotOutcome) -> None:
        if outcome is SlotOutcome.MISSED:
            self.stats.slots_missed += 1
            return
        self._emitted()
        if outcome is SlotOutcome.REAL:
            self.stats.packets_real += 1
        else:
            self.stats.packets_drop += 1

    async def _build_real_packet(self, consensus, home, item: FragmentRef) -> bytes | NotBuilt:
        try:
            built = await self._blocking(self._build_real, consensus, home, item)
        except NodeKeyError as exc:
            self._exclude(exc)
            return NotBuilt.NODE_KEY
        except (AnonmailError, ValueError) as exc:
            log.warning("cannot build a fragment now (%s); it stays queued", why(exc))
            return NotBuilt.UNAVAILABLE
        return NotBuilt.UNAVAILABLE if built is None else built.packet

    async def _build_cover_packet(self, consensus, home) -> bytes | NotBuilt:
        if home is None:
            return NotBuilt.UNAVAILABLE
        try:
            built = await self._blocking(lambda: build_drop_packet(
                self.rng, consensus, home=home, ack_mailbox=self.address.mailbox_id,
                delay_mean=self.settings.delay_mean))
        except NodeKeyError as exc:
            self._exclude(exc)
            return NotBuilt.NODE_KEY
        except PathError as exc:
            log.warning("no path for cover traffic: %s", exc)
            return NotBuilt.UNAVAILABLE
        assert built.surb_keys is not None
        self.inbound.expect_cover_ack(built.surb_keys.surb_id)
        return built.packet

    def _emitted(self) -> None:
        if self._keep_emissions:
            self.stats.emissions.append(anyio.current_time())

    def _fragments_of(self, message_id: bytes, body: bytes) -> list[F.Fragment]:
        frags = self._split.get(message_id)
        if frags is None:
            frags = F.split_message(body, message_id)
            self._split[message_id] = frags
            while len(self._split) > 8:
                self._split.popitem(last=False)
        self._split.move_to_end(message_id)
        return frags

    def _build_real(self, consensus, home, item: FragmentRef) -> Built | None:
        """(Thread.) Build a fragment's packet and record the transmission (SURB keys first)."""
        message_id, idx = item
        info = self.store.message_body(message_id)
        if info is None:
            return None
        recipient_text, _kind, _subject, body, _created = info
        recipient = parse_address(recipient_text)
        now = self.now()
        try:
            cert = account.contact_key(self.store, recipient.fingerprint, now=now)
        except KeyExpiredError as exc:
            # Ask their provider once more; give up (visibly, in the outbox) if nothing newer comes.
            self._want_keys(recipient)
            since = self._expired_since.setdefault(recipient.fingerprint, now)
            if now - since > 90:
                self.store.fail_message(message_id, f"{exc}")
                log.warning("a contact's encryption keys have all expired; a message is marked failed")
            return None
        if cert is None:
            self._want_keys(recipient)
            return None
        target = consensus.by_name(recipient.provider)
        if target is None or target.role != "provider":
            raise PathError(f"the recipient's provider {recipient.provider!r} is not in the current consensus")
        wire = self.e2e.seal_outgoing(message_id, recipient, cert.identity_public, body, now=now)
        if wire is None:  # no session yet: fetch their prekey bundle (an existing contact migrates here)
            self._want_bundle(recipient)
            return None
        fragments = self._fragments_of(message_id, wire)
        if idx >= len(fragments):
            return None  # the encrypted message needs fewer fragments than first counted
        built = build_fragment_packet(
            self.rng, consensus, home=home, recipient_provider=target, sender=self.identity,
            sender_address=self.address, recipient=recipient, recipient_identity=cert.identity_public,
            recipient_key=cert.encryption_public, fragment=fragments[idx], delay_mean=self.settings.delay_mean)
        assert built.surb_keys is not None
        self.store.record_transmission(message_id, idx, built.surb_keys.surb_id, surb_keys_to_bytes(built.surb_keys),
                                       self.wall_clock())
        return built

    # ------------------------------------------------------------------ refill and retransmission

    async def _refiller(self) -> None:
        """Queue fragments that were never sent, or whose ACK is overdue (retransmission)."""
        timeout = self.settings.effective_ack_timeout()
        while True:
            rows = await self._blocking(self.store.unacked_fragments)
            self.stats.retransmissions += self._due.refill(rows, now=self.wall_clock(), ack_timeout=timeout)
            await anyio.sleep(self.settings.poll_interval)

    # ------------------------------------------------------------------ loops

    async def _loop_stream(self) -> None:
        """Loop cover at λ_L: a fragment to ourselves; counted returned when fetched back."""
        schedule = PoissonSchedule(self.settings.lambda_loop, self.rng, start=anyio.current_time())
        while True:
            await self._sleep_until(schedule.next())
            consensus, home = self._home()
            schedule.rate = self.settings.lambda_loop
            if consensus is None or home is None or self._client is None:
                continue
            my_key = await self._blocking(account.my_certs, self.store, now=self.now())
            if not my_key:
                continue
            message_id = os.urandom(F.MESSAGE_ID_BYTES)
            fragment = F.split_message(b"", message_id)[0]
            try:
                built = await self._blocking(lambda: build_fragment_packet(
                    self.rng, consensus, home=home, recipient_provider=home, sender=self.identity,
                    sender_address=self.address, recipient=self.address, recipient_identity=self.identity.public,
                    recipient_key=my_key[0].encryption_public, fragment=fragment, delay_mean=self.settings.delay_mean,
                    ack_to=(random_provider(self.rng, consensus), os.urandom(MAILBOX_ID_BYTES))))
            except NodeKeyError as exc:
                self._exclude(exc)
                continue
            except PathError:
                continue
            if await self._send(built.packet):
                self._emitted()
                self.stats.packets_loop += 1
                self.inbound.expect_loop(message_id, anyio.current_time())
                self.loop_watch.sent(message_id, anyio.current_time(), built.route)

    async def _loop_checker(self) -> None:
        """Count overdue loops as lost, now and then, and say so once when losses look like an attack."""
        while True:
            await anyio.sleep(LOOP_CHECK_INTERVAL)
            self.check_loops()

    def check_loops(self) -> None:
        """Count overdue loops as lost; put the verdict in the stats; warn when the alarm goes on."""
        self.stats.loops_lost += self.loop_watch.expire(anyio.current_time())
        verdict = self.loop_watch.verdict()
        self.stats.loop_loss_rate = round(verdict.loss_rate, 3)
        self.stats.loop_suspects = verdict.suspect_lines
        news = verdict.news(self.stats.loop_alarm)
        if news is not None:
            log.log(news[0], "%s%s", news[1], "; tell the network's operators" if verdict.alarm else "")
        self.stats.loop_alarm = verdict.alarm

    # ------------------------------------------------------------------ fetch

    async def _fetcher(self) -> None:
        """Every ``fetch_interval`` s: one fetch round; a separate worker writes what it brought."""
        send, receive = anyio.create_memory_object_stream[list](1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._mailbox_worker, receive)
            with send:
                while True:
                    await anyio.sleep(self.settings.fetch_interval)
                    fresh = await self._fetch_round()
                    try:
                        send.send_nowait(fresh)
                    except anyio.WouldBlock:  # still writing the last batch: these are fetched again
                        self._ledger.release(fresh)

    async def _mailbox_worker(self, receive) -> None:
        """Write fetched entries durably, off the link: nothing on the wire waits for this."""
        async with receive:
            async for entries in receive:
                done = await self._blocking(self.inbound.handle_entries, entries)
                self._ledger.handled(entries, done)

    async def _fetch_round(self) -> list:
        """Confirm what was written since the last round, then fetch; the entries not yet taken.

        Both requests go back to back on the schedule, exactly one fixed-size confirm (ids
        padded) and one fixed-size fetch per round, so their timing does not depend on how
        much mail arrived or how long writing it took.
        """
        client = self._client
        if client is None:
            return []
        ids = self._ledger.to_confirm(client.fetch_batch)
        try:
            with anyio.fail_after(60):
                await client.confirm(ids)
            self._ledger.confirmed(ids)
            with anyio.fail_after(60):
                result = await client.fetch()
        except (TransportError, ProtocolError, TimeoutError) as exc:
            self._drop_session(exc, "fetch")
            return []
        self.stats.fetches += 1
        self.stats.entries_fetched += len(result.entries)
        self.stats.mailbox_full = result.full
        self.stats.mailbox_evicted += result.evicted
        if result.evicted:
            log.warning("our mailbox at the provider is full: it dropped %d of its oldest entries", result.evicted)
        if self.stats.fetches == 1:
            self._check_fetch_capacity(client.fetch_batch)
        return self._ledger.take(result.entries)

    def _check_fetch_capacity(self, fetch_batch: int) -> None:
        """Warn once if fixed-size fetches cannot keep up with what our own traffic brings back.

        Every payload slot (mail or drop cover) returns one ACK to our mailbox and every loop
        returns once, before anyone writes to us: beyond that, mail backs up at the provider and
        ACKs arrive late enough to cause needless retransmissions.
        """
        capacity = fetch_batch / self.settings.fetch_interval
        own = self.settings.lambda_payload + self.settings.lambda_loop
        if capacity < 1.5 * own:
            log.warning("mailbox fetch capacity %.1f entries/s (%d per %.3g s) is below 1.5x the %.1f/s that "
                        "ACKs of our own stream and loops bring; mail will back up: lower fetch_interval",
                        capacity, fetch_batch, self.settings.fetch_interval, own)

