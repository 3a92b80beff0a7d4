"""I2PTransport: anonmail links as I2P streams through a SAM bridge; the lifecycle is in :mod:`anonmail.net.i2p`."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc
from i2plib import sam

from anonmail.core.uri import parse_transport_address
from anonmail.errors import ConnectError, I2PError, RouterNotReadyError, SamBridgeError, SamError, \
    TransportAddressError
from anonmail.net.base import Handler, Transport
from anonmail.net.i2p.destination import load_destination, save_destination
from anonmail.net.i2p.sam import SIGNATURE_TYPE, b32_address, connect_error, describe
from anonmail.net.i2p.session import SamSession, SamSocket
from anonmail.net.i2p.settings import I2PSettings
from anonmail.net.link import LinkStream, as_link

__all__ = ["I2PTransport"]

log = logging.getLogger("anonmail.net.i2p")

#: Longest wait between two attempts to re-create a lost session.
MAX_RECREATE_DELAY = 30.0
#: Seconds a transient session outlives its stream before it is closed. i2pd (2.56 here) has
#: crashed with SIGSEGV when a destination was torn down right after its stream's close, while
#: the streaming close or a lease-set publish was still in flight; a short linger avoids that.
TRANSIENT_LINGER = 15.0


class _SessionLink(LinkStream):
    """A stream that owns the transient session it was opened from: closing it ends the session."""

    def __init__(self, stream: anyio.abc.ByteStream, address: str, end_session: Callable[[], None]) -> None:
        super().__init__(stream, address)
        self._end_session: Callable[[], None] | None = end_session

    async def aclose(self) -> None:
        """Close the stream, then schedule the session's end (once, also when the close is cancelled)."""
        try:
            await super().aclose()
        finally:
            end, self._end_session = self._end_session, None
            if end is not None:
                end()


class I2PTransport(Transport):
    """I2P streams through a SAM v3 bridge; the listening destination persists in ``data_dir``.

    ``data_dir`` may be None for a transport that only connects (transient destination).
    """

    schemes = frozenset({"i2p"})

    def __init__(self, data_dir: str | os.PathLike[str] | None = None,
                 settings: I2PSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or I2PSettings()
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._listening: SamSession | None = None
        self._client: SamSession | None = None
        self._sessions: list[SamSession] = []
        self._session_lock = anyio.Lock()

    @property
    def address(self) -> str | None:
        """The ``i2p://`` address this transport listens on, once listening."""
        return f"i2p://{self._listening.b32}" if self._listening else None

    async def _stop(self) -> None:
        for session in list(self._sessions):
            try:
                await session.aclose()
            except Exception:  # closing a dead socket
                pass
        self._sessions.clear()

    async def create_destination(self) -> str:
        """Create (or load) the node's persistent destination now; its ``i2p://`` address.

        Lets an operator (or a testnet) know the address before the node first serves.
        """
        return f"i2p://{b32_address(await self._own_destination(), private=True)}"

    async def _own_destination(self) -> str:
        """The node's private destination from ``data_dir``; generated (and saved) if missing."""
        if self.data_dir is None:
            raise I2PError("I2PTransport needs a data_dir to listen (its I2P key is kept there)")
        private = load_destination(self.data_dir)
        if private is not None:
            return private
        conn = await SamSocket.open(self.settings)
        try:
            with anyio.fail_after(self.settings.control_timeout):
                reply = await conn.command(sam.dest_generate(SIGNATURE_TYPE), "DEST GENERATE")
        except TimeoutError:
            raise SamBridgeError(f"the SAM bridge at {self.settings.bridge} did not answer DEST GENERATE",
                                 bridge=self.settings.bridge) from None
        finally:
            await conn.aclose()
        private = reply.options.get("PRIV", "")
        if reply.topic != "DEST" or not private:
            raise SamError(f"the SAM bridge at {self.settings.bridge} refused DEST GENERATE ({describe(reply)})",
                           bridge=self.settings.bridge, result=reply.result, sam_message=reply.message)
        path = save_destination(self.data_dir, private)
        log.info("new I2P destination saved in %s", path)
        return private

    async def _create_session(self, private_b64: str | None) -> SamSession:
        try:
            session = await SamSession.create(self.settings, private_b64)
        except TimeoutError:
            raise RouterNotReadyError(
                f"router not ready: the I2P router behind the SAM bridge at {self.settings.bridge} did not "
                f"build tunnels for a session within {self.settings.session_timeout:g} s (still "
                "bootstrapping or no peers; on the real network the first start can take minutes)"
            ) from None
        self._sessions.append(session)
        return session

    async def open_session(self, *, listening: bool = True) -> str:
        """Create a session now rather than on first use (it takes seconds); return its address.

        ``listening=True`` makes the session :meth:`listen` uses (the node's own destination);
        ``False`` the one :meth:`connect` uses, which is the listening one if there is one.
        """
        if not listening:
            return f"i2p://{(await self._session_for_connect(None)).b32}"
        async with self._session_lock:
            if self._listening is None:
                self.task_group  # noqa: B018 - raises outside 'async with'
                self._listening = await self._create_session(await self._own_destination())
        return f"i2p://{self._listening.b32}"

    @property
    def listening_ready(self) -> bool:
        """Whether the listening session exists and is not known to be lost."""
        return self._listening is not None and not self._listening.lost.is_set()

    async def _session_for_connect(self, address: str | None) -> SamSession:
        listening = self._listening
        if listening is not None:
            if listening.lost.is_set():
                raise listening.lost_error(address)
            return listening
        async with self._session_lock:
            if self._listening is not None:
                return await self._session_for_connect(address)
            if self._client is not None and self._client.lost.is_set():
                log.warning("I2P client session on the SAM bridge at %s was lost (%s); creating a new one",
                            self.settings.bridge, self._client.lost_reason)
                await self._discard(self._client)
                self._client = None
            if self._client is None:
                self._client = await self._create_session(None)
            return self._client

    async def _discard(self, session: SamSession) -> None:
        """Close a session's control socket and forget it."""
        try:
            await session.aclose()
        except Exception:  # closing a dead socket
            pass
        if session in self._sessions:
            self._sessions.remove(session)

    async def listen(self, handler: Handler) -> list[str]:
        """Create the session with the node's persistent destination and accept streams on it."""
        address = await self.open_session()
        await self.task_group.start(self._keep_listening, handler)
        return [address]

    async def _keep_listening(self, handler: Handler,
                              *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Accept on the listening session and watch it; re-create it whenever it is lost."""
        session = self._listening
        assert session is not None
        armed: SamSocket | None = await self._arm_accept(session)  # a first failure is raised
        task_status.started()
        while True:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._accept_loop, session, handler, armed)
                armed = None
                tg.start_soon(self._watch, session)
                await session.lost.wait()
                tg.cancel_scope.cancel()
            log.warning("I2P session of i2p://%s on the SAM bridge at %s lost (%s); re-creating it with "
                        "the same destination", session.b32, self.settings.bridge, session.lost_reason)
            session = await self._recreate(session)

    async def _watch(self, session: SamSession) -> None:
        """Probe the session every ``health_interval`` seconds until it is lost."""
        while True:
            await anyio.sleep(self.settings.health_interval)
            if not await session.probe():
                return

    async def _recreate(self, old: SamSession) -> SamSession:
        """A new listening session with ``old``'s destination, once the router answers (back-off)."""
        await self._discard(old)
        delay = 1.0
        cap = min(MAX_RECREATE_DELAY, max(1.0, self.settings.health_interval))
        attempts = 0
        while True:
            attempts += 1
            try:
                session = await self._create_session(old.private_b64)
            except I2PError as exc:
                log.warning("I2P: cannot re-create the session of i2p://%s yet (attempt %d: %s); retrying in "
                            "%.0f s", old.b32, attempts, exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, cap)
                continue
            self._listening = session
            log.warning("I2P session of i2p://%s re-created on the SAM bridge at %s after %d attempt(s); "
                        "accepting again", session.b32, self.settings.bridge, attempts)
            return session

    async def _accept_loop(self, session: SamSession, handler: Handler, armed: SamSocket | None) -> None:
        """Keep one STREAM ACCEPT pending (``armed`` is the first); hand each stream to ``handler``.

        A failure probes the session: the loop returns when it is lost (its keeper re-creates
        it), else retries with back-off.
        """
        failures = 0
        while True:
            try:
                if armed is not None:
                    conn, armed = armed, None
                else:
                    conn = await self._arm_accept(session)
            except I2PError as exc:
                if isinstance(exc, SamError) and exc.result == "INVALID_ID":
                    session.mark_lost("the router no longer knows its id")
                if not await session.probe():
                    return
                failures += 1
                delay = min(2.0 ** failures, 30.0)
                log.warning("I2P accept failed (%s); retrying in %.0f s", exc, delay)
                await anyio.sleep(delay)
                continue
            failures = 0
            try:
                await conn.read_line("STREAM ACCEPT (waiting for a peer)")
            except SamBridgeError as exc:
                await conn.aclose()
                if not await session.probe():
                    return
                log.warning("I2P accept socket closed (%s)", exc)
                await anyio.sleep(1.0)
                continue
            except BaseException:
                await conn.aclose()
                raise
            # The line names the peer's destination; anonmail adds no identity, so it is dropped.
            self._spawn_handler(handler, conn.into_stream())

    async def _arm_accept(self, session: SamSession) -> SamSocket:
        conn = await SamSocket.open(self.settings)
        try:
            with anyio.fail_after(self.settings.control_timeout):
                reply = await conn.command(sam.stream_accept(session.id), "STREAM ACCEPT")
        except TimeoutError:
            await conn.aclose()
            raise SamBridgeError(f"the SAM bridge at {self.settings.bridge} did not answer STREAM ACCEPT",
                                 bridge=self.settings.bridge) from None
        except BaseException:
            await conn.aclose()
            raise
        if not reply.ok:
            await conn.aclose()
            raise SamError(f"the SAM bridge at {self.settings.bridge} refused STREAM ACCEPT ({describe(reply)})",
                           bridge=self.settings.bridge, result=reply.result, sam_message=reply.message)
        return conn

    async def connect(self, address: str) -> anyio.abc.ByteStream:
        """Look the peer up and open an I2P stream to it; ConnectError says which step failed."""
        parsed = self._parse(address)
        return await self._connect_on(await self._session_for_connect(str(parsed)), parsed)

    async def connect_isolated(self, address: str) -> anyio.abc.ByteStream:
        """Like :meth:`connect`, from a fresh transient destination that lives as long as the stream.

        An I2P peer sees the destination a stream comes from; with the node's one session, every
        provider and authority it talks to would see the same pseudonym. Creating the session
        builds tunnels (seconds), so this is for rare requests such as key lookups.
        """
        parsed = self._parse(address)
        session = await self._create_session(None)
        try:
            stream = await self._connect_on(session, parsed)
        except BaseException:
            self._discard_later(session)
            raise
        return _SessionLink(stream.wrapped, str(parsed), functools.partial(self._discard_later, session))

    def _discard_later(self, session: SamSession) -> None:
        """End a transient session after TRANSIENT_LINGER seconds, or when the transport closes."""

        async def linger() -> None:
            try:
                await anyio.sleep(TRANSIENT_LINGER)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._discard(session)

        if self._tg is None:
            return  # the transport has closed, and with it every session (_stop)
        self._tg.start_soon(linger)

    @staticmethod
    def _parse(address: str):
        parsed = parse_transport_address(address)
        if parsed.scheme != "i2p":
            raise TransportAddressError(f"the i2p transport cannot reach {address}", address=address)
        return parsed

    async def _connect_on(self, session: SamSession, parsed) -> LinkStream:
        """Open an I2P stream from ``session`` to the parsed address."""
        address = str(parsed)
        destination = await session.lookup(parsed.host, address)
        try:
            conn = await SamSocket.open(self.settings)
        except SamBridgeError as exc:
            if not await session.probe():  # the router is down: notice now, not at the next check
                raise session.lost_error(address) from exc
            raise
        try:
            with anyio.fail_after(self.settings.connect_timeout):
                reply = await conn.command(sam.stream_connect(session.id, destination), "STREAM CONNECT")
        except TimeoutError:
            await conn.aclose()
            raise ConnectError(f"cannot connect to {address}: peer unreachable, no I2P stream within "
                               f"{self.settings.connect_timeout:g} s", address=address, reason="timeout") from None
        except SamBridgeError as exc:
            await conn.aclose()
            raise ConnectError(f"cannot connect to {address}: {exc}", address=address, reason="refused") from exc
        except BaseException:
            await conn.aclose()
            raise
        if not reply.ok:
            await conn.aclose()
            session.forget(parsed.host)
            if reply.result == "INVALID_ID":
                session.mark_lost("the router no longer knows its id")
            raise connect_error(reply, address, self.settings.bridge)
        return as_link(conn.into_stream(), address)
