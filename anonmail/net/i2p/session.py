"""SAM sockets and sessions: a HELLO'd connection to the bridge, a data stream, a STREAM session.

A session lives as long as its control socket; lookups (NAMING LOOKUP) and the health probe
run on that socket, one at a time.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from i2plib import sam

from anonmail.errors import ConnectError, RouterNotReadyError, SamBridgeError, SamError, SessionLostError
from anonmail.net.i2p.sam import (
    MAX_LINE_BYTES,
    SAM_MAX_VERSION,
    SAM_MIN_VERSION,
    SamReply,
    b32_address,
    describe,
    parse_reply,
    session_options,
)
from anonmail.net.i2p.settings import I2PSettings

__all__ = ["SamSocket", "SamDataStream", "SamSession"]

_SESSION_RETRY_RESULTS = frozenset({"DUPLICATED_DEST"})


class SamSocket:
    """One TCP connection to the SAM bridge after a successful HELLO."""

    def __init__(self, stream: anyio.abc.SocketStream, bridge: str) -> None:
        self.stream = stream
        self.bridge = bridge
        self.reader = BufferedByteReceiveStream(stream)

    @classmethod
    async def open(cls, settings: I2PSettings) -> SamSocket:
        """Connect to the bridge and say HELLO; SamBridgeError if nobody (sane) answers."""
        bridge = settings.bridge
        try:
            with anyio.fail_after(settings.control_timeout):
                stream = await anyio.connect_tcp(settings.sam_host, settings.sam_port)
        except TimeoutError:
            raise SamBridgeError(f"no answer from the SAM bridge at {bridge} within "
                                 f"{settings.control_timeout:g} s; is the I2P router running?",
                                 bridge=bridge) from None
        except OSError as exc:
            raise SamBridgeError(
                f"no SAM bridge at {bridge} ({exc.strerror or exc}); start i2pd with SAM enabled "
                f"([sam] enabled = true, port = {settings.sam_port}) or set i2p.sam_host/sam_port",
                bridge=bridge,
            ) from exc
        conn = cls(stream, bridge)
        try:
            with anyio.fail_after(settings.control_timeout):
                reply = await conn.command(sam.hello(SAM_MIN_VERSION, SAM_MAX_VERSION), "HELLO")
        except TimeoutError:
            await conn.aclose()
            raise SamBridgeError(f"the service at {bridge} did not answer the SAM HELLO within "
                                 f"{settings.control_timeout:g} s; is it a SAM bridge?",
                                 bridge=bridge) from None
        except BaseException:
            await conn.aclose()
            raise
        if reply.topic != "HELLO" or not reply.ok:
            await conn.aclose()
            raise SamBridgeError(f"the SAM bridge at {bridge} refused HELLO ({describe(reply)})", bridge=bridge)
        return conn

    async def read_line(self, what: str) -> bytes:
        """The next reply line; SamBridgeError if the bridge closes or sends garbage."""
        try:
            return await self.reader.receive_until(b"\n", MAX_LINE_BYTES)
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError) as exc:
            raise SamBridgeError(f"the SAM bridge at {self.bridge} closed the connection during {what}",
                                 bridge=self.bridge) from exc
        except anyio.DelimiterNotFound as exc:
            raise SamBridgeError(f"the SAM bridge at {self.bridge} sent an over-long line during {what}",
                                 bridge=self.bridge) from exc

    async def command_send(self, data: bytes, what: str) -> None:
        """Send one command line."""
        try:
            await self.stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise SamBridgeError(f"the SAM bridge at {self.bridge} closed the connection during {what}",
                                 bridge=self.bridge) from exc

    async def command(self, data: bytes, what: str) -> SamReply:
        """Send one command and parse its one-line reply."""
        await self.command_send(data, what)
        line = await self.read_line(what)
        try:
            return parse_reply(line)
        except ValueError as exc:
            raise SamBridgeError(f"the service at {self.bridge} answered {what} with something that is not "
                                 f"SAM; is it a SAM bridge?", bridge=self.bridge) from exc

    def into_stream(self) -> SamDataStream:
        """The socket as a byte stream, starting with bytes already read past the last line."""
        return SamDataStream(self.stream, self.reader.buffer)

    async def aclose(self) -> None:
        """Close the socket (ends a session when this was its control socket)."""
        await self.stream.aclose()


class SamDataStream(anyio.abc.ByteStream):
    """A SAM data socket after STREAM CONNECT/ACCEPT: raw bytes of the I2P stream."""

    def __init__(self, stream: anyio.abc.SocketStream, leftover: bytes) -> None:
        self._stream = stream
        self._leftover = bytes(leftover)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._leftover:
            data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
            return data
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        # SAM has no half-close: i2pd treats the socket's end as the end of the whole stream.
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Any]:
        return self._stream.extra_attributes


class SamSession:
    """A SAM STREAM session: its control socket, id, destination and a lookup cache."""

    def __init__(self, control: SamSocket, session_id: str, private_b64: str, settings: I2PSettings) -> None:
        self.control = control
        self.id = session_id
        self.private_b64 = private_b64
        self.settings = settings
        self.b32 = b32_address(private_b64, private=True)
        self._lookup_lock = anyio.Lock()
        self._cache: dict[str, str] = {}
        #: Set once the session is known to be gone; ``lost_reason`` says why.
        self.lost = anyio.Event()
        self.lost_reason = ""

    def mark_lost(self, reason: str) -> None:
        """Record that the router no longer has this session (first reason wins)."""
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()

    async def probe(self) -> bool:
        """Check the control socket with ``NAMING LOOKUP NAME=ME``; False (and lost) if it is dead.

        A lookup already using the socket makes the probe inconclusive (True): it reports a dead
        socket itself.
        """
        if self.lost.is_set():
            return False
        timeout = self.settings.control_timeout
        with anyio.move_on_after(timeout):
            async with self._lookup_lock:
                try:
                    with anyio.fail_after(timeout):
                        await self._lookup_once("ME")
                except TimeoutError:
                    self.mark_lost(f"no answer on its control socket within {timeout:g} s")
                except SamBridgeError:
                    self.mark_lost("the bridge closed its control socket")
        return not self.lost.is_set()

    def lost_error(self, address: str | None) -> SessionLostError:
        """The error for a connect through this lost session."""
        target = f" to {address}" if address else ""
        return SessionLostError(
            f"cannot connect{target}: our I2P session on the SAM bridge at {self.settings.bridge} is "
            f"gone ({self.lost_reason}); the router restarted or is down, the session is re-created when "
            "it answers again", address=address)

    @classmethod
    async def create(cls, settings: I2PSettings, private_b64: str | None) -> SamSession:
        """Create a session (TRANSIENT destination when ``private_b64`` is None)."""
        bridge = settings.bridge
        session_id = f"anonmail-{secrets.token_hex(6)}"
        destination = private_b64 or sam.TRANSIENT_DESTINATION
        command = sam.session_create("STREAM", session_id, destination, session_options(settings))
        with anyio.fail_after(settings.session_timeout):
            delay = 0.5
            while True:
                control = await SamSocket.open(settings)
                try:
                    reply = await control.command(command, "SESSION CREATE")
                except BaseException as exc:
                    await control.aclose()
                    if isinstance(exc, SamBridgeError):
                        raise RouterNotReadyError(
                            f"the SAM bridge at {bridge} dropped SESSION CREATE; is the router still "
                            "starting?", address=None) from exc
                    raise
                if reply.ok:
                    break
                await control.aclose()
                if reply.result in _SESSION_RETRY_RESULTS:  # our previous session is still closing
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                raise SamError(f"the SAM bridge at {bridge} refused SESSION CREATE ({describe(reply)})",
                               bridge=bridge, result=reply.result, sam_message=reply.message)
        private = private_b64 or reply.options.get("DESTINATION", "")
        if not private:
            await control.aclose()
            raise SamError(f"the SAM bridge at {bridge} created a session but sent no destination",
                           bridge=bridge)
        return cls(control, session_id, private, settings)

    async def lookup(self, host: str, address: str) -> str:
        """The base64 destination of a ``.b32.i2p`` host, via NAMING LOOKUP on the control socket.

        A lease set that is not found is asked for again (1, 2, 4, 5, 5... s apart) until
        ``lookup_timeout``: a peer that just started may not have reached the floodfills yet.
        """
        if host in self._cache:
            return self._cache[host]
        bridge = self.settings.bridge
        last: SamReply | None = None
        delay = 1.0
        async with self._lookup_lock:
            if host in self._cache:
                return self._cache[host]
            try:
                with anyio.fail_after(self.settings.lookup_timeout):
                    while True:
                        last = await self._lookup_once(host)
                        if last.ok and last.options.get("VALUE"):
                            break
                        await anyio.sleep(delay)
                        delay = min(delay * 2, 5.0)
            except TimeoutError:
                if last is None:
                    raise ConnectError(
                        f"cannot connect to {address}: NAMING LOOKUP got no answer from the SAM bridge at "
                        f"{bridge} within {self.settings.lookup_timeout:g} s", address=address,
                        reason="timeout") from None
                raise ConnectError(
                    f"cannot connect to {address}: lookup failed, I2P has no lease set for it after "
                    f"{self.settings.lookup_timeout:g} s (SAM bridge {bridge} said {describe(last)}); the peer "
                    "is offline or not yet published", address=address, reason="lookup_failed") from None
            except SamBridgeError as exc:
                self.mark_lost("the bridge closed its control socket")
                raise self.lost_error(address) from exc
        value = last.options["VALUE"]
        self._cache[host] = value
        return value

    async def _lookup_once(self, host: str) -> SamReply:
        """One NAMING LOOKUP; replies to earlier, abandoned lookups (other NAMEs) are skipped."""
        await self.control.command_send(sam.naming_lookup(host), "NAMING LOOKUP")
        while True:
            line = await self.control.read_line("NAMING LOOKUP")
            try:
                reply = parse_reply(line)
            except ValueError:
                continue
            if reply.topic == "NAMING" and reply.options.get("NAME", host) == host:
                return reply

    def forget(self, host: str) -> None:
        """Drop a cached lookup (the peer may have new leases)."""
        self._cache.pop(host, None)

    async def aclose(self) -> None:
        """End the session by closing its control socket."""
        await self.control.aclose()
