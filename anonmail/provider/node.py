"""The provider service: a layer-0 node that is its users' ingress and their mailbox (egress).

A :class:`Provider` composes the mix engine (:class:`mixnode.node.MixNode`: unwrap workers,
replay store, delay heap, links, descriptor publishing, loop cover, status file) with the
services of :class:`mixnode.interfaces.NodeServices` it implements::

    user agents ──CLIENT session──▶ auth, rate limit ──▶ engine.submit (first hop is us)
                                    fetch / confirm / publish_keys / keys / publish_prekeys / bundle
    engine worker (thread): replay tags persisted ─▶ Provider.deliver: Deliver / SurbDelivery
        ─▶ quota check ─▶ ONE durable transaction per batch ─▶ Stored(size, ACK)   (delivery.py)
    engine event loop: Provider.stored counts; the ACK (its first hop is us) re-enters our inbound
        queue and leaves after the hold its sender chose for this hop (docs/design.md)

The client protocol is :mod:`anonmail.core.mailproto`. A crash can never ACK something that
was not stored: the ACK packet exists only after :meth:`MailboxStore.store_many` returned. Drop
cover is answered the same way (its SURB, no entry), so every payload slot of a user returns
one ACK to her mailbox. ACKs held for their delay are in memory: a restart loses them, the
senders retransmit and the recipients merge the duplicates.
A full mailbox still stores and ACKs what arrives and evicts its own oldest entries (ACK replies
first) to stay within quota, so an ACK never tells a sender whether the owner has fetched; the
owner is told at its next fetch (``full``, ``evicted``). Deliveries to an unknown mailbox are
dropped without ACK.

What a provider learns: who its users are (identity keys), when they connect, fetch and send,
how much mail waits for them; never the content (sealed to the recipient), never who sent it
(the sender is inside the sealed fragment; the previous hop is a mix), never where a user's
packets go (Sphinx). Logs and ``status.json`` carry counts only: no addresses, mailbox ids or
keys of users.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from anonmail.clients.directory import DirectoryClient
from anonmail.core.address import Address
from anonmail.core.keys import EncryptionKeyCert, IdentityKey
from anonmail.core.mailproto import (
    AUTH_OPS,
    NONCE_BYTES,
    b64d,
    b64e,
    dummy_entry,
    encode_entry,
    error_message,
    lookup_address,
    require_fields,
    verify_auth,
)
from anonmail.core.wire import Close, Control, Packet, Role, encode_frame
from anonmail.daemon.containment import FaultCounter
from anonmail.errors import (
    KeyExpiredError,
    LinkError,
    ProtocolError,
    SignatureError,
    StoreError,
    WireError,
)
from anonmail.net.base import Transport
from anonmail.net.framed import FramedStream
from anonmail.provider import prekeys
from anonmail.provider.config import ProviderConfig
from anonmail.core.rendezvous import REQUEST_TYPES, parse_request
from anonmail.provider.delivery import Candidate, admit, classify, settle
from anonmail.provider.rendezvous import JOIN_BURST, JOIN_RATE, OPEN_BURST, OPEN_RATE, RendezvousTable
from anonmail.provider.store import MailboxStore, Usage
from mixnode.decisions import Decision, Drop, DropReason, Stored, Unwrapped
from mixnode.inbound import ClientSlot, TokenBucket
from mixnode.node import MixNode, Stats
from mixnode.replay import ReplayStore

__all__ = ["Provider", "TokenBucket", "MAILBOX_DB", "MAX_CERTS"]

log = logging.getLogger("anonmail.provider")

MAILBOX_DB = "mailboxes.sqlite"
#: Encryption-key certificates kept per account (newest first).
MAX_CERTS = 4
#: Seconds a client has to authenticate after connecting (key lookups do not extend it).
AUTH_TIMEOUT = 60.0
#: Seconds an authenticated session may stay silent before the provider closes it.
IDLE_TIMEOUT = 900.0
#: Bound on one write to a client.
CLIENT_SEND_TIMEOUT = 60.0


@dataclass
class _Session:
    """One client connection's state."""

    nonce: bytes
    slot: ClientSlot
    mailbox: bytes | None = None
    identity: bytes | None = None


class Provider:
    """One provider; ``await provider.run()`` serves until cancelled (use ``tg.start(provider.run)``).

    It is the mix engine (:class:`mixnode.node.MixNode`, held as :attr:`node`) composed with
    this provider's :class:`mixnode.interfaces.NodeServices`: delivery into mailboxes and the
    users' sessions. The engine calls those services; the provider reaches the engine only
    through its public methods (``submit``, ``blocking``, ``stats``).
    """

    #: The role published in the descriptor (NodeServices).
    role = "provider"
    #: A final-hop packet that is not one of our loops (NodeServices).
    foreign_final = DropReason.FOREIGN_LOOP

    def __init__(
        self,
        config: ProviderConfig,
        transports: Sequence[Transport],
        *,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        link_loss: float = 0.0,
    ) -> None:
        self.config = config
        self.node = MixNode(config, transports, wall_clock=wall_clock, rng=rng, link_loss=link_loss, services=self)
        self.wall_clock = wall_clock
        self.store: MailboxStore | None = None
        #: Provider counters (beside the engine's ``stats``): stored, acks_sent, fetches, ...
        self.mail: Counter = Counter()
        self._mailboxes: set[bytes] = set()
        self._buckets: dict[bytes, TokenBucket] = {}
        self._one_time_budget = prekeys.OneTimeBudget()
        #: Entries evicted from a full mailbox since its owner last fetched (told at the next fetch).
        self._evicted: Counter[bytes] = Counter()
        #: (mailbox, Usage) evicted by the worker thread, counted on the event loop.
        self._evictions: deque[tuple[bytes, Usage]] = deque()
        self._quota = Usage(config.quota_entries, config.quota_bytes)
        self._stored_entries = 0
        self._stored_bytes = 0
        self._sessions = 0
        #: Invitation rendezvous (in memory, bounded): docs/design.md, "Invitations".
        self.rendezvous: RendezvousTable | None = None

    # ------------------------------------------------------------------ the engine's face

    @property
    def stats(self) -> Stats:
        """The engine's counters."""
        return self.node.stats

    @property
    def faults(self) -> FaultCounter:
        """The engine's contained-failure counter (client requests and deliveries count there too)."""
        return self.node.faults

    @property
    def node_id(self) -> bytes:
        """This provider's routing id."""
        return self.node.node_id

    @property
    def identity(self) -> IdentityKey | None:
        """The node identity (None before ``run``)."""
        return self.node.identity

    @property
    def addresses(self) -> list[str]:
        """Where this provider is served."""
        return self.node.addresses

    @property
    def directory(self) -> DirectoryClient | None:
        """The engine's directory client."""
        return self.node.directory

    @property
    def replay(self) -> ReplayStore | None:
        """The engine's replay store."""
        return self.node.replay

    async def run(self, *, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve as a node until cancelled; ``started(self)`` once listening."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.node.run)
            task_status.started(self)

    def status(self, running: bool = True) -> dict:
        """The node status plus mailbox counters (counts only: no user is named)."""
        return self.node.status(running)

    # ------------------------------------------------------------------ NodeServices

    async def open(self) -> None:
        """Open the mailbox store before the engine serves."""
        data_dir: Path = self.config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = await self.node.blocking(MailboxStore, data_dir / MAILBOX_DB)  # type: ignore[assignment]
        self._mailboxes = await self.node.blocking(self.store.mailbox_ids)  # type: ignore[union-attr,assignment]
        totals: Usage = await self.node.blocking(self.store.totals)  # type: ignore[union-attr,assignment]
        self._stored_entries, self._stored_bytes = totals.entries, totals.bytes
        log.info("provider %s: %d accounts, %d stored entries", self.config.name, len(self._mailboxes),
                 totals.entries)

    def close(self) -> None:
        """Close the mailbox store after the engine stopped."""
        store, self.store = self.store, None
        if store is not None:
            store.close()

    def deliver(self, results: list[Unwrapped], now: float) -> list[Unwrapped | Decision]:
        """(Worker thread.) Store deliveries for our users durably, in one transaction per batch."""
        steps = admit([self._classify(r) for r in results], self._mailboxes)
        store = self.store
        entries = [s.entry for s in steps if isinstance(s, Candidate)]
        committed = True
        if entries:
            try:
                assert store is not None
                _ids, evicted = store.store_within_quota(entries, now, self._quota)
            except StoreError as exc:
                log.error("%s", exc)
                committed = False
            else:
                # A full mailbox evicted its oldest entries to take these: ACKed like any other;
                # the event loop counts the evictions (deque.append is thread-safe).
                self._evictions.extend(evicted.items())
        return settle(steps, committed, self.node_id)

    def _classify(self, result: Unwrapped) -> Unwrapped | Decision | Candidate:
        """classify, contained: one delivery that trips a bug is dropped and counted, never fatal."""
        try:
            return classify(result)
        except Exception as exc:  # containment: one delivery never stops the provider
            self.faults.record(exc, "delivery")
            return Drop(DropReason.UNEXPECTED_ERROR)

    def _count_evictions(self) -> None:
        """(Event loop.) Move what the worker evicted into the counters and the owners' notices."""
        while self._evictions:
            mailbox, gone = self._evictions.popleft()
            self._stored_entries -= gone.entries
            self._stored_bytes -= gone.bytes
            self.mail["evicted"] += gone.entries
            self._evicted[mailbox] += gone.entries

    def stored(self, decision: Stored) -> None:
        """(Event loop.) Count a committed delivery; the engine sends its ACK."""
        self._count_evictions()
        self.mail["stored"] += 1
        self._stored_entries += 1
        self._stored_bytes += decision.size
        if decision.ack is not None:
            self.mail["acks_sent"] += 1

    def status_fields(self) -> dict:
        """Mailbox counters added to the node status."""
        return {
            "role": "provider",
            "accounts": len(self._mailboxes),
            "stored_entries": self._stored_entries,
            "stored_bytes": self._stored_bytes,
            "client_sessions": self._sessions,
            "rate_limited": self.stats.dropped.get(DropReason.RATE_LIMITED, 0),
            "mail": dict(sorted(self.mail.items())),
            **{k: self.mail.get(k, 0) for k in ("stored", "acks_sent", "fetches", "confirmed", "ingress")},
        }

    # ------------------------------------------------------------------ client sessions

    async def serve_client(self, framed: FramedStream, slot: ClientSlot) -> None:
        """Serve one user agent (mailproto): challenge, auth, ingress packets, fetch, keys.

        Before login the session lives at most AUTH_TIMEOUT in all, whatever it asks; after
        login it is closed after IDLE_TIMEOUT of silence.
        """
        session = _Session(os.urandom(NONCE_BYTES), slot)
        auth_deadline = anyio.current_time() + AUTH_TIMEOUT
        self._sessions += 1
        self.mail["sessions"] += 1
        try:
            with anyio.fail_after(CLIENT_SEND_TIMEOUT):
                await framed.hello(Role.PROVIDER)
                await framed.send(Control({"type": "challenge", "nonce": b64e(session.nonce),
                                           "provider": self.config.name}))
            while True:
                wait = IDLE_TIMEOUT if session.mailbox is not None else auth_deadline - anyio.current_time()
                with anyio.fail_after(max(0.0, wait)):
                    frames = await framed.receive_batch()
                if frames is None:
                    return
                replies: list[bytes] = []
                for frame in frames:
                    if isinstance(frame, Packet):
                        self._ingress(session, frame.data)
                    elif isinstance(frame, Control):
                        out, keep = await self._control(session, frame.message)
                        replies.extend(out)
                        if not keep:
                            await self._send_client(framed, replies)
                            return
                    elif isinstance(frame, Close):
                        return
                    else:
                        self.stats.dropped[DropReason.CLIENT_UNEXPECTED_FRAME] += 1
                        replies.append(encode_frame(Control(error_message("unexpected_frame", "unexpected frame type"))))
                if replies:
                    await self._send_client(framed, replies)
        except WireError:
            self.stats.dropped[DropReason.CLIENT_BAD_FRAME] += 1
        except TimeoutError:
            self.mail["sessions_timed_out"] += 1
        except LinkError:
            pass  # the user's agent went away
        finally:
            self._sessions -= 1
            slot.release()

    async def _send_client(self, framed: FramedStream, chunks: list[bytes]) -> None:
        with anyio.fail_after(CLIENT_SEND_TIMEOUT):
            await framed.send_raw(b"".join(chunks))

    def _ingress(self, session: _Session, packet: bytes) -> None:
        """A user's packet: rate-limit per account, then the inbound queue like mix traffic."""
        if session.mailbox is None:
            self.stats.dropped[DropReason.UNAUTHENTICATED_PACKET] += 1
            return
        now = anyio.current_time()
        bucket = self._buckets.get(session.mailbox)
        if bucket is None:
            bucket = self._buckets[session.mailbox] = TokenBucket(self.config.send_rate, self.config.send_burst, now)
        if not bucket.take(now):
            self.stats.dropped[DropReason.RATE_LIMITED] += 1
            return
        self.mail["ingress"] += 1
        self.node.submit(packet, now)

    async def _control(self, session: _Session, message: dict) -> tuple[list[bytes], bool]:
        """Answer one CONTROL request: (encoded reply frames, whether the session goes on)."""
        kind = message.get("type")
        try:
            if kind == "auth":
                return [encode_frame(Control(await self._auth(session, message)))], True
            if kind == "keys":
                return [encode_frame(Control(await self._keys(message)))], True
            if kind in REQUEST_TYPES:
                return [encode_frame(Control(self._rendezvous(session, message)))], True
            if kind == "bundle":
                self.mail["bundle_lookups"] += 1
                answer, with_one_time = await self.node.blocking(
                    prekeys.bundle_answer, self.store, self.config.name, message, self._one_time_budget,
                    anyio.current_time())
                if answer["bundle"] is not None and not with_one_time:
                    self.mail["bundles_without_one_time"] += 1
                return [encode_frame(Control(answer))], True
            if kind not in ("fetch", "confirm", "publish_keys", "publish_prekeys"):
                raise ProtocolError(f"unknown request type {kind!r}", reason="unknown_request")
            if session.mailbox is None:
                raise ProtocolError(f"{kind!r} needs authentication first", reason="not_authenticated")
            if kind == "fetch":
                return await self._fetch(session, message), True
            if kind == "confirm":
                return [encode_frame(Control(await self._confirm(session, message)))], True
            if kind == "publish_prekeys":
                return [encode_frame(Control(await self._publish_prekeys(session, message)))], True
            require_fields(message, ["certs"])  # publish_keys
            await self._store_certs(session, message["certs"])
            return [encode_frame(Control({"type": "ok"}))], True
        except ProtocolError as exc:
            self.mail[f"refused_{exc.reason}"] += 1
            # A bad signature ends the session (no second guess with the same nonce).
            keep = not (kind == "auth" and exc.reason == "bad_signature")
            return [encode_frame(Control(error_message(exc.reason, str(exc))))], keep
        except StoreError as exc:
            log.error("%s", exc)
            return [encode_frame(Control(error_message("internal", "the provider's store failed; try later")))], True
        except Exception as exc:  # containment: one request never ends the session or the provider
            self.faults.record(exc, "client request")
            self.mail["refused_internal"] += 1
            return [encode_frame(Control(error_message("internal", "the provider could not handle this request")))], True

    async def _auth(self, session: _Session, message: dict) -> dict:
        require_fields(message, ["op", "identity", "signature", "certs"])
        if session.mailbox is not None:
            raise ProtocolError("this session is already authenticated", reason="already_authenticated")
        op = message["op"]
        if op not in AUTH_OPS:
            raise ProtocolError(f"op must be one of {', '.join(AUTH_OPS)}", reason="malformed")
        identity = b64d(message["identity"], "identity", 32)
        signature = b64d(message["signature"], "signature", 64)
        verify_auth(identity, signature, session.nonce, self.config.name, op)
        certs = self._verified_certs(identity, message["certs"])
        mailbox = Address.for_key(identity, self.config.name).mailbox_id
        assert self.store is not None
        if op == "register":
            if mailbox not in self._mailboxes:
                if self.config.registration != "open":
                    raise ProtocolError("this provider does not accept new accounts", reason="registration_closed")
                outcome = await self.node.blocking(self.store.register, mailbox, identity, self.wall_clock(),
                                               self.config.max_accounts)
                if outcome == "full":
                    raise ProtocolError("this provider has no room for new accounts", reason="provider_full")
                self._mailboxes.add(mailbox)
                self.mail["registered"] += 1
        elif mailbox not in self._mailboxes:
            raise ProtocolError("no account for this key here; register first", reason="unknown_account")
        if not session.slot.promote():
            raise ProtocolError("this provider serves as many users as it can; try again later", reason="provider_busy")
        session.mailbox, session.identity = mailbox, identity
        if certs:
            await self._merge_certs(mailbox, certs)
        self.mail["logins"] += 1
        return {"type": "auth_ok", "mailbox": b64e(mailbox), "limits": self.config.limits()}

    def _verified_certs(self, identity: bytes, raw: object) -> list[EncryptionKeyCert]:
        """Parse and check certificates a user publishes: theirs, signed, currently valid."""
        if not isinstance(raw, list) or len(raw) > 16:
            raise ProtocolError("certs must be a list of at most 16 certificates", reason="malformed")
        now = int(self.wall_clock())
        certs = []
        for i, text in enumerate(raw):
            blob = b64d(text, f"certs[{i}]", EncryptionKeyCert.CERT_BYTES)
            try:
                cert = EncryptionKeyCert.from_bytes(blob)
                if cert.identity_public != identity:
                    raise ProtocolError(f"certs[{i}] certifies another identity", reason="bad_cert")
                cert.verify(now=now)
            except (SignatureError, KeyExpiredError) as exc:
                raise ProtocolError(f"certs[{i}] is not valid: {exc}", reason="bad_cert") from None
            certs.append(cert)
        return certs

    async def _store_certs(self, session: _Session, raw: object) -> None:
        assert session.mailbox is not None and session.identity is not None
        await self._merge_certs(session.mailbox, self._verified_certs(session.identity, raw))

    async def _merge_certs(self, mailbox: bytes, certs: list[EncryptionKeyCert]) -> None:
        """Keep the newest few valid certificates: the new ones and the still-valid old ones."""
        assert self.store is not None
        account = await self.node.blocking(self.store.account, mailbox)
        kept = {c.to_bytes(): c for c in certs}
        for blob in account.certs if account is not None else ():  # type: ignore[union-attr]
            cert = self._valid_cert(blob)
            if cert is not None:
                kept.setdefault(blob, cert)
        newest = sorted(kept.values(), key=lambda c: (c.not_before, c.not_after), reverse=True)[:MAX_CERTS]
        await self.node.blocking(self.store.set_certs, mailbox, [c.to_bytes() for c in newest])

    def _valid_cert(self, blob: bytes) -> EncryptionKeyCert | None:
        try:
            cert = EncryptionKeyCert.from_bytes(blob)
            cert.verify(now=int(self.wall_clock()))
        except (SignatureError, KeyExpiredError):
            return None
        return cert

    async def _publish_prekeys(self, session: _Session, message: dict) -> dict:
        assert self.store is not None and session.mailbox is not None and session.identity is not None
        upload = prekeys.verified_upload(session.identity, message, now=int(self.wall_clock()))
        signed, one_time = prekeys.stored_parts(upload)
        held = await self.node.blocking(self.store.publish_prekeys, session.mailbox, signed, one_time,
                                        prekeys.MAX_ONE_TIME_HELD)
        return {"type": "prekeys_ok", "one_time": held}

    async def _keys(self, message: dict) -> dict:
        """Anyone may ask for a user's identity key and certificates (self-certifying)."""
        address = lookup_address(message, self.config.name)
        self.mail["key_lookups"] += 1
        assert self.store is not None
        account = await self.node.blocking(self.store.account, address.mailbox_id)
        if account is None:
            return {"type": "keys", "identity": None, "certs": []}
        certs = [b64e(b) for b in account.certs if self._valid_cert(b) is not None]  # type: ignore[union-attr]
        return {"type": "keys", "identity": b64e(account.identity), "certs": certs}  # type: ignore[union-attr]

    def _rendezvous(self, session: _Session, message: dict) -> dict:
        """An invitation request (provider/rendezvous.py); the table is made on first use."""
        now = self.wall_clock()
        if self.rendezvous is None:
            self.rendezvous = RendezvousTable(join_bucket=TokenBucket(JOIN_RATE, JOIN_BURST, now),
                                              open_bucket=TokenBucket(OPEN_RATE, OPEN_BURST, now))
        self.mail["invite_requests"] += 1
        return self.rendezvous.handle(parse_request(message), account=session.mailbox, now=now)

    async def _fetch(self, session: _Session, message: dict) -> list[bytes]:
        """Exactly ``fetch_batch`` entries, oldest first, padded with dummies."""
        require_fields(message, [])
        assert self.store is not None and session.mailbox is not None
        n = self.config.fetch_batch
        entries, remaining = await self.node.blocking(self.store.fetch, session.mailbox, n)  # type: ignore[misc]
        self.mail["fetches"] += 1
        self.mail["fetched"] += len(entries)
        self._count_evictions()
        held: Usage = await self.node.blocking(self.store.usage, session.mailbox)  # type: ignore[assignment]
        full = held.entries >= self.config.quota_entries or held.bytes >= self.config.quota_bytes
        evicted = self._evicted.pop(session.mailbox, 0)
        frames = [encode_frame(Control({"type": "entries", "count": n, "full": full, "evicted": evicted}))]
        frames += [encode_frame(Packet(encode_entry(e))) for e in entries]
        frames += [encode_frame(Packet(dummy_entry(remaining))) for _ in range(n - len(entries))]
        return frames

    async def _confirm(self, session: _Session, message: dict) -> dict:
        """Delete confirmed entries of this mailbox (exactly ``fetch_batch`` ids; unknown ones ignored)."""
        require_fields(message, ["ids"])
        ids = message["ids"]
        n = self.config.fetch_batch
        if (not isinstance(ids, list) or len(ids) != n
                or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**64 for i in ids)):
            raise ProtocolError(f"confirm carries exactly {n} entry ids (integers)", reason="malformed")
        assert self.store is not None and session.mailbox is not None
        before: Usage = await self.node.blocking(self.store.usage, session.mailbox)  # type: ignore[assignment]
        deleted: int = await self.node.blocking(self.store.delete, session.mailbox, ids)  # type: ignore[assignment]
        if deleted:
            after: Usage = await self.node.blocking(self.store.usage, session.mailbox)  # type: ignore[assignment]
            self._stored_entries -= before.entries - after.entries
            self._stored_bytes -= before.bytes - after.bytes
        self.mail["confirmed"] += deleted
        return {"type": "confirmed", "deleted": deleted}
