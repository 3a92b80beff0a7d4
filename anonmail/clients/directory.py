"""The directory client: upload descriptors to the authorities and fetch verified consensuses.

Mix nodes, providers and agents use it. :func:`upload_descriptor` sends a node's descriptor to
every authority at once and reports how many accepted it. :class:`DirectoryClient` fetches the
consensus of an epoch (:meth:`DirectoryClient.fetch`): it asks the pinned authorities in random
order, merges the signatures they return over the same document, and accepts the document only
through :func:`anonmail.core.pki.verify_consensus` (``threshold`` of the pinned keys, current or
next epoch). Its background task (:meth:`DirectoryClient.run`) keeps the current epoch's
consensus and fetches the next one ``prefetch`` seconds (default an eighth of an epoch) before
the current one ends, retrying every ``retry_seconds``. ``epoch_seconds`` must match the
authorities' (a consensus with another epoch length is refused); :meth:`DirectoryClient.wait_for` and the
``on_change`` callback let a node react to a new consensus.

Protocol (:mod:`anonmail.core.dirproto`): one connection per request, HELLO both ways, one
CONTROL request, one CONTROL reply. :func:`request_authority` is the one place that asks an
authority anything; nodes, agents and the authorities themselves (asking their peers) use it.
Every wait is bounded by :data:`REQUEST_TIMEOUT`. Time comes from the injected ``wall_clock``
and :func:`anyio.sleep`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence

import anyio
import anyio.abc

from anonmail.core import dirproto, pki
from anonmail.core.wire import MAX_DIRECTORY_CONTROL_BYTES, Role
from anonmail.errors import AnonmailError, DirectoryError
from anonmail.net.framed import FramedStream
from anonmail.net.router import Router

__all__ = ["REQUEST_TIMEOUT", "RETRY_SECONDS", "GRACE_FRACTION", "request_authority", "upload_descriptor",
           "DirectoryClient"]

log = logging.getLogger("anonmail.clients.directory")

#: Bound on one request to an authority (connect, HELLO, request, reply). A first connection to
#: an onion service can take 10-20 s on a small private network, so this is generous.
REQUEST_TIMEOUT = 30.0
#: Seconds between attempts while a wanted consensus is missing.
RETRY_SECONDS = 5.0
#: Default grace period, as a fraction of an epoch, in which the previous document stays in use.
GRACE_FRACTION = 0.25


async def request_authority(
    router: Router,
    address: str,
    request: dirproto.Request,
    expect: type[dirproto.R],
    *,
    role: Role = Role.CLIENT,
) -> dirproto.R:
    """One request to one authority, answered by a reply of type ``expect``.

    Raises DirectoryError: ``reason='unreachable'`` if it cannot be asked within
    :data:`REQUEST_TIMEOUT`, ``'bad_reply'`` if the answer does not parse, else the reason the
    authority refused with (``not_ready``, ``too_late``, ...). Cancellation closes the stream.
    """
    try:
        with anyio.fail_after(REQUEST_TIMEOUT):
            stream = await router.connect(address)
            async with stream:
                framed = FramedStream(stream, max_control_bytes=MAX_DIRECTORY_CONTROL_BYTES)
                await framed.hello(role)
                await framed.expect_hello()
                message = await framed.request(dirproto.encode(request))
    except TimeoutError:
        raise DirectoryError(f"authority {address} did not answer within {REQUEST_TIMEOUT:g} s", reason="unreachable") from None
    except AnonmailError as exc:
        raise DirectoryError(f"authority {address} unreachable: {exc}", reason="unreachable") from None
    try:
        reply = dirproto.parse_reply(message, expect)
    except DirectoryError as exc:
        raise DirectoryError(f"authority {address}: {exc}", reason=exc.reason) from None
    if isinstance(reply, dirproto.Refused):
        raise DirectoryError(f"authority {address} refused: {reply.reason}: {reply.message}", reason=reply.reason)
    return reply


async def upload_descriptor(
    router: Router, authority_addresses: Sequence[str], descriptor: pki.NodeDescriptor, *, role: Role = Role.MIX
) -> int:
    """Send a descriptor to every authority at once; return how many accepted it.

    Accepted means stored: whether it made the epoch's consensus depends on the authorities'
    cutoff (uploads for the next epoch well before it starts always do), so check the
    consensus. Upload for the next epoch ahead of time; ``too_late`` means its document exists.

    Raises DirectoryError naming each authority's answer if none accepted; its ``reason`` is the
    authorities' common reason when they agree (e.g. ``too_late``), else ``rejected``.
    """
    answers: dict[str, str] = {}
    reasons: set[str] = set()
    accepted = 0
    request = dirproto.UploadDescriptor(descriptor.to_dict())

    async def one(address: str) -> None:
        nonlocal accepted
        try:
            await request_authority(router, address, request, dirproto.Accepted, role=role)
        except DirectoryError as exc:
            answers[address], _ = str(exc), reasons.add(exc.reason)
            return
        accepted += 1

    async with anyio.create_task_group() as tg:
        for address in authority_addresses:
            tg.start_soon(one, address)
    if accepted == 0:
        detail = "; ".join(f"{a}: {why}" for a, why in sorted(answers.items())) or "no authorities configured"
        reason = reasons.pop() if len(reasons) == 1 else "rejected"
        raise DirectoryError(
            f"no authority accepted the descriptor of {descriptor.name!r} for epoch {descriptor.epoch}: {detail}",
            reason=reason,
        )
    for address, why in sorted(answers.items()):
        log.info("authority %s refused a descriptor: %s", address, why)
    return accepted


class DirectoryClient:
    """Fetches and keeps verified consensus documents from k-of-n pinned authorities."""

    def __init__(
        self,
        router: Router,
        authorities: Sequence[tuple[str, bytes]],
        threshold: int,
        *,
        production: bool = True,
        wall_clock: Callable[[], float] = time.time,
        on_change: Callable[[pki.Consensus], None] | None = None,
        rng: random.Random | None = None,
        epoch_seconds: int = pki.DEFAULT_EPOCH_SECONDS,
        prefetch: float | None = None,
        retry_seconds: float = RETRY_SECONDS,
        grace_seconds: float | None = None,
    ) -> None:
        if not authorities:
            raise ValueError("a directory client needs at least one authority")
        if not pki.majority(len(authorities)) <= threshold <= len(authorities):
            raise ValueError(
                f"threshold must be a majority of the {len(authorities)} pinned authorities "
                f"({pki.majority(len(authorities))}..{len(authorities)}), got {threshold}"
            )
        self.router = router
        self.authorities = [(address, bytes(key)) for address, key in authorities]
        self.threshold = threshold
        self.production = production
        self.wall_clock = wall_clock
        self.on_change = on_change
        self._rng = rng or random.SystemRandom()
        if epoch_seconds < 1:
            raise ValueError("epoch_seconds must be positive")
        self._prefetch = prefetch
        self.retry_seconds = retry_seconds
        self._consensus: dict[int, pki.Consensus] = {}
        self._changed = anyio.Event()
        self.epoch_seconds = epoch_seconds
        #: How long into an epoch without its document the previous one is still used.
        self.grace_seconds = epoch_seconds * GRACE_FRACTION if grace_seconds is None else grace_seconds
        self._grace_logged: int | None = None

    # ----------------------------------------------------------------- queries

    def get(self, epoch: int) -> pki.Consensus | None:
        """The verified consensus of an epoch, if held."""
        return self._consensus.get(epoch)

    def current(self) -> pki.Consensus | None:
        """The consensus of the epoch containing now; in the grace period, the previous one.

        If no document for the new epoch arrived (the authorities could not agree, or cannot be
        reached), the last one stays in use for :attr:`grace_seconds` into the new epoch, so
        sessions and mailbox fetches go on; :attr:`in_grace` says so and it is logged once.
        """
        now = self.wall_clock()
        epoch = pki.epoch_at(now, self.epoch_seconds)
        consensus = self._consensus.get(epoch)
        if consensus is not None:
            self._grace_logged = None
            return consensus
        previous = self._consensus.get(epoch - 1)
        if previous is None or now - pki.epoch_start(epoch, self.epoch_seconds) >= self.grace_seconds:
            return None
        if self._grace_logged != epoch:
            self._grace_logged = epoch
            log.warning("no consensus for epoch %d yet: using the one of epoch %d for up to %.0f s", epoch,
                        epoch - 1, self.grace_seconds)
        return previous

    @property
    def in_grace(self) -> bool:
        """Whether :meth:`current` is answering with the previous epoch's document."""
        current = self.current()
        return current is not None and current.epoch < pki.epoch_at(self.wall_clock(), self.epoch_seconds)

    async def wait_for(self, epoch: int) -> pki.Consensus:
        """Wait until the consensus of ``epoch`` is held (the caller bounds the wait)."""
        while epoch not in self._consensus:
            await self._changed.wait()
        return self._consensus[epoch]

    def _keep(self, consensus: pki.Consensus) -> None:
        if self._consensus.get(consensus.epoch) == consensus:
            return
        self._consensus[consensus.epoch] = consensus
        current = pki.epoch_at(self.wall_clock(), consensus.epoch_seconds)
        for old in [e for e in self._consensus if e < current - 1]:
            del self._consensus[old]
        self._changed.set()
        self._changed = anyio.Event()
        if self.on_change is not None:
            self.on_change(consensus)

    # ----------------------------------------------------------------- fetching

    async def fetch(self, epoch: int) -> pki.Consensus:
        """Fetch, verify and keep the consensus of ``epoch``.

        Asks authorities one at a time in random order and merges the signatures of those
        that return the same document until ``threshold`` verify. Raises DirectoryError saying
        what each authority answered (reason ``too_few_signatures``, ``stale``, ``future`` or
        ``malformed`` from the last verification, else ``unavailable``).
        """
        order = list(self.authorities)
        self._rng.shuffle(order)
        keys = [key for _, key in self.authorities]
        documents: dict[bytes, tuple[object, dict[str, str]]] = {}
        answers: list[str] = []
        last: DirectoryError | None = None
        for address, _key in order:
            try:
                reply = await request_authority(self.router, address, dirproto.GetConsensus(epoch), dirproto.ConsensusReply)
            except DirectoryError as exc:
                answers.append(f"{address}: {'unreachable' if exc.reason == 'unreachable' else exc}")
                continue
            document, signatures = reply.document, reply.signatures
            try:
                parsed = pki.consensus_from_dict(document, production=self.production)
            except DirectoryError as exc:
                answers.append(f"{address}: {exc}")
                last = exc
                continue
            if parsed.epoch_seconds != self.epoch_seconds:
                last = DirectoryError(
                    f"{address} uses epochs of {parsed.epoch_seconds} s, this node {self.epoch_seconds} s "
                    "(set epoch_seconds to the authorities' value)",
                    reason="malformed",
                )
                answers.append(f"{address}: epoch length {parsed.epoch_seconds} s differs")
                continue
            if parsed.epoch != epoch:
                last = DirectoryError(f"{address} sent the consensus of epoch {parsed.epoch}, asked for {epoch}", reason="malformed")
                answers.append(f"{address}: wrong epoch {parsed.epoch}")
                continue
            digest = parsed.digest()
            merged = documents.setdefault(digest, (document, {}))[1]
            merged.update(signatures)
            try:
                consensus = pki.verify_consensus(
                    document, merged, authorities=keys, threshold=self.threshold,
                    now=self.wall_clock(), production=self.production,
                )
            except DirectoryError as exc:
                answers.append(f"{address}: {exc}")
                last = exc
                continue
            self._keep(consensus)
            return consensus
        reason = last.reason if last is not None else "unavailable"
        raise DirectoryError(
            f"no acceptable consensus for epoch {epoch} from {len(order)} authorities: " + "; ".join(answers),
            reason=reason,
        )

    # ----------------------------------------------------------------- background

    @property
    def prefetch(self) -> float:
        """Seconds before an epoch ends at which the next epoch's consensus is fetched."""
        return self._prefetch if self._prefetch is not None else self.epoch_seconds / 8

    async def run(self, *, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep the current consensus and fetch the next before the current ends, until cancelled.

        Reports started at once (use :meth:`wait_for` to wait for a consensus). While a wanted
        consensus is missing it retries every ``retry_seconds``; failures are logged, not raised.
        """
        task_status.started()
        seconds = self.epoch_seconds
        while True:
            now = self.wall_clock()
            current = pki.epoch_at(now, seconds)
            next_start = pki.epoch_start(current + 1, seconds)
            fetch_at = next_start - self.prefetch
            if current not in self._consensus:
                await self._try(current)
            if now >= fetch_at and current + 1 not in self._consensus:
                await self._try(current + 1)
            now = self.wall_clock()
            missing = current not in self._consensus or (now >= fetch_at and current + 1 not in self._consensus)
            if missing:
                wake = now + self.retry_seconds
            else:
                wake = fetch_at if now < fetch_at else next_start
            await anyio.sleep(max(min(wake, next_start) - now, 0.01))

    async def _try(self, epoch: int) -> None:
        try:
            await self.fetch(epoch)
        except DirectoryError as exc:
            log.info("consensus for epoch %d not available yet: %s", epoch, exc.reason)
