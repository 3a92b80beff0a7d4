"""The directory authority service: serves requests, builds and signs, gathers peers' signatures.

Overview
--------
Nodes upload a signed descriptor (:mod:`anonmail.core.pki`) for the current or the next epoch
to every authority. For each epoch E the authorities must all sign the *same* document, so
that a client can gather ``threshold`` signatures over one digest. Agreement rests on two
facts: :func:`~anonmail.core.pki.build_consensus` is deterministic, and every honest authority
feeds it the same descriptor set. That set is fixed by a wall-clock **cutoff** shared by all
authorities:

* **Build points** (:func:`build_points`, pure): the first for epoch E is
  ``start(E) - freeze_lead`` (default a quarter epoch before E begins); after it, one every
  ``round_seconds`` until E ends.
* At a build point ``t`` every authority waits ``sync_delay`` seconds (clock skew and uploads
  in flight), then asks each peer for the descriptors of E it *learned before t*
  (``get_descriptors {epoch, before: t}``). Any descriptor an authority learned before ``t``
  was uploaded directly to some authority before ``t``; so the union of its own set and the
  peers' answers is exactly "every descriptor uploaded anywhere before ``t``", the same at
  every authority that reached all peers up at that moment.
* If that union is empty (no node registered yet), nothing is built and the next build point
  is tried. This is also how the network **bootstraps**: when nodes first register in the
  middle of an epoch, the current epoch's consensus is built at the next point after their
  uploads, i.e. within ``round_seconds + sync_delay`` seconds (5 + 2 by default), and the
  next epoch's at its regular point.
* Having built and signed, the authority polls its peers for their signatures over the same
  digest (``get_signature {epoch, digest}``) until it holds all of them or the epoch ends, so a
  client gets ``threshold`` signatures from a single authority (``get_consensus``).
* An authority that missed the agreed build point (it was down or restarted) adopts a document
  a peer already holds with ``threshold`` valid signatures of pinned authorities, and adds its
  own signature: it never makes acceptable what was not already acceptable.

Authorities' clocks must agree to within ``sync_delay`` seconds (NTP is plenty); a skewed
authority may sign a different document, which then simply lacks the others' signatures.

One authority down does not stop the others: they skip it (every network wait is bounded by
``fail_after``) and still agree among themselves.

Protocol: :mod:`anonmail.core.dirproto` (messages) and :mod:`mixnode.authority.answers`
(what is answered and refused). Peers are asked through the same client as everyone else,
:func:`anonmail.clients.directory.request_authority`.

State lives in SQLite (sqlite-utils, WAL) in the data directory: descriptors per epoch with
the time the authority learned them, consensus documents and signatures. Epochs older than the
previous one are purged. The store is small and its statements take well under a millisecond,
so they run inline on the event loop (this keeps virtual-time tests deterministic). The
authority rewrites ``status.json`` in its data directory every second for ``mixnode authority
status``.

All timing comes from the injected ``wall_clock()`` (Unix seconds) and :func:`anyio.sleep`, so
tests can run in virtual time.
"""

from __future__ import annotations

from __future__ import annotations

import base64
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import anyio
import anyio.abc

from anonmail.clients.directory import request_authority
from anonmail.core import dirproto, pki
from anonmail.core.keys import IdentityKey
from anonmail.core.wire import MAX_DIRECTORY_CONTROL_BYTES, Control, Role
from anonmail.daemon.status import STATUS_FILE, write_status
from anonmail.errors import ConfigError, DirectoryError, LinkError, WireError
from anonmail.net.framed import FramedStream
from anonmail.net.router import Router
from mixnode.authority.admission import ADMISSION_FILE, load_admission
from mixnode.authority.answers import MAX_DESCRIPTORS_PER_EPOCH, Answers
from mixnode.authority.config import AuthorityConfig, PeerAuthority, load_authority_key
from mixnode.authority.schedule import next_build_point
from mixnode.authority.store import DATABASE_FILE, AuthorityStore
from mixnode.authority.voting import Vote, make_vote, tally, vote_from_dict

__all__ = ["SIGNATURE_POLL_SECONDS", "SERVE_TIMEOUT", "STATUS_FILE", "Authority"]

log = logging.getLogger("mixnode.authority")

#: Seconds between asks while a peer's vote is not ready.
VOTE_RETRY_SECONDS = 0.5
#: Seconds between polls for peers' signatures.
SIGNATURE_POLL_SECONDS = 2
#: Bound on how long a client may take to send its request.
SERVE_TIMEOUT = 10.0
#: Seconds between rewrites of the status file.
STATUS_SECONDS = 1.0


@dataclass
class _PeerState:
    up: bool | None = None
    last_ok: float | None = None
    last_error: str = ""


class Authority:
    """One directory authority: serves requests, builds and signs, gathers peers' signatures.

    ``router`` reaches peers (and listens unless ``listen=False``). ``identity`` defaults to the
    key in ``config.key_file``. :meth:`run` serves until cancelled.
    """

    def __init__(
        self,
        config: AuthorityConfig,
        router: Router,
        *,
        identity: IdentityKey | None = None,
        wall_clock: Callable[[], float] = time.time,
        write_status: bool = True,
    ) -> None:
        config.check()
        self.config = config
        self.router = router
        self.identity = identity if identity is not None else load_authority_key(config.key_file)
        self.authority_id = pki.authority_id(self.identity.public)
        self.wall_clock = wall_clock
        self.write_status = write_status
        self.addresses: list[str] = []
        self.store: AuthorityStore | None = None
        self.peers: dict[str, _PeerState] = {p.address: _PeerState() for p in config.peers}
        self._tried: dict[int, float] = {}  # epoch -> last build point tried
        self.admissions = load_admission(config.data_dir)  # a broken file stops the start here
        self._admission_stamp: int | None = None
        self._own_votes: dict[tuple[int, int], Vote] = {}
        self._frozen: dict[tuple[int, int], list[Vote]] = {}
        self.answers = Answers(config, self.authority_id, self.now, self._current_admissions, self)
        #: Requests and peer answers dropped after an unexpected error, by reason (logged once each).
        self.faults = self.answers.faults

    # ----------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Open the store, listen, and serve until cancelled; ``task_status`` gets the addresses."""
        self.store = AuthorityStore(self.config.data_dir / DATABASE_FILE)
        try:
            async with anyio.create_task_group() as tg:
                self.addresses = await self.router.listen(self.handle)
                log.info("authority %s serving on %s", self.config.name, ", ".join(self.addresses))
                tg.start_soon(self._build_loop)
                tg.start_soon(self._signature_loop)
                tg.start_soon(self._gossip_loop)
                if self.write_status:
                    tg.start_soon(self._status_loop)
                task_status.started(self.addresses)
        finally:
            if self.write_status:
                self._write_status(running=False)
            store, self.store = self.store, None
            store.close()

    def now(self) -> float:
        """Wall-clock Unix seconds (injected)."""
        return self.wall_clock()

    def current_epoch(self) -> int:
        """The epoch containing now."""
        return pki.epoch_at(self.now(), self.config.epoch_seconds)

    # ----------------------------------------------------------------- serving

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one connection: HELLO, one request, one reply."""
        framed = FramedStream(stream, max_control_bytes=MAX_DIRECTORY_CONTROL_BYTES)
        try:
            with anyio.fail_after(SERVE_TIMEOUT):
                await framed.expect_hello()
                await framed.hello(Role.AUTHORITY)
                frame = await framed.receive()
        except (TimeoutError, WireError) as exc:
            log.info("authority %s: dropped a connection: %s", self.config.name, type(exc).__name__)
            return
        if not isinstance(frame, Control):
            return
        reply = self.answer(frame.message)
        with anyio.move_on_after(SERVE_TIMEOUT):
            try:
                await framed.send(Control(reply))
            except LinkError:
                pass  # the client left before its answer; nothing to do

    def _current_admissions(self):
        self._refresh_admissions()
        return self.admissions

    def answer(self, message: object) -> dict:
        """The reply to one CONTROL request (see :mod:`mixnode.authority.answers`)."""
        return self.answers.answer(self.store, message)


    # ----------------------------------------------------------------- talking to peers

    async def _ask(self, peer: PeerAuthority, request: dirproto.Request, expect: type[dirproto.R]) -> dirproto.R:
        """One request to a peer through the directory client, noting whether the peer is up."""
        state = self.peers[peer.address]
        try:
            reply = await request_authority(self.router, peer.address, request, expect, role=Role.AUTHORITY)
        except DirectoryError as exc:
            if exc.reason == "unreachable":
                state.up, state.last_error = False, str(exc)
            else:
                state.up, state.last_ok, state.last_error = True, self.now(), exc.reason
            raise
        state.up, state.last_ok, state.last_error = True, self.now(), ""
        return reply

    async def _pull_descriptors(self, peer: PeerAuthority, epoch: int, before: float | None) -> list[pki.NodeDescriptor]:
        """A peer's descriptors of an epoch, each verified; invalid ones are skipped and logged."""
        reply = await self._ask(peer, dirproto.GetDescriptors(epoch, before), dirproto.DescriptorsReply)
        found = []
        for item in reply.descriptors[:MAX_DESCRIPTORS_PER_EPOCH]:
            try:
                descriptor = pki.descriptor_from_dict(item, production=self.config.production)
            except DirectoryError as exc:
                log.warning("authority %s: peer %s sent a bad descriptor: %s", self.config.name, peer.address, exc.reason)
                continue
            if descriptor.epoch == epoch:
                found.append(descriptor)
        return found

    async def _gather(self, func: Callable[..., Awaitable[object]], *args: object) -> dict[str, object]:
        """Run ``func(peer, *args)`` for every peer at once; map address → result or DirectoryError."""
        results: dict[str, object] = {}

        async def one(peer: PeerAuthority) -> None:
            try:
                results[peer.address] = await func(peer, *args)
            except DirectoryError as exc:
                results[peer.address] = exc
            except Exception as exc:  # containment: a peer's odd answer never stops the authority
                results[peer.address] = DirectoryError(self.faults.record(exc, "peer answer"), reason="unexpected")

        async with anyio.create_task_group() as tg:
            for peer in self.config.peers:
                tg.start_soon(one, peer)
        return results

    # ----------------------------------------------------------------- building

    async def _build_loop(self) -> None:
        """Try each build point of the current and the next epoch until a document is signed.

        The rounds of the two epochs run side by side, so a slow round for one (a silent peer
        holds each phase to its end) never delays the other.
        """
        cfg = self.config
        running: set[int] = set()
        finished = anyio.Event()

        async def round_task(epoch: int, point: int) -> None:
            nonlocal finished
            try:
                await self._build_round(epoch, point)
            finally:
                running.discard(epoch)
                finished.set()
                finished = anyio.Event()

        async with anyio.create_task_group() as tg:
            while True:
                now = self.now()
                current = pki.epoch_at(now, cfg.epoch_seconds)
                assert self.store is not None
                self.store.purge_before(current - 1)
                for votes in (self._own_votes, self._frozen):
                    for old in [k for k in votes if k[0] < current - 1]:
                        del votes[old]
                built = set(self.store.built_epochs())
                due: list[tuple[int, int]] = []
                for epoch in (current, current + 1):
                    if epoch in built or epoch in running:
                        continue
                    # The latest point whose sync time has just passed (a late wake-up still
                    # counts), else the next one; never a point tried already.
                    late = now - cfg.sync_delay - cfg.round_seconds / 2
                    after = max(late, self._tried.get(epoch, -math.inf) + 0.5)
                    point = next_build_point(epoch, cfg.epoch_seconds, cfg.lead, cfg.round_seconds, after)
                    if point is not None:
                        due.append((point + cfg.sync_delay, epoch))
                started = False
                for start, epoch in sorted(due):
                    if start <= now:
                        point = start - cfg.sync_delay
                        self._tried[epoch] = point
                        running.add(epoch)
                        tg.start_soon(round_task, epoch, point)
                        started = True
                if started:
                    continue
                wake = min(due)[0] if due else pki.epoch_start(current + 1, cfg.epoch_seconds)
                with anyio.move_on_after(max(wake - now, 0)):
                    await finished.wait()

    async def _build_round(self, epoch: int, point: float) -> None:
        """One build attempt at a cutoff: adopt an agreed document, or vote in two phases, tally and sign."""
        assert self.store is not None
        with anyio.move_on_after(max(point + self.config.sync_delay - self.now(), 0) + self.config.vote_seconds / 2):
            if await self._adopt(epoch):  # a silent peer must not eat the voting phases
                return
        self._refresh_admissions()
        key = (epoch, int(point))
        own = self.own_vote(*key)
        phase1_end = point + self.config.sync_delay + self.config.vote_seconds
        direct: dict[bytes, Vote] = {own.authority_key: own}
        with anyio.move_on_after(max(phase1_end - self.now(), 0)):
            await self._gather(self._fetch_vote, key, direct)
        self._frozen[key] = list(direct.values())
        held: list[Vote] = list(direct.values())
        with anyio.move_on_after(max(phase1_end + self.config.vote_seconds - self.now(), 0)):
            await self._gather(self._fetch_relayed, key, held)
        if self.store is None or self.store.consensus(epoch) is not None:
            return
        result = tally(held, authorities=len(self.config.peers) + 1, epoch=epoch,
                       epoch_seconds=self.config.epoch_seconds, production=self.config.production)
        for liar in result.equivocated:
            log.warning("authority %s: authority %s signed two different votes for epoch %d; its votes are dropped",
                        self.config.name, pki.authority_id(liar)[:16], epoch)
        consensus = result.consensus
        if not consensus.nodes:
            return
        if (
            self.config.bootstrap_nodes
            and self.store.consensus(epoch - 1) is None
            and len(consensus.nodes) < self.config.bootstrap_nodes
        ):
            return
        self._sign_and_store(consensus)
        log.info(
            "authority %s: built epoch %d from %d votes with %d nodes, digest %s (at %.1f)",
            self.config.name, epoch, result.votes, len(consensus.nodes), consensus.digest().hex()[:16], self.now(),
        )

    # ----------------------------------------------------------------- votes

    def own_vote(self, epoch: int, point: int) -> Vote:
        """This authority's one vote at a build point, made once and kept (never two different)."""
        if self.now() < point:
            raise DirectoryError(f"build point {point} of epoch {epoch} is not reached yet", reason="not_ready")
        vote = self._own_votes.get((epoch, point))
        if vote is None:
            assert self.store is not None
            vote = make_vote(self.identity, epoch, point, self.admissions, self.store.descriptors(epoch, before=point),
                             self.config.params)
            self._own_votes[(epoch, point)] = vote
        return vote

    def held_votes(self, epoch: int, point: int) -> list[Vote]:
        """The votes fetched directly at a build point, once phase 1 is over here."""
        votes = self._frozen.get((epoch, point))
        if votes is None:
            raise DirectoryError(f"votes of epoch {epoch} at {point} are not frozen yet", reason="not_ready")
        return votes

    def _peer_keys(self) -> list[bytes]:
        return [p.public_key for p in self.config.peers] + [self.identity.public]

    async def _fetch_vote(self, peer: PeerAuthority, key: tuple[int, int], into: dict[bytes, Vote]) -> None:
        """Phase 1: the peer's own vote (retried while it is not ready), checked against its pinned key."""
        while True:
            try:
                reply = await self._ask(peer, dirproto.GetVote(*key), dirproto.VoteReply)
            except DirectoryError as exc:
                if exc.reason != "not_ready":
                    raise
                await anyio.sleep(VOTE_RETRY_SECONDS)
                continue
            vote = vote_from_dict(reply.vote, epoch=key[0], point=key[1], keys=[peer.public_key],
                                  production=self.config.production)
            into[vote.authority_key] = vote
            return

    async def _fetch_relayed(self, peer: PeerAuthority, key: tuple[int, int], into: list[Vote]) -> None:
        """Phase 2: the votes the peer fetched directly, except its own (it could show each of us another)."""
        while True:
            try:
                reply = await self._ask(peer, dirproto.GetVotes(*key), dirproto.VotesReply)
                break
            except DirectoryError as exc:
                if exc.reason != "not_ready":
                    raise
                await anyio.sleep(VOTE_RETRY_SECONDS)
        for item in reply.votes[: len(self.config.peers) + 1]:
            try:
                vote = vote_from_dict(item, epoch=key[0], point=key[1], keys=self._peer_keys(),
                                      production=self.config.production)
            except DirectoryError as exc:
                log.info("authority %s: %s relayed an unusable vote: %s", self.config.name, peer.address, exc)
                continue
            if vote.authority_key != peer.public_key:
                into.append(vote)

    def _refresh_admissions(self) -> None:
        """Re-read the admission list when the operator changed it (a broken file keeps the old list)."""
        path = self.config.data_dir / ADMISSION_FILE
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp == self._admission_stamp:
            return
        try:
            self.admissions = load_admission(self.config.data_dir)
        except ConfigError as exc:
            log.error("authority %s: keeping the previous admission list: %s", self.config.name, exc)
        self._admission_stamp = stamp

    def _sign_and_store(self, consensus: pki.Consensus) -> None:
        assert self.store is not None
        signature = pki.sign_consensus(consensus, self.identity)
        self.store.put_consensus(consensus, self.now())
        self.store.put_signature(consensus.epoch, self.authority_id, consensus.digest().hex(), signature)

    async def _adopt(self, epoch: int) -> bool:
        """Take a peer's document that already has ``threshold`` signatures of pinned authorities."""
        if not self.config.peers:
            return False
        peer_keys = [p.public_key for p in self.config.peers]
        needed = min(self.config.threshold, len(peer_keys))
        results = await self._gather(self._ask, dirproto.GetConsensus(epoch), dirproto.ConsensusReply)
        for address, reply in results.items():
            if not isinstance(reply, dirproto.ConsensusReply):
                continue
            signatures = reply.signatures
            try:
                consensus = pki.verify_consensus(
                    reply.document, signatures, authorities=peer_keys, threshold=needed,
                    now=self.now(), production=self.config.production,
                )
            except DirectoryError:
                continue
            if consensus.epoch != epoch or self.store is None or self.store.consensus(epoch) is not None:
                continue
            self._sign_and_store(consensus)
            self._record_signatures(consensus, signatures)
            log.info("authority %s: adopted epoch %d from %s", self.config.name, epoch, address)
            return True
        return False

    def _record_signatures(self, consensus: pki.Consensus, signatures: Mapping[str, object]) -> None:
        """Keep every valid peer signature over our document."""
        assert self.store is not None
        digest = consensus.digest().hex()
        for peer in self.config.peers:
            encoded = signatures.get(peer.authority_id)
            if not isinstance(encoded, str):
                continue
            if pki.consensus_signature_valid(consensus, peer.public_key, encoded):
                self.store.put_signature(consensus.epoch, peer.authority_id, digest, base64.b64decode(encoded))

    # ----------------------------------------------------------------- signatures

    async def _signature_loop(self) -> None:
        """Poll peers for their signatures over each document we signed, until we hold all."""
        while True:
            assert self.store is not None
            for epoch in self.store.built_epochs():
                if epoch < self.current_epoch():
                    continue
                await self._collect_signatures(epoch)
            await anyio.sleep(SIGNATURE_POLL_SECONDS)

    async def _collect_signatures(self, epoch: int) -> None:
        assert self.store is not None
        stored = self.store.consensus(epoch)
        if stored is None:
            return
        document, digest = stored
        have = self.store.signatures(epoch, digest)
        missing = [p for p in self.config.peers if p.authority_id not in have]
        if not missing:
            return
        consensus = pki.consensus_from_dict(document, production=self.config.production)

        async def one(peer: PeerAuthority) -> None:
            reply = None
            try:
                # A silent peer must not hold up the others' signatures: bound it like a voting phase.
                with anyio.move_on_after(self.config.vote_seconds):
                    reply = await self._ask(peer, dirproto.GetSignature(epoch, digest), dirproto.SignatureReply)
                if reply is None:
                    return
            except DirectoryError as exc:
                if exc.reason == "digest_mismatch":
                    log.warning("authority %s: %s signed a different document for epoch %d", self.config.name, peer.address, epoch)
                return
            except Exception as exc:  # containment: a peer's odd answer never stops the authority
                self.faults.record(exc, "peer answer")
                return
            encoded = reply.signature
            if pki.consensus_signature_valid(consensus, peer.public_key, encoded):
                if self.store is not None:
                    self.store.put_signature(epoch, peer.authority_id, digest, base64.b64decode(encoded))
            else:
                log.warning("authority %s: %s sent a signature that does not verify", self.config.name, peer.address)

        async with anyio.create_task_group() as tg:
            for peer in missing:
                tg.start_soon(one, peer)

    # ----------------------------------------------------------------- gossip

    async def _gossip_loop(self) -> None:
        """Copy peers' descriptors of epochs not built yet, so one authority's loss loses none."""
        while True:
            await anyio.sleep(self.config.gossip_seconds)
            assert self.store is not None
            current = self.current_epoch()
            for epoch in (current, current + 1):
                if self.store.consensus(epoch) is not None:
                    continue
                results = await self._gather(self._pull_descriptors, epoch, None)
                learned = self.now()
                for result in results.values():
                    if isinstance(result, list) and self.store is not None:
                        for descriptor in result:
                            self.store.add_descriptor(descriptor, learned)

    # ----------------------------------------------------------------- status

    def status(self, *, running: bool = True) -> dict:
        """What ``mixnode authority status`` shows (no secrets)."""
        epochs: dict[str, dict] = {}
        if self.store is not None:
            for epoch in self.store.epochs():
                stored = self.store.consensus(epoch)
                entry: dict = {"descriptors": self.store.count_descriptors(epoch), "consensus": stored is not None}
                if stored is not None:
                    entry["digest"] = stored[1][:16]
                    entry["signatures"] = len(self.store.signatures(epoch, stored[1]))
                epochs[str(epoch)] = entry
        return {
            "running": running,
            "pid": os.getpid(),
            "name": self.config.name,
            "authority_id": self.authority_id,
            "updated_at": self.now(),
            "epoch": self.current_epoch(),
            "epoch_seconds": self.config.epoch_seconds,
            "threshold": self.config.threshold,
            "addresses": self.addresses,
            "epochs": epochs,
            "admitted": [a.to_dict() for a in self.admissions.entries],
            "peers": {
                address: {"up": state.up, "last_ok": state.last_ok, "last_error": state.last_error}
                for address, state in self.peers.items()
            },
            "faults": self.faults.as_dict(),
        }

    async def _status_loop(self) -> None:
        while True:
            self._write_status(running=True)
            await anyio.sleep(STATUS_SECONDS)

    def _write_status(self, *, running: bool) -> None:
        try:
            write_status(self.config.data_dir, self.status(running=running))
        except OSError as exc:
            log.warning("authority %s: cannot write its status file: %s", self.config.name, exc.strerror)


