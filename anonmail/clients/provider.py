"""The client side of the provider protocol (:mod:`anonmail.core.mailproto`), for user agents.

::

    async with await ProviderClient.connect(router, address, identity, "alpha", op="register") as client:
        await client.send_packets(packets)        # ingress: Sphinx packets whose first hop is the provider
        result = await client.fetch()             # real entries only; result.remaining tells if more wait
        await client.confirm([e.entry_id for e in result.entries])

One request at a time per client (a lock serialises them); every network wait is bounded by
``anyio.fail_after``. Errors: :class:`~anonmail.errors.ProtocolError` (the provider refused,
``reason`` is the provider's) or :class:`~anonmail.errors.TransportError` (unreachable, broken
or silent link). Cancellation leaves the connection unusable: close it.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType

import anyio
import anyio.abc

from anonmail.core.address import Address
from anonmail.core.keys import EncryptionKeyCert, IdentityKey
from anonmail.core.prekeys import PrekeyBundle, PrekeyUpload
from anonmail.core.mailproto import (
    AUTH_OPS,
    ENTRY_DUMMY,
    ENTRY_ID_LIMIT,
    NONCE_BYTES,
    Entry,
    b64d,
    b64e,
    decode_entry,
    require_fields,
    sign_auth,
)
from anonmail.core.wire import Close, Control, Packet, Role, encode_frame
from anonmail.errors import AnonmailError, LinkError, ProtocolError, SessionError, TransportError, WireError
from anonmail.net.framed import FramedStream
from anonmail.net.router import Router

__all__ = ["ProviderClient", "FetchResult", "lookup_keys", "lookup_bundle", "REQUEST_TIMEOUT"]

#: Default bound on connecting and on each request, seconds (Tor and I2P can be slow).
REQUEST_TIMEOUT = 60.0

@dataclass(frozen=True)
class FetchResult:
    """What one fetch brought: the real entries (dummies removed) and how many still wait.

    ``full``: the mailbox is at its quota; ``evicted``: entries it dropped (oldest first) since
    the previous fetch to take new ones.
    """

    entries: list[Entry]
    remaining: int
    full: bool = False
    evicted: int = 0


async def _open(router: Router, address: str, timeout: float, *, isolated: bool = False) -> FramedStream:
    """Connect (``isolated``: on a path of its own), exchange HELLOs (we are a CLIENT; the peer must be a PROVIDER)."""
    try:
        with anyio.fail_after(timeout):
            stream = await router.connect(address, isolated=isolated)
    except TimeoutError:
        raise TransportError(f"provider {address} not reachable within {timeout:g} s", address=address) from None
    framed = FramedStream(stream)
    try:
        with anyio.fail_after(timeout):
            await framed.hello(Role.CLIENT)
            hello = await framed.expect_hello()
    except BaseException as exc:
        await _close_quietly(framed)
        if isinstance(exc, TimeoutError):
            raise TransportError(f"provider {address} did not greet within {timeout:g} s", address=address) from None
        if isinstance(exc, (WireError, LinkError)):
            raise TransportError(f"provider {address} broke the connection: {type(exc).__name__}", address=address) from None
        raise
    if hello.role != Role.PROVIDER:
        await _close_quietly(framed)
        raise ProtocolError(f"{address} is not a provider (it says it is a {hello.role.name.lower()})",
                            reason="not_a_provider")
    return framed


async def _close_quietly(framed: FramedStream) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(1):
        await framed.aclose()  # a link closes quietly even when it broke


@asynccontextmanager
async def _translated(framed: FramedStream, address: str, timeout: float) -> AsyncIterator[None]:
    """Bound the block by ``timeout``; on any failure close ``framed``, a broken link as TransportError."""
    try:
        with anyio.fail_after(timeout):
            yield
    except BaseException as exc:
        await _close_quietly(framed)
        if isinstance(exc, TimeoutError):
            raise TransportError(f"provider {address} did not answer within {timeout:g} s", address=address) from None
        if isinstance(exc, (WireError, LinkError)):
            raise TransportError(f"provider {address} broke the connection: {type(exc).__name__}",
                                 address=address) from None
        raise


async def _challenge(framed: FramedStream) -> dict:
    """The provider's first CONTROL message, which must be its challenge."""
    frame = await framed.receive()
    if not isinstance(frame, Control):
        raise ProtocolError("the provider sent no challenge", reason="malformed")
    return _check_reply(frame.message, "challenge")


def _check_reply(reply: dict, expected: str) -> dict:
    """Raise the provider's error as ProtocolError; otherwise check the reply's type."""
    kind = reply.get("type")
    if kind == "error":
        reason = reply.get("reason")
        text = reply.get("message")
        raise ProtocolError(
            f"provider refused: {text if isinstance(text, str) else 'no reason given'}",
            reason=reason if isinstance(reason, str) else "refused",
        )
    if kind != expected:
        raise ProtocolError(f"expected a {expected!r} reply, got {kind!r}", reason="malformed")
    return reply


class ProviderClient:
    """An authenticated session with the user's provider (ingress, mailbox, key publishing)."""

    mailbox: bytes
    limits: dict

    def __init__(self, framed: FramedStream, address: str, mailbox: bytes, limits: dict, timeout: float) -> None:
        """Use :meth:`connect`."""
        self._framed = framed
        self.address = address
        self.mailbox = mailbox
        self.limits = limits
        self.timeout = timeout
        self._lock = anyio.Lock()
        self._closed = False

    @property
    def fetch_batch(self) -> int:
        """Entries per fetch (and ids per confirm) this provider uses."""
        return int(self.limits["fetch_batch"])

    @classmethod
    async def connect(
        cls,
        router: Router,
        address: str,
        identity: IdentityKey,
        provider: str,
        *,
        op: str = "login",
        certs: Sequence[EncryptionKeyCert] = (),
        timeout: float = REQUEST_TIMEOUT,
    ) -> ProviderClient:
        """Connect to ``provider`` at ``address`` and authenticate (``op`` "register" or "login")."""
        if op not in AUTH_OPS:
            raise ValueError(f"op must be one of {AUTH_OPS}, got {op!r}")
        framed = await _open(router, address, timeout)
        async with _translated(framed, address, timeout):
            challenge = await _challenge(framed)
            require_fields(challenge, ["nonce", "provider"])
            nonce = b64d(challenge["nonce"], "nonce", NONCE_BYTES)
            if challenge["provider"] != provider:
                raise ProtocolError(
                    f"{address} is provider {challenge['provider']!r}, not {provider!r}", reason="wrong_provider"
                )
            reply = await framed.request({
                "type": "auth",
                "op": op,
                "identity": b64e(identity.public),
                "signature": b64e(sign_auth(identity, nonce, provider, op)),
                "certs": [b64e(c.to_bytes()) for c in certs],
            })
            ok = _check_reply(reply, "auth_ok")
            require_fields(ok, ["mailbox", "limits"])
            mailbox = b64d(ok["mailbox"], "mailbox", 16)
            limits = ok["limits"]
            if mailbox != Address.for_key(identity.public, provider).mailbox_id:
                raise ProtocolError("the provider named a mailbox that is not ours", reason="malformed")
            if not isinstance(limits, dict) or not isinstance(limits.get("fetch_batch"), int) or limits["fetch_batch"] < 1:
                raise ProtocolError("the provider's limits are malformed", reason="malformed")
        return cls(framed, address, mailbox, limits, timeout)

    @classmethod
    async def anonymous(cls, router: Router, address: str, *, timeout: float = REQUEST_TIMEOUT) -> ProviderClient:
        """A session that never authenticates (to join an invitation there), on a path of its own.

        Isolated like a key lookup: had it shared the circuit (or I2P session) of the user's logged-in
        session with the same provider, that provider would learn who accepted whose invitation.
        Only :meth:`request` works.
        """
        framed = await _open(router, address, timeout, isolated=True)
        async with _translated(framed, address, timeout):
            await _challenge(framed)
        return cls(framed, address, b"", {"fetch_batch": 1}, timeout)

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Say goodbye and close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(1):
            try:
                await self._framed.send(Close(0, "bye"))
            except (LinkError, WireError):
                pass
        await _close_quietly(self._framed)

    # ------------------------------------------------------------------ requests

    async def _guard(self, coro_fn, *args):
        """Run one exchange under the lock and the timeout, translating link failures."""
        if self._closed:
            raise TransportError(f"the session with {self.address} is closed", address=self.address)
        async with self._lock:
            try:
                with anyio.fail_after(self.timeout):
                    return await coro_fn(*args)
            except TimeoutError:
                raise TransportError(f"provider {self.address} did not answer within {self.timeout:g} s",
                                     address=self.address) from None
            except (LinkError, WireError) as exc:
                raise TransportError(f"the connection to {self.address} broke: {type(exc).__name__}",
                                     address=self.address) from None

    async def _request(self, message: dict, expected: str) -> dict:
        frame = await self._request_frame(message)
        return _check_reply(frame, expected)

    async def _request_frame(self, message: dict) -> dict:
        await self._framed.send(Control(message))
        frame = await self._framed.receive()
        if isinstance(frame, Control):
            return frame.message
        if frame is None or isinstance(frame, Close):
            raise TransportError(f"provider {self.address} closed the session", address=self.address)
        raise ProtocolError(f"expected a CONTROL reply, got {type(frame).__name__}", reason="malformed")

    async def send_packets(self, packets: Sequence[bytes]) -> None:
        """Hand Sphinx packets (first hop: this provider) to the provider; no answer is awaited."""
        if not packets:
            return
        data = b"".join(encode_frame(Packet(p)) for p in packets)
        await self._guard(self._framed.send_raw, data)

    async def fetch(self) -> FetchResult:
        """Fetch one batch: exactly ``fetch_batch`` entries travel; the real ones are returned."""
        return await self._guard(self._fetch)

    async def _fetch(self) -> FetchResult:
        reply = await self._request({"type": "fetch"}, "entries")
        require_fields(reply, ["count", "full", "evicted"])
        count, full, evicted = reply["count"], reply["full"], reply["evicted"]
        if not isinstance(full, bool) or not isinstance(evicted, int) or isinstance(evicted, bool) or evicted < 0:
            raise ProtocolError("the provider's entries reply is malformed", reason="malformed")
        if count != self.fetch_batch:
            raise ProtocolError(f"the provider sent {count!r} entries, expected {self.fetch_batch}", reason="malformed")
        entries: list[Entry] = []
        remaining = 0
        for _ in range(count):
            frame = await self._framed.receive()
            if not isinstance(frame, Packet):
                if frame is None or isinstance(frame, Close):
                    raise TransportError(f"provider {self.address} closed the session mid-fetch", address=self.address)
                raise ProtocolError("expected a mailbox entry", reason="malformed")
            entry = decode_entry(frame.data)
            remaining = max(remaining, entry.remaining)
            if entry.kind != ENTRY_DUMMY:
                entries.append(entry)
        return FetchResult(entries, remaining, full, evicted)

    async def confirm(self, entry_ids: Sequence[int]) -> int:
        """Delete fetched entries at the provider (ids padded with random ones); how many went."""
        ids = [int(i) for i in entry_ids]
        n = self.fetch_batch
        deleted = 0
        for start in range(0, max(len(ids), 1), n):
            chunk = ids[start : start + n]
            chunk += [secrets.randbelow(ENTRY_ID_LIMIT - 1) + 1 for _ in range(n - len(chunk))]
            reply = await self._guard(self._request, {"type": "confirm", "ids": chunk}, "confirmed")
            count = reply.get("deleted")
            if not isinstance(count, int) or isinstance(count, bool):
                raise ProtocolError("the provider's confirm reply is malformed", reason="malformed")
            deleted += count
        return deleted

    async def request(self, message: dict, expected: str) -> dict:
        """One CONTROL request and its ``expected`` answer (e.g. invitations); refusals as ProtocolError."""
        return await self._guard(self._request, message, expected)

    async def publish_keys(self, certs: Sequence[EncryptionKeyCert]) -> None:
        """Publish encryption-key certificates so new contacts can look them up."""
        await self._guard(self._request, {"type": "publish_keys", "certs": [b64e(c.to_bytes()) for c in certs]}, "ok")

    async def publish_prekeys(self, upload: PrekeyUpload) -> int:
        """Publish our prekeys so senders can start sessions; returns how many one-time prekeys the provider holds."""
        reply = await self._guard(self._request, {"type": "publish_prekeys", "upload": b64e(upload.to_bytes())},
                                  "prekeys_ok")
        held = reply.get("one_time")
        if not isinstance(held, int) or isinstance(held, bool) or held < 0:
            raise ProtocolError("the provider's prekeys_ok reply is malformed", reason="malformed")
        return held


async def _ask(router: Router, provider_address: str, request: dict, expected: str, timeout: float) -> dict:
    """One unauthenticated request on its own isolated connection (key and bundle lookups)."""
    framed = await _open(router, provider_address, timeout, isolated=True)
    try:
        with anyio.fail_after(timeout):
            frame = await framed.receive()
            if not isinstance(frame, Control):
                raise ProtocolError("the provider sent no challenge", reason="malformed")
            _check_reply(frame.message, "challenge")
            reply = _check_reply(await framed.request(request), expected)
            await framed.send(Close(0, "bye"))
    except TimeoutError:
        raise TransportError(f"provider {provider_address} did not answer within {timeout:g} s",
                             address=provider_address) from None
    except (LinkError, WireError) as exc:
        raise TransportError(f"the connection to {provider_address} broke: {type(exc).__name__}",
                             address=provider_address) from None
    finally:
        await _close_quietly(framed)
    return reply


async def lookup_keys(
    router: Router, provider_address: str, user: Address, *, timeout: float = REQUEST_TIMEOUT
) -> tuple[bytes, list[EncryptionKeyCert]]:
    """Ask a user's provider for their identity key and certificates, checked against the address.

    Every lookup goes on a connection of its own (:meth:`Router.connect` with ``isolated``: a
    fresh Tor circuit, a fresh I2P destination), so the provider cannot link it to the asker's
    authenticated session, nor two lookups to each other, by circuit or destination.

    Raises AddressError if the identity does not hash to the address (a lying provider),
    ProtocolError(reason="unknown_user") if the provider has no such user, TransportError if
    the provider cannot be asked. Certificates that are malformed or not the user's are dropped
    (callers pick one with :func:`anonmail.core.keys.newest_valid`).
    """
    reply = await _ask(router, provider_address, {"type": "keys", "address": str(user)}, "keys", timeout)
    require_fields(reply, ["identity", "certs"])
    if reply["identity"] is None:
        raise ProtocolError(f"provider {user.provider!r} has no user {user}", reason="unknown_user")
    identity = b64d(reply["identity"], "identity", 32)
    user.verify_key(identity)
    raw = reply["certs"]
    if not isinstance(raw, list):
        raise ProtocolError("certs must be a list", reason="malformed")
    certs = []
    for i, text in enumerate(raw):
        try:
            cert = EncryptionKeyCert.from_bytes(b64d(text, f"certs[{i}]"))
        except AnonmailError:  # SignatureError, ProtocolError
            continue
        if cert.identity_public == identity:
            certs.append(cert)
    return identity, certs


async def lookup_bundle(
    router: Router, provider_address: str, user: Address, *, timeout: float = REQUEST_TIMEOUT
) -> PrekeyBundle:
    """Ask a user's provider for a prekey bundle (it hands out one one-time prekey per ask).

    The bundle's identity is checked against the address (AddressError from a lying provider);
    its signatures and lifetimes are the caller's to check (:meth:`PrekeyBundle.verify`).
    ProtocolError(reason="no_prekeys") if the user has none published (or does not exist),
    ProtocolError(malformed) for a bundle that does not parse, TransportError if the provider
    cannot be asked.
    """
    reply = await _ask(router, provider_address, {"type": "bundle", "address": str(user)}, "bundle", timeout)
    require_fields(reply, ["identity", "bundle"])
    if reply["identity"] is None or reply["bundle"] is None:
        raise ProtocolError(f"provider {user.provider!r} has no prekeys for {user}", reason="no_prekeys")
    identity = b64d(reply["identity"], "identity", 32)
    user.verify_key(identity)
    try:
        bundle = PrekeyBundle.from_bytes(b64d(reply["bundle"], "bundle"))
    except SessionError as exc:
        raise ProtocolError(f"the provider's bundle is malformed: {exc}", reason="malformed") from None
    if bundle.identity != identity:
        raise ProtocolError("the provider's bundle belongs to another identity", reason="malformed")
    return bundle
