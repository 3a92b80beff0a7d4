"""The ``i2p`` transport: anonmail links as I2P streams through a SAM v3 bridge (i2pd's).

One :class:`I2PTransport` holds at most two SAM STREAM sessions on the bridge:

* the **listening session**, created by :meth:`I2PTransport.listen` with the node's own
  destination, whose private key persists in ``<data_dir>/i2p_destination.key`` (mode 0600) so
  the ``i2p://<52 chars>.b32.i2p`` address survives restarts; outgoing streams use it too;
* a **client session** with a transient destination, created on the first
  :meth:`~I2PTransport.connect` of a transport that does not listen.

A session lives as long as its control socket. Creating one makes the router build tunnels and
publish a lease set, which takes 6-12 s even on a running network (up to minutes on the real
network), so sessions are created once and reused. Incoming streams arrive on STREAM ACCEPT
sockets (one pending at a time, re-armed as soon as a peer arrives); outgoing streams resolve
the peer with NAMING LOOKUP on the session's control socket, then STREAM CONNECT on a new socket.

When the router restarts, its sessions are gone. The listening session is watched: a failed
STREAM ACCEPT (unknown session id, closed bridge) or a closed accept socket triggers a probe of
the control socket (``NAMING LOOKUP NAME=ME``), and the same probe runs every
``health_interval`` seconds. A session whose control socket is closed or silent is re-created
with the same saved destination (same address) as soon as the router answers again, with
back-off; meanwhile :meth:`I2PTransport.connect` fails at once with :class:`SessionLostError`.
A lost client session is re-created on the next connect.

``i2plib.aiosam`` does not run on Python >= 3.10, so only ``i2plib.sam`` is used (command
builders, destinations, base64/base32) with anyio sockets. Replies are parsed by the pure
:func:`parse_reply` (i2plib's parser does not handle quoted values such as ``MESSAGE="..."``).

Errors: a bridge that is not there, refuses HELLO or answers an error raises
:class:`SamBridgeError` / :class:`SamError` (both :class:`~anonmail.errors.I2PError`, naming
the bridge address and quoting SAM's message); a session whose tunnels are not built in time
raises :class:`RouterNotReadyError`; a peer that cannot be looked up or reached raises
:class:`~anonmail.errors.ConnectError` with ``reason`` ``lookup_failed``, ``unreachable``,
``timeout`` or ``refused``; a connect while our own session is lost (router restarting) raises
:class:`SessionLostError` (both a ConnectError, ``reason="session_lost"``, and an I2PError).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from i2plib import sam

from anonmail.core.uri import parse_transport_address
from anonmail.errors import ConfigError, ConnectError, I2PError, KeyFileError, TransportAddressError
from anonmail.net.base import Handler, Transport

__all__ = [
    "I2PSettings",
    "I2PTransport",
    "SamBridgeError",
    "SamError",
    "RouterNotReadyError",
    "SessionLostError",
    "SamReply",
    "parse_reply",
    "session_options",
    "connect_error",
    "load_destination",
    "save_destination",
    "b32_address",
    "DESTINATION_FILE",
]

log = logging.getLogger("anonmail.net.i2p")

#: File in the node's data directory holding the I2P private destination (I2P base64).
DESTINATION_FILE = "i2p_destination.key"
#: SAM versions we speak; i2pd answers 3.1 even when 3.3 is offered.
SAM_MIN_VERSION = "3.1"
SAM_MAX_VERSION = "3.3"
#: EdDSA-SHA512-Ed25519 destinations; ECIES-X25519 lease sets (ElGamal as a fallback).
SIGNATURE_TYPE = 7
LEASESET_ENC_TYPES = "4,0"
#: Longest SAM reply line we accept (destinations are ~520 base64 chars, private keys ~900).
MAX_LINE_BYTES = 16 * 1024

DEFAULT_SAM_HOST = "127.0.0.1"
DEFAULT_SAM_PORT = 7656
#: Hops per tunnel on the real network (I2P's own default); the private test network uses 1.
DEFAULT_TUNNEL_LENGTH = 3
DEFAULT_TUNNEL_QUANTITY = 2
DEFAULT_CONTROL_TIMEOUT = 10.0
DEFAULT_SESSION_TIMEOUT = 180.0
DEFAULT_LOOKUP_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 90.0
DEFAULT_HEALTH_INTERVAL = 30.0
#: Longest wait between two attempts to re-create a lost session.
MAX_RECREATE_DELAY = 30.0

_SESSION_RETRY_RESULTS = frozenset({"DUPLICATED_DEST"})


# ------------------------------------------------------------------ errors ---


class SamBridgeError(I2PError):
    """No SAM bridge answers at the configured address, or it refused the HELLO."""

    def __init__(self, message: str, *, bridge: str) -> None:
        super().__init__(message)
        self.bridge = bridge


class SamError(I2PError):
    """The SAM bridge answered a command with an error; ``result`` is SAM's RESULT code."""

    def __init__(self, message: str, *, bridge: str, result: str = "", sam_message: str = "") -> None:
        super().__init__(message)
        self.bridge = bridge
        self.result = result
        self.sam_message = sam_message


class RouterNotReadyError(I2PError):
    """The router did not build the session's tunnels in time (still bootstrapping, no peers)."""


class SessionLostError(ConnectError, I2PError):
    """Our SAM session is gone (router restarted or stopped); it is being re-created."""

    def __init__(self, message: str, *, address: str | None = None) -> None:
        super().__init__(message, address=address, reason="session_lost")


# ---------------------------------------------------------------- settings ---


@dataclass(frozen=True, slots=True)
class I2PSettings:
    """Where the SAM bridge is and how the node's I2P tunnels look; validated on creation.

    Defaults suit the real I2P network (3-hop tunnels, 2 of each). :meth:`for_testnet` gives
    1-hop tunnels for a private network of routers on loopback.
    """

    sam_host: str = DEFAULT_SAM_HOST
    #: Serve the node's listener on an I2P destination; False: connect only (reachable elsewhere).
    serve: bool = True
    sam_port: int = DEFAULT_SAM_PORT
    inbound_length: int = DEFAULT_TUNNEL_LENGTH
    outbound_length: int = DEFAULT_TUNNEL_LENGTH
    inbound_quantity: int = DEFAULT_TUNNEL_QUANTITY
    outbound_quantity: int = DEFAULT_TUNNEL_QUANTITY
    #: Connecting to the bridge and each short SAM exchange (HELLO, ACCEPT, DEST GENERATE).
    control_timeout: float = DEFAULT_CONTROL_TIMEOUT
    #: SESSION CREATE: the reply comes only once tunnels and the lease set exist.
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    #: NAMING LOOKUP of a peer's b32 address (a lease set lookup in the network database).
    lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT
    #: STREAM CONNECT once the peer's destination is known.
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: How often the listening session's control socket is probed (a lost session is re-created).
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    #: Extra I2CP options for SESSION CREATE (e.g. ``{"i2cp.reduceOnIdle": "true"}``); a mapping
    #: or pairs, kept as sorted pairs so the settings stay hashable.
    extra_options: Mapping[str, str] | tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.sam_host or any(c.isspace() for c in self.sam_host):
            raise ConfigError(f"i2p.sam_host must be a host name or IP address, got {self.sam_host!r}")
        if not isinstance(self.sam_port, int) or not 1 <= self.sam_port <= 65535:
            raise ConfigError(f"i2p.sam_port must be 1-65535, got {self.sam_port!r}")
        for name in ("inbound_length", "outbound_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 7:
                raise ConfigError(f"i2p.{name} must be 0-7 hops, got {value!r}")
        for name in ("inbound_quantity", "outbound_quantity"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 16:
                raise ConfigError(f"i2p.{name} must be 1-16 tunnels, got {value!r}")
        for name in ("control_timeout", "session_timeout", "lookup_timeout", "connect_timeout",
                     "health_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ConfigError(f"i2p.{name} must be a positive number of seconds, got {value!r}")
        pairs = tuple(sorted((str(k), str(v)) for k, v in dict(self.extra_options).items()))
        for key, value in pairs:
            if not re.fullmatch(r"[A-Za-z0-9._]+", key) or not re.fullmatch(r"[A-Za-z0-9._,:-]*", value):
                raise ConfigError(f"i2p.extra_options: not a plain I2CP option: {key!r}={value!r}")
        object.__setattr__(self, "extra_options", pairs)

    @classmethod
    def for_testnet(cls, sam_port: int, **overrides: Any) -> I2PSettings:
        """Settings for a private network on loopback: 1-hop tunnels, fast but not anonymous."""
        values: dict[str, Any] = dict(
            sam_host="127.0.0.1", sam_port=sam_port, inbound_length=1, outbound_length=1,
            inbound_quantity=2, outbound_quantity=2, session_timeout=120.0, lookup_timeout=20.0,
            connect_timeout=60.0,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def bridge(self) -> str:
        """The bridge as ``host:port``, for messages."""
        return f"{self.sam_host}:{self.sam_port}"


# ------------------------------------------------------------- sans-IO SAM ---


@dataclass(frozen=True, slots=True)
class SamReply:
    """One SAM reply line: ``topic`` and ``action`` (e.g. ``SESSION STATUS``) and its options."""

    topic: str
    action: str
    options: dict[str, str]

    @property
    def result(self) -> str:
        """SAM's RESULT code, ``""`` when the reply has none."""
        return self.options.get("RESULT", "")

    @property
    def ok(self) -> bool:
        """Whether RESULT=OK."""
        return self.result == "OK"

    @property
    def message(self) -> str:
        """SAM's own error text (MESSAGE=...), ``""`` when it gave none."""
        return self.options.get("MESSAGE", "")


def parse_reply(line: bytes | str) -> SamReply:
    """Parse one SAM reply line (quoted values allowed); raise ValueError if it is not one."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    try:
        words = shlex.split(text, posix=True)
    except ValueError:  # unbalanced quote: fall back to plain words
        words = text.split()
    if len(words) < 2 or not words[0].isupper() or not words[1].isupper():
        raise ValueError(f"not a SAM reply: {text[:80]!r}")
    options: dict[str, str] = {}
    for word in words[2:]:
        key, sep, value = word.partition("=")
        options[key] = value if sep else "true"
    return SamReply(words[0], words[1], options)


def session_options(settings: I2PSettings) -> str:
    """The I2CP options of SESSION CREATE for these settings."""
    options = {
        "SIGNATURE_TYPE": str(SIGNATURE_TYPE),
        "i2cp.leaseSetEncType": LEASESET_ENC_TYPES,
        "inbound.length": str(settings.inbound_length),
        "outbound.length": str(settings.outbound_length),
        "inbound.quantity": str(settings.inbound_quantity),
        "outbound.quantity": str(settings.outbound_quantity),
    }
    options.update(dict(settings.extra_options))
    return " ".join(f"{key}={value}" for key, value in options.items())


def describe(reply: SamReply) -> str:
    """SAM's result and message as a short phrase for error messages."""
    text = reply.result or f"{reply.topic} {reply.action}"
    return f"{text}: {reply.message}" if reply.message else text


_CONNECT_REASONS = {
    "CANT_REACH_PEER": ("unreachable", "the peer's destination cannot be reached over I2P"),
    "PEER_NOT_FOUND": ("unreachable", "the peer's destination cannot be reached over I2P"),
    "TIMEOUT": ("timeout", "the I2P stream was not established in time"),
    "INVALID_KEY": ("refused", "the router rejected the peer's destination"),
    "INVALID_ID": ("refused", "the router no longer knows our SAM session"),
    "I2P_ERROR": ("unreachable", "the router could not open the stream"),
}


def connect_error(reply: SamReply, address: str, bridge: str) -> ConnectError:
    """Translate a failed STREAM CONNECT reply into a ConnectError naming the peer and SAM's text."""
    reason, what = _CONNECT_REASONS.get(reply.result, ("unreachable", "the stream could not be opened"))
    return ConnectError(
        f"cannot connect to {address}: {what} (SAM bridge {bridge} said {describe(reply)})",
        address=address, reason=reason,
    )


def b32_address(private_or_public_b64: str, *, private: bool) -> str:
    """The ``<52 chars>.b32.i2p`` host of a destination given in I2P base64."""
    if private:
        dest = sam.Destination(private_or_public_b64, has_private_key=True)
    else:
        dest = sam.Destination(private_or_public_b64)
    return f"{dest.base32}.b32.i2p"


def _check_private_destination(text: str, path: Path) -> str:
    text = text.strip()
    try:
        raw = sam.i2p_b64decode(text)
        if len(raw) < 387 + 3:
            raise ValueError("too short")
        cert_len = int.from_bytes(raw[385:387], "big")
        if len(raw) < 387 + cert_len + 32:
            raise ValueError("truncated")
        b32_address(text, private=True)
    except Exception as exc:  # binascii.Error, ValueError, struct.error
        raise KeyFileError(f"{path} does not hold an I2P private destination ({exc}); "
                           "restore it from a backup or delete it to get a new I2P address") from None
    return text


def load_destination(data_dir: Path) -> str | None:
    """Read the node's private destination from ``data_dir`` (None if there is none yet).

    Raises KeyFileError when the file is unreadable, corrupt or accessible by other users.
    """
    path = Path(data_dir) / DESTINATION_FILE
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                           f"run: chmod 600 {path}")
    try:
        text = path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read {path}: {exc}") from exc
    return _check_private_destination(text, path)


def save_destination(data_dir: Path, private_b64: str) -> Path:
    """Write the private destination atomically with mode 0600; return the file's path."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DESTINATION_FILE
    _check_private_destination(private_b64, path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(private_b64.strip() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------- SAM sockets ---


class _SamSocket:
    """One TCP connection to the SAM bridge after a successful HELLO."""

    def __init__(self, stream: anyio.abc.SocketStream, bridge: str) -> None:
        self.stream = stream
        self.bridge = bridge
        self.reader = BufferedByteReceiveStream(stream)

    @classmethod
    async def open(cls, settings: I2PSettings) -> _SamSocket:
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

    def into_stream(self) -> _SamDataStream:
        """The socket as a byte stream, starting with bytes already read past the last line."""
        return _SamDataStream(self.stream, self.reader.buffer)

    async def aclose(self) -> None:
        """Close the socket (ends a session when this was its control socket)."""
        await self.stream.aclose()


class _SamDataStream(anyio.abc.ByteStream):
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


class _Session:
    """A SAM STREAM session: its control socket, id, destination and a lookup cache."""

    def __init__(self, control: _SamSocket, session_id: str, private_b64: str, settings: I2PSettings) -> None:
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
    async def create(cls, settings: I2PSettings, private_b64: str | None) -> _Session:
        """Create a session (TRANSIENT destination when ``private_b64`` is None)."""
        bridge = settings.bridge
        session_id = f"anonmail-{secrets.token_hex(6)}"
        destination = private_b64 or sam.TRANSIENT_DESTINATION
        command = sam.session_create("STREAM", session_id, destination, session_options(settings))
        with anyio.fail_after(settings.session_timeout):
            delay = 0.5
            while True:
                control = await _SamSocket.open(settings)
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


# --------------------------------------------------------------- transport ---


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
        self._listening: _Session | None = None
        self._client: _Session | None = None
        self._sessions: list[_Session] = []
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
        conn = await _SamSocket.open(self.settings)
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

    async def _create_session(self, private_b64: str | None) -> _Session:
        try:
            session = await _Session.create(self.settings, private_b64)
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

    async def _session_for_connect(self, address: str | None) -> _Session:
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

    async def _discard(self, session: _Session) -> None:
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
        armed: _SamSocket | None = await self._arm_accept(session)  # a first failure is raised
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

    async def _watch(self, session: _Session) -> None:
        """Probe the session every ``health_interval`` seconds until it is lost."""
        while True:
            await anyio.sleep(self.settings.health_interval)
            if not await session.probe():
                return

    async def _recreate(self, old: _Session) -> _Session:
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

    async def _accept_loop(self, session: _Session, handler: Handler, armed: _SamSocket | None) -> None:
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

    async def _arm_accept(self, session: _Session) -> _SamSocket:
        conn = await _SamSocket.open(self.settings)
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
        parsed = parse_transport_address(address)
        if parsed.scheme != "i2p":
            raise TransportAddressError(f"the i2p transport cannot reach {address}", address=address)
        address = str(parsed)
        session = await self._session_for_connect(address)
        destination = await session.lookup(parsed.host, address)
        try:
            conn = await _SamSocket.open(self.settings)
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
        return conn.into_stream()
