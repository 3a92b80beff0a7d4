"""The agent's side of invitations: run what ``anonmail invite`` and ``anonmail accept`` ask for.

The CLI and the agent meet in the ``invitations`` table of the agent's store (as ``send`` and
the outbox do): the CLI inserts a row (``requested``), the agent runs it and moves it on::

    invite: requested -> starting -> waiting (the code is in the row) -> done | failed | expired
    accept: requested -> starting -> joined -> done | failed | expired
    the CLI may set ``cancelled`` at any time (^C); the agent then closes its side

The inviter speaks through the agent's logged-in session with its own provider; the acceptor
opens an unauthenticated connection to the provider named in the code, as a key lookup does.
The cryptography is :class:`anonmail.core.invite.InviteSession`; a success adds the peer as a
verified contact together with its encryption keys and a prekey bundle (``ext["bundle"]``: our
signed prekeys and a one-time prekey made for this introduction), so the first mail starts an
end-to-end session at once, without a key or bundle lookup.
A row left unfinished by a stopped agent is failed when the agent starts again. The code never
reaches a log; it is wiped from the row when the invitation ends.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from typing import TYPE_CHECKING

import anyio

from anonmail.agent import account
from anonmail.agent.stats import why
from anonmail.clients.provider import ProviderClient
from anonmail.clients.rendezvous import Rendezvous
from anonmail.core.address import parse_address
from anonmail.core.invite import (
    MAX_CERTS,
    MISMATCH_MESSAGE,
    Introduction,
    InviteCode,
    InviteSession,
    Side,
    new_code,
    parse_code,
)
from anonmail.core.keys import EncryptionKeyCert
from anonmail.core.prekeys import PrekeyBundle
from anonmail.errors import AnonmailError, InviteError, ProtocolError, SessionError, TransportError

if TYPE_CHECKING:
    from anonmail.agent.service import Agent

__all__ = ["InviteRunner", "POLL_S", "FINAL_STATES", "default_contact_name"]

log = logging.getLogger("anonmail.agent")

#: How often a waiting side asks the rendezvous for news, seconds.
POLL_S = 1.0
#: Row states after which nothing more happens.
FINAL_STATES = ("done", "failed", "expired", "cancelled")


def default_contact_name(address: str) -> str:
    """A petname for a peer who was not named: ``contact-`` and the first 8 characters of its address."""
    return f"contact-{address[:8]}"


class _MainSession:
    """The agent's logged-in provider session as a rendezvous channel (it may reconnect meanwhile)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def request(self, message: dict, expected: str) -> dict:
        client = self.agent._client
        if client is None:
            with anyio.move_on_after(30):
                await self.agent._connected.wait()
                while self.agent._client is None:
                    await anyio.sleep(0.5)
            client = self.agent._client
            if client is None:
                raise TransportError("no session with our provider (is it reachable?)")
        try:
            return await client.request(message, expected)
        except TransportError as exc:
            self.agent._drop_session(exc, "invite")
            raise


async def _close(rv: Rendezvous, nameplate: int, token: bytes, outcome: str) -> None:
    """Close our side if the rendezvous still holds it (it may have expired or ended)."""
    try:
        with anyio.move_on_after(30):
            await rv.close(nameplate, token, outcome)
    except (ProtocolError, TransportError):
        pass


class _Ended(Exception):
    """Internal: the invitation ended without a contact (expired or cancelled); the row says why."""


class InviteRunner:
    """Picks up invitation rows and runs each in its own task; ``await tg.start(runner.run)``."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.store = agent.store

    async def _blocking(self, fn, *args, **kwargs):
        return await self.agent._blocking(fn, *args, **kwargs)

    async def run(self, *, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Fail rows a previous agent left unfinished, then run new ones until cancelled."""
        for row in await self._blocking(self.store.invitations, "starting", "waiting", "joined"):
            await self._blocking(self.store.update_invitation, row["id"], state="failed",
                                 detail="the agent stopped during this invitation; start a new one")
        async with anyio.create_task_group() as tg:
            task_status.started()
            while True:
                for row in await self._blocking(self.store.invitations, "requested"):
                    if await self._blocking(self.store.update_invitation, row["id"], state="starting",
                                            only_from=("requested",)):
                        tg.start_soon(self._run_one, row)
                await anyio.sleep(min(POLL_S, self.agent.settings.poll_interval))

    async def _run_one(self, row: dict) -> None:
        ident = row["id"]
        try:
            if row["role"] == "invite":
                name = await self._invite(ident, row["name"])
            else:
                name = await self._accept(ident, row["name"], row["code"])
        except _Ended:
            return
        except InviteError as exc:
            await self._finish(ident, "expired" if exc.reason == "expired" else "failed", str(exc))
            log.info("an invitation failed: %s", exc.reason)
            return
        except ProtocolError as exc:
            await self._finish(ident, "failed", f"the rendezvous refused: {exc}")
            log.info("an invitation failed: the rendezvous refused (%s)", exc.reason)
            return
        except (TransportError, TimeoutError) as exc:
            await self._finish(ident, "failed", f"the rendezvous could not be reached ({why(exc)}); try again")
            log.info("an invitation failed: %s", why(exc))
            return
        except AnonmailError as exc:
            await self._finish(ident, "failed", str(exc))
            log.warning("an invitation failed: %s", why(exc))
            return
        await self._finish(ident, "done", "", contact=name)
        log.info("an invitation succeeded: a verified contact was added")

    async def _finish(self, ident: int, state: str, detail: str, **fields) -> None:
        await self._blocking(self.store.update_invitation, ident, state=state, detail=detail,
                             only_from=("starting", "waiting", "joined"), **fields)

    async def _introduction(self) -> Introduction:
        """Our address, identity key, current encryption-key certificates and a prekey bundle."""
        for _ in range(30):
            certs: list[EncryptionKeyCert] = await self._blocking(account.my_certs, self.store, now=self.agent.now())
            if certs:
                upload = await self._blocking(self.agent.e2e.prekey_upload, now=self.agent.now(), one_time=1)
                bundle = upload.bundle(upload.one_time[0]).to_bytes()
                return Introduction(str(self.agent.address), self.agent.identity.public,
                                    tuple(c.to_bytes() for c in certs[:MAX_CERTS]),
                                    {"bundle": base64.b64encode(bundle).decode("ascii")})
            await anyio.sleep(1.0)
        raise InviteError("this agent has no encryption key yet; try again in a minute", reason="no_key")

    async def _cancelled(self, ident: int) -> bool:
        row = await self._blocking(self.store.invitation, ident)
        return row is None or row["state"] == "cancelled"

    async def _wait_for_peer(self, rv: Rendezvous, nameplate: int, token: bytes, ident: int, deadline: float):
        """Poll until the peer's sealed introduction is there; InviteError or _Ended otherwise."""
        expired = InviteError("the code expired before the exchange finished; start a new invite", reason="expired")
        while True:
            try:
                state = await rv.get(nameplate, token)
            except ProtocolError as exc:
                if exc.reason == "no_invitation":
                    raise expired from None
                raise
            if state.state == "failed":
                await _close(rv, nameplate, token, "mismatch")
                raise InviteError(MISMATCH_MESSAGE, reason="mismatch")
            if state.pake is not None and state.sealed is not None:
                return state
            if await self._cancelled(ident):
                await _close(rv, nameplate, token, "done")
                raise _Ended()
            if anyio.current_time() >= deadline:
                await _close(rv, nameplate, token, "done")
                raise expired
            await anyio.sleep(POLL_S)

    async def _conclude(self, session: InviteSession, rv: Rendezvous, nameplate: int, token: bytes,
                        sealed: bytes) -> Introduction:
        """Open the peer's introduction; on a mismatch tell the rendezvous, so both sides end."""
        try:
            intro = session.open_peer(sealed, now=self.agent.now())
        except InviteError:
            await _close(rv, nameplate, token, "mismatch")
            raise
        if intro.identity == self.agent.identity.public:
            await _close(rv, nameplate, token, "mismatch")
            raise InviteError("that is your own code: give it to the person you invite", reason="own_code")
        return intro

    async def _add(self, intro: Introduction, name: str | None) -> str:
        address = parse_address(intro.address)
        rows = []
        for blob in intro.certs:
            cert = EncryptionKeyCert.from_bytes(blob)
            rows.append((blob, cert.not_before, cert.not_after))
        added = await self._blocking(self.store.add_invited_contact, name or default_contact_name(intro.address),
                                     str(address), address.fingerprint, intro.identity, rows,
                                     now=self.agent.wall_clock())
        bundle = self._bundle_of(intro)
        if bundle is not None:
            await self._blocking(self.store.put_bundle, address.fingerprint, bundle, self.agent.wall_clock())
        return added

    def _bundle_of(self, intro: Introduction) -> bytes | None:
        """The peer's prekey bundle from the introduction, verified; None (a lookup later) if absent or bad."""
        text = intro.ext.get("bundle")
        if text is None:
            return None  # an agent from before bundles rode in invitations
        try:
            bundle = PrekeyBundle.from_bytes(base64.b64decode(text.encode("ascii"), validate=True))
            bundle.verify(intro.identity, now=self.agent.now())
        except (binascii.Error, ValueError, SessionError) as exc:
            log.warning("the invited contact's prekey bundle is not usable (%s); it will be looked up", why(exc))
            return None
        return bundle.to_bytes()

    async def _invite(self, ident: int, name: str | None) -> str:
        rv = Rendezvous(_MainSession(self.agent))
        ours = await self._introduction()
        opened = await rv.open()
        code = new_code(opened.nameplate, self.agent.settings.provider, secrets.randbelow)
        session = InviteSession(Side.INVITER, code)
        await rv.put(opened.nameplate, opened.token, "pake", session.start())
        deadline = anyio.current_time() + opened.expires_in
        await self._blocking(self.store.update_invitation, ident, state="waiting", only_from=("starting",),
                             code=str(code), expires_at=self.agent.wall_clock() + opened.expires_in)
        state = await self._wait_for_peer(rv, opened.nameplate, opened.token, ident, deadline)
        assert state.pake is not None and state.sealed is not None
        try:
            session.receive_pake(state.pake)
        except InviteError:
            await _close(rv, opened.nameplate, opened.token, "mismatch")
            raise
        intro = await self._conclude(session, rv, opened.nameplate, opened.token, state.sealed)
        await rv.put(opened.nameplate, opened.token, "sealed", session.seal(ours, self.agent.identity))
        added = await self._add(intro, name)
        await _close(rv, opened.nameplate, opened.token, "done")
        return added

    async def _accept(self, ident: int, name: str | None, text: str) -> str:
        code: InviteCode = parse_code(text, self.agent.settings.provider)
        ours = await self._introduction()
        consensus, _ = self.agent._home()
        target = consensus.by_name(code.provider) if consensus is not None else None
        address = None
        if target is not None and target.role == "provider":
            address = next((a for a in target.addresses if self.agent.router.can_reach(a)), None)
        if address is None:
            raise InviteError(f"provider {code.provider!r} (from the code) is not in the network's consensus or not "
                              "reachable; check the part after '@'", reason="bad_code")
        channel = await ProviderClient.anonymous(self.agent.router, address, timeout=60.0)
        try:
            rv = Rendezvous(channel)
            session = InviteSession(Side.ACCEPTOR, code)
            try:
                joined = await rv.join(code.nameplate, session.start())
            except ProtocolError as exc:
                if exc.reason == "no_invitation":
                    raise InviteError(f"{exc}".removeprefix("provider refused: "), reason="no_invitation") from None
                raise
            deadline = anyio.current_time() + joined.expires_in
            try:
                session.receive_pake(joined.pake)
            except InviteError:
                await _close(rv, code.nameplate, joined.token, "mismatch")
                raise
            await rv.put(code.nameplate, joined.token, "sealed", session.seal(ours, self.agent.identity))
            await self._blocking(self.store.update_invitation, ident, state="joined", only_from=("starting",),
                                 expires_at=self.agent.wall_clock() + joined.expires_in)
            state = await self._wait_for_peer(rv, code.nameplate, joined.token, ident, deadline)
            assert state.sealed is not None
            intro = await self._conclude(session, rv, code.nameplate, joined.token, state.sealed)
            added = await self._add(intro, name)
            await _close(rv, code.nameplate, joined.token, "done")
            return added
        finally:
            await channel.aclose()
