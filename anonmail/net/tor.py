"""The ``onion`` transport: links between nodes as Tor v3 onion services (DESIGN.md §3).

A node gets its tor in one of two ways, chosen by :class:`TorSettings`:

* **attach** (``launch=False``): talk to a tor that is already running (a system tor set up
  as in ``torrc.example``) through its control port or control socket, with cookie or
  password authentication;
* **launch** (``launch=True``): start a private tor process for this node, with its own data
  directory under the node's, a control port on a free 127.0.0.1 port and cookie auth. The
  process is started here with :mod:`subprocess` (stem is used only as the controller) and
  stopped, by PID, when the transport closes or the interpreter exits.

::

    settings = TorSettings(control_port=9051)             # or TorSettings(launch=True)
    async with OnionTransport(settings, data_dir=node_dir) as transport:
        (address,) = await transport.listen(handler)      # onion://<56 chars>.onion:7000
        stream = await transport.connect(peer_address)    # through tor's SOCKS port

``listen`` serves a 127.0.0.1 listener and publishes it with ADD_ONION under a key kept in
``data_dir/`` :data:`ONION_KEY_FILE` (mode 0600), so the address survives restarts; it returns
once tor reports the descriptor uploaded (an HS_DESC event, no fixed sleep). ``connect`` goes
through tor's SOCKS5 port with the hostname unresolved, retrying the failures that heal
(descriptor not yet found, introduction failed…) and raising
:class:`~anonmail.errors.ConnectError` whose message and ``reason`` say what went wrong last.

A watchdog in the transport's task group checks on tor every ``health_interval`` seconds (at
once when stem reports the control connection closed). When tor went away (restarted,
crashed; in launch mode: our tor process exited) it reconnects with back-off (starting our tor
again in launch mode), waits for bootstrap and publishes the same address again with the same
key and listener; meanwhile ``connect`` fails at once with reason ``tor_unreachable``.

Errors: :class:`TorAuthError` (control port refused authentication; names the port and the
method), :class:`TorBootstrapError` (tor did not reach 100 %), :class:`~anonmail.errors.TorError`
(anything else tor or stem reports), :class:`~anonmail.errors.ConnectError`,
:class:`~anonmail.errors.ConfigError` (invalid settings). stem is synchronous: every call to it
runs in a worker thread (``anyio.to_thread``) under a timeout.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from anonmail.core.keys import read_key_file, write_key_file
from anonmail.core.uri import parse_transport_address
from anonmail.errors import ConfigError, ConnectError, KeyFileError, TorError, TransportAddressError
from anonmail.net.base import Handler, Transport

__all__ = [
    "DEFAULT_VIRTUAL_PORT",
    "ONION_KEY_FILE",
    "create_onion_key",
    "SocksReply",
    "describe_socks_reply",
    "socks_reply_code",
    "TorSettings",
    "TorAuthError",
    "TorBootstrapError",
    "OnionTransport",
    "ControlEndpoint",
    "open_controller",
    "wait_for_bootstrap",
    "bootstrap_status",
    "start_tor_process",
    "stop_tor_process",
]

log = logging.getLogger("anonmail.net.tor")

#: The onion-service port peers connect to unless the settings say otherwise.
DEFAULT_VIRTUAL_PORT = 7000
#: File in the node's data directory holding the onion service key (``ED25519-V3:<base64>``).
ONION_KEY_FILE = "onion_service_ed25519.key"
#: Defaults, in seconds.
DEFAULT_BOOTSTRAP_TIMEOUT = 120.0
DEFAULT_PUBLISH_TIMEOUT = 90.0
DEFAULT_CONNECT_TIMEOUT = 60.0
DEFAULT_ATTEMPT_TIMEOUT = 30.0
DEFAULT_CONNECT_ATTEMPTS = 6
DEFAULT_RETRY_DELAY = 0.5
DEFAULT_CONTROL_TIMEOUT = 15.0
DEFAULT_HEALTH_INTERVAL = 30.0
#: Longest pause between two attempts to get tor back after it went away.
MAX_RECOVERY_DELAY = 30.0

T = TypeVar("T")


class TorAuthError(TorError):
    """The control port (or socket) refused to authenticate us."""


class TorBootstrapError(TorError):
    """tor did not finish bootstrapping (PROGRESS=100) in time, or exited while trying."""


# --- SOCKS5 replies ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SocksReply:
    """What a SOCKS5 reply code from tor means, and whether trying again can help."""

    code: int
    reason: str
    text: str
    retryable: bool


_SOCKS_REPLIES = {
    0x01: ("socks_failure", "general SOCKS server failure", True),
    0x02: ("not_allowed", "connection not allowed by tor's rules", False),
    0x03: ("network_unreachable", "network unreachable", True),
    0x04: ("host_unreachable", "host unreachable: tor could not build a circuit to it", True),
    0x05: ("refused", "connection refused: nothing serves that port of the onion service", False),
    0x06: ("ttl_expired", "tor timed out (TTL expired)", True),
    0x07: ("command_not_supported", "SOCKS command not supported", False),
    0x08: ("address_type_not_supported", "SOCKS address type not supported", False),
    # tor's ExtendedErrors (SocksPort flag), onion services only
    0xF0: ("descriptor_not_found",
           "onion service descriptor not found: the service is unknown, offline or not published yet", True),
    0xF1: ("descriptor_invalid", "onion service descriptor is invalid", False),
    0xF2: ("introduction_failed", "introduction to the onion service failed", True),
    0xF3: ("rendezvous_failed", "rendezvous with the onion service failed", True),
    0xF4: ("client_auth_missing", "the onion service requires client authorization", False),
    0xF5: ("client_auth_wrong", "the onion service rejected our client authorization", False),
    0xF6: ("bad_onion_address", "tor considers the onion address invalid", False),
    0xF7: ("introduction_timeout", "introduction to the onion service timed out", True),
}

_REPLY_CODE_IN_TEXT = re.compile(r"reply code:?\s*0x([0-9a-f]{1,2})", re.IGNORECASE)


def describe_socks_reply(code: int) -> SocksReply:
    """Map a SOCKS5 reply code (standard or tor's 0xF0–0xF7) to a stable reason and text."""
    reason, text, retryable = _SOCKS_REPLIES.get(code, ("socks_failure", f"unknown SOCKS reply 0x{code:02X}", True))
    return SocksReply(code, reason, text, retryable)


def socks_reply_code(exc: BaseException) -> int | None:
    """The SOCKS reply code carried by a python-socks ProxyError, if any.

    python-socks knows only codes 0x00–0x08; tor's extended codes reach us as the message
    ``Invalid reply code: 0XF0``, which is parsed here.
    """
    code = getattr(exc, "error_code", None)
    if isinstance(code, int):
        return int(code)
    for text in (str(exc), str(exc.__cause__ or "")):
        match = _REPLY_CODE_IN_TEXT.search(text)
        if match:
            return int(match.group(1), 16)
    return None


# --- Settings ------------------------------------------------------------------------------


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"tor.{name} must be a positive number of seconds, got {value!r}")


def _port_or_none(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"tor.{name} must be a port number 1..65535, got {value!r}")


@dataclass(frozen=True)
class TorSettings:
    """How a node reaches tor; embedded in a node config and validated at construction.

    Attach mode (``launch=False``) uses ``control_socket`` if set, else ``control_port`` on
    127.0.0.1; ``socks_port=None`` asks tor which SOCKS port it listens on. Launch mode starts
    ``tor_binary`` with ``torrc_lines`` added (a private test network's lines, say).
    """

    launch: bool = False
    #: Publish an onion service for the node's listener; False: connect only (reachable elsewhere).
    serve: bool = True
    control_port: int | None = 9051
    control_socket: str | None = None
    password: str | None = field(default=None, repr=False)
    socks_port: int | None = None
    tor_binary: str = "tor"
    torrc_lines: tuple[str, ...] = ()
    virtual_port: int = DEFAULT_VIRTUAL_PORT
    bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT
    connect_attempts: int = DEFAULT_CONNECT_ATTEMPTS
    retry_delay: float = DEFAULT_RETRY_DELAY
    control_timeout: float = DEFAULT_CONTROL_TIMEOUT
    health_interval: float = DEFAULT_HEALTH_INTERVAL

    def __post_init__(self) -> None:
        _port_or_none("control_port", self.control_port)
        _port_or_none("socks_port", self.socks_port)
        _port_or_none("virtual_port", self.virtual_port)
        if self.virtual_port is None:
            raise ConfigError("tor.virtual_port must be a port number 1..65535, got None")
        if not self.launch and self.control_port is None and not self.control_socket:
            raise ConfigError("tor: set control_port or control_socket to attach to a running tor, or launch = true")
        if self.launch and self.password is not None:
            raise ConfigError("tor.password is for attaching to a running tor; a launched tor uses cookie auth")
        if not isinstance(self.torrc_lines, tuple) or not all(isinstance(x, str) for x in self.torrc_lines):
            raise ConfigError("tor.torrc_lines must be a tuple of strings")
        if any("\n" in line or "\r" in line for line in self.torrc_lines):
            raise ConfigError("tor.torrc_lines: one torrc line per entry, without newlines")
        if not self.tor_binary:
            raise ConfigError("tor.tor_binary must name the tor executable")
        for name in ("bootstrap_timeout", "publish_timeout", "connect_timeout", "attempt_timeout",
                     "control_timeout", "health_interval"):
            _positive(name, getattr(self, name))
        if isinstance(self.retry_delay, bool) or not isinstance(self.retry_delay, (int, float)) \
                or self.retry_delay < 0:
            raise ConfigError(f"tor.retry_delay must be >= 0 seconds, got {self.retry_delay!r}")
        if isinstance(self.connect_attempts, bool) or not isinstance(self.connect_attempts, int) \
                or not 1 <= self.connect_attempts <= 100:
            raise ConfigError(f"tor.connect_attempts must be 1..100, got {self.connect_attempts!r}")


# --- Processes -----------------------------------------------------------------------------

_LAUNCHED: set[subprocess.Popen] = set()
_LAUNCHED_LOCK = threading.Lock()


def _kill_leftovers() -> None:
    with _LAUNCHED_LOCK:
        procs = list(_LAUNCHED)
    for proc in procs:
        stop_tor_process(proc, grace=2.0)


atexit.register(_kill_leftovers)


def start_tor_process(binary: str, torrc: Path, *, stderr_path: Path) -> subprocess.Popen:
    """Start ``tor -f torrc`` in its own session; the PID is remembered until it is stopped.

    Raises TorError when the binary cannot be executed. Leftovers are killed at interpreter
    exit (atexit), so an interrupted run does not leave tor processes behind.
    """
    exe = shutil.which(binary) or binary
    env = dict(os.environ, MALLOC_ARENA_MAX="1")
    try:
        with open(stderr_path, "ab") as err:
            proc = subprocess.Popen(
                [exe, "-f", str(torrc), "--defaults-torrc", "/nonexistent", "--quiet"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=env, start_new_session=True, close_fds=True,
            )
    except OSError as exc:
        raise TorError(f"cannot start tor ({binary!r}): {exc.strerror or exc}; is tor installed?") from exc
    with _LAUNCHED_LOCK:
        _LAUNCHED.add(proc)
    return proc


def stop_tor_process(proc: subprocess.Popen, *, grace: float = 5.0) -> None:
    """Stop a tor we started, by its PID: SIGTERM, then SIGKILL after ``grace`` seconds."""
    try:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace)
            except ProcessLookupError:
                pass
    finally:
        with _LAUNCHED_LOCK:
            _LAUNCHED.discard(proc)


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# --- Controller ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlEndpoint:
    """Where a tor's control interface is: a 127.0.0.1 port or a unix socket path."""

    port: int | None = None
    socket_path: str | None = None
    host: str = "127.0.0.1"

    def __str__(self) -> str:
        return f"control socket {self.socket_path}" if self.socket_path else f"control port {self.host}:{self.port}"


def open_controller(endpoint: ControlEndpoint, password: str | None = None):  # -> stem.control.Controller
    """Connect and authenticate to a tor control interface (blocking; run it in a thread).

    Raises TorError if nothing answers there, TorAuthError naming the endpoint and the auth
    method when tor refuses us. The password never appears in a message.
    """
    import stem
    import stem.connection
    import stem.control

    if not endpoint.socket_path:
        # stem leaks its socket when the connection is refused: look before we leap.
        try:
            with socket.create_connection((endpoint.host, endpoint.port), timeout=5):
                pass
        except OSError as exc:
            raise TorError(
                f"cannot reach tor's {endpoint}: {exc.strerror or exc}; is tor running with this ControlPort?"
            ) from exc
    try:
        if endpoint.socket_path:
            controller = stem.control.Controller.from_socket_file(endpoint.socket_path)
        else:
            controller = stem.control.Controller.from_port(address=endpoint.host, port=endpoint.port)
    except stem.SocketError as exc:
        raise TorError(f"cannot reach tor's {endpoint}: {exc}; is tor running with this ControlPort?") from exc
    method = "password" if password is not None else "cookie"
    try:
        controller.authenticate(password=password)
    except stem.connection.MissingPassword as exc:
        controller.close()
        raise TorAuthError(
            f"tor's {endpoint} refused {method} authentication: it wants a password (set tor.password)"
        ) from exc
    except stem.connection.IncorrectPassword as exc:
        controller.close()
        raise TorAuthError(f"tor's {endpoint} refused password authentication: wrong password") from exc
    except stem.connection.CookieAuthFailed as exc:
        controller.close()
        raise TorAuthError(
            f"tor's {endpoint} refused cookie authentication: {_auth_detail(exc)} "
            "(the user running anonmail must be able to read tor's cookie file)"
        ) from exc
    except stem.connection.AuthenticationFailure as exc:
        controller.close()
        raise TorAuthError(f"tor's {endpoint} refused {method} authentication: {_auth_detail(exc)}") from exc
    except (stem.ControllerError, stem.SocketError) as exc:
        controller.close()
        raise TorError(f"tor's {endpoint} failed during authentication: {exc}") from exc
    return controller


def _auth_detail(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.rstrip(".") if text else type(exc).__name__


_PHASE_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def bootstrap_status(controller) -> dict[str, str]:
    """tor's ``status/bootstrap-phase`` as a dict (PROGRESS, TAG, SUMMARY, WARNING…); blocking."""
    import stem

    try:
        line = controller.get_info("status/bootstrap-phase")
    except (stem.ControllerError, stem.SocketError) as exc:
        raise TorError(f"cannot ask tor for its bootstrap status: {exc}") from exc
    fields = {k: v.strip('"') for k, v in _PHASE_FIELD.findall(line)}
    fields["SEVERITY"] = line.split(" ", 1)[0]
    return fields


def wait_for_bootstrap(
    controller, timeout: float, *, alive: Callable[[], bool] = lambda: True, what: str = "tor"
) -> float:
    """Block until tor reports PROGRESS=100; return the seconds waited.

    Raises TorBootstrapError when ``timeout`` passes (naming the phase tor is stuck at and its
    last warning) or when ``alive()`` turns false.
    """
    start = time.monotonic()
    status: dict[str, str] = {}
    while True:
        status = bootstrap_status(controller)
        if status.get("PROGRESS") == "100":
            return time.monotonic() - start
        if not alive():
            raise TorBootstrapError(f"{what} exited while bootstrapping (at {_phase_text(status)})")
        if time.monotonic() - start > timeout:
            raise TorBootstrapError(
                f"{what} did not bootstrap within {timeout:.0f} s: stuck at {_phase_text(status)}; "
                "check that it can reach the Tor network (or the private test network)"
            )
        time.sleep(0.2)


def _phase_text(status: dict[str, str]) -> str:
    text = f"{status.get('PROGRESS', '?')}% ({status.get('SUMMARY') or status.get('TAG') or 'no status'})"
    if status.get("WARNING"):
        text += f", last warning: {status['WARNING']}"
    return text


# --- The transport -------------------------------------------------------------------------


async def _in_thread(func: Callable[[], T], timeout: float, what: str) -> T:
    """Run a blocking stem call in a worker thread; TorError if it takes longer than ``timeout``."""
    try:
        with anyio.fail_after(timeout):
            return await anyio.to_thread.run_sync(func, abandon_on_cancel=True)
    except TimeoutError:
        raise TorError(f"tor did not answer in {timeout:.0f} s while {what}") from None


class _TorUnreachable(TorError):
    """The control connection is gone (tor stopped or restarted); the watchdog is on it."""


def onion_host(public_key: bytes) -> str:
    """The v3 onion host (56 base32 characters + ``.onion``) of an Ed25519 public key (rend-spec-v3)."""
    import base64
    import hashlib

    version = b"\x03"
    checksum = hashlib.sha3_256(b".onion checksum" + public_key + version).digest()[:2]
    return base64.b32encode(public_key + checksum + version).decode("ascii").lower() + ".onion"


def create_onion_key(data_dir: str | os.PathLike[str], virtual_port: int = DEFAULT_VIRTUAL_PORT) -> str:
    """Create the node's onion key offline (0600) and return the ``onion://`` address it will serve.

    Lets an operator (or a testnet) know a node's address before its first run. Tor's
    ED25519-V3 key blob is the expanded secret key: the clamped SHA-512 of a random seed.
    Refuses to replace an existing key (the address would change).
    """
    import base64
    import hashlib

    from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp

    path = Path(data_dir) / ONION_KEY_FILE
    if path.exists():
        raise KeyFileError(f"{path} already exists; keeping it (its onion address must not change)")
    expanded = bytearray(hashlib.sha512(os.urandom(32)).digest())
    expanded[0] &= 248
    expanded[31] &= 127
    expanded[31] |= 64
    public = crypto_scalarmult_ed25519_base_noclamp(bytes(expanded[:32]))
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    write_key_file(path, b"ED25519-V3:" + base64.b64encode(bytes(expanded)) + b"\n")
    return f"onion://{onion_host(public)}:{virtual_port}"



class OnionTransport(Transport):
    """Tor v3 onion services in and SOCKS5 out; see the module docstring for the lifecycle."""

    schemes = frozenset({"onion"})

    def __init__(self, settings: TorSettings | None = None, data_dir: str | os.PathLike[str] | None = None) -> None:
        """``data_dir`` keeps the onion key (and a launched tor's files); without it, every
        run gets a new onion address and a launched tor lives in a temporary directory."""
        super().__init__()
        self.settings = settings or TorSettings()
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._controller = None
        self._process: subprocess.Popen | None = None
        self._tor_dir: Path | None = None
        self._temp_dir: str | None = None
        self._socks_port: int | None = None
        self._service_ids: list[str] = []
        self._endpoint: ControlEndpoint | None = None
        self._onion_key: tuple[str, str] | None = None  # to publish the same address again
        self._local_port: int | None = None
        self._down: str | None = None  # why tor is unreachable, while the watchdog gets it back
        self._lost = threading.Event()  # set by stem when the control connection closes
        self._lock = threading.Lock()
        self._closing = False

    # -- lifecycle

    async def __aenter__(self) -> OnionTransport:
        # Reach tor before the task group exists, so that failures surface as a plain TorError
        # rather than wrapped in an exception group by the base class.
        try:
            await self._attach_or_launch()
            await super().__aenter__()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop()
            raise
        return self

    async def _start(self) -> None:
        self.task_group.start_soon(self._watchdog)

    async def _attach_or_launch(self) -> None:
        """Get a controller (launching tor if asked) and wait until tor is bootstrapped."""
        settings = self.settings
        if settings.launch:
            await self._launch()
        else:
            self._endpoint = ControlEndpoint(port=settings.control_port, socket_path=settings.control_socket)
            await self._open_controller()
        await self._await_bootstrap()
        self._socks_port = settings.socks_port

    async def _open_controller(self) -> None:
        """Connect to tor's control interface at ``self._endpoint`` and keep the controller."""
        endpoint, settings = self._endpoint, self.settings
        assert endpoint is not None

        def open_it() -> None:
            controller = open_controller(endpoint, settings.password)
            controller.add_status_listener(self._on_control_state, spawn=False)
            with self._lock:
                if self._closing:  # the transport closed while we were connecting
                    controller.close()
                    raise TorError("the onion transport is closing")
                self._controller = controller

        await _in_thread(open_it, settings.control_timeout, f"connecting to its {endpoint}")

    def _on_control_state(self, controller, state, _timestamp: float) -> None:
        """stem's status listener: wake the watchdog when our control connection closes."""
        import stem.control

        if state == stem.control.State.CLOSED and controller is self._controller:
            self._lost.set()

    async def _await_bootstrap(self) -> None:
        """Wait until the tor we hold a controller for reports PROGRESS=100."""
        settings, controller, proc = self.settings, self._controller, self._process
        alive = (lambda: proc.poll() is None) if proc else (lambda: True)
        await _in_thread(
            lambda: wait_for_bootstrap(controller, settings.bootstrap_timeout, alive=alive),
            settings.bootstrap_timeout + settings.control_timeout, "bootstrapping",
        )

    async def _launch(self) -> None:
        """Start a private tor for this node and connect to its control port."""
        settings = self.settings
        if self.data_dir is not None:
            self._tor_dir = self.data_dir / "tor"
        else:
            self._temp_dir = tempfile.mkdtemp(prefix="anonmail-tor-")
            self._tor_dir = Path(self._temp_dir)
        tor_dir = self._tor_dir
        tor_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(tor_dir, 0o700)
        torrc = tor_dir / "torrc"
        torrc.write_text("\n".join(launch_torrc_lines(tor_dir, settings.torrc_lines)) + "\n")
        await self._start_launched_tor()

    async def _start_launched_tor(self) -> None:
        """Start this node's tor from the torrc in its directory and connect to its control port."""
        settings, tor_dir = self.settings, self._tor_dir
        assert tor_dir is not None
        port_file = tor_dir / "control_port"
        port_file.unlink(missing_ok=True)
        self._process = start_tor_process(settings.tor_binary, tor_dir / "torrc", stderr_path=tor_dir / "stderr.log")
        proc = self._process
        try:
            with anyio.fail_after(settings.control_timeout):
                port = await _await_control_port_file(port_file, proc, tor_dir)
        except TimeoutError:
            raise TorError(
                f"the tor launched in {tor_dir} opened no control port within {settings.control_timeout:.0f} s; "
                f"see {tor_dir / 'notice.log'}"
            ) from None
        self._endpoint = ControlEndpoint(port=port)
        await self._open_controller()

    async def _discover_socks_port(self) -> int:
        """Ask tor where its SOCKS port is (attach mode without a configured one)."""
        import stem
        import stem.control

        controller = self._controller

        def ask() -> list[tuple[str, int]]:
            try:
                return controller.get_listeners(stem.control.Listener.SOCKS)
            except (stem.ControllerError, stem.SocketError) as exc:
                raise _TorUnreachable(f"cannot ask tor for its SOCKS port: {exc}") from exc

        listeners = await _in_thread(ask, self.settings.control_timeout, "asking for its SOCKS port")
        for host, port in listeners:
            if host in ("127.0.0.1", "localhost", "::1"):
                return int(port)
        raise TorError(
            f"tor at {self._endpoint} has no SOCKS port on 127.0.0.1; add 'SocksPort 127.0.0.1:9050' "
            "to its torrc or set tor.socks_port"
        )

    async def _stop(self) -> None:
        with self._lock:
            self._closing = True
            controller, self._controller = self._controller, None
        service_ids, self._service_ids = self._service_ids, []
        try:
            if controller is not None:
                def close() -> None:
                    for service_id in service_ids:
                        try:
                            controller.remove_ephemeral_hidden_service(service_id)
                        except Exception:  # the tor may already be gone; closing is what matters
                            log.debug("removing onion service failed", exc_info=True)
                    controller.close()

                with anyio.move_on_after(self.settings.control_timeout):
                    await anyio.to_thread.run_sync(close, abandon_on_cancel=True)
        finally:
            if self._process is not None:
                proc, self._process = self._process, None
                await anyio.to_thread.run_sync(stop_tor_process, proc)
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None

    # -- info

    async def socks_port(self) -> int:
        """The 127.0.0.1 SOCKS port connections go through (asked of tor on first use)."""
        if self._socks_port is None and self._controller is None:
            if not self._entered:
                raise RuntimeError("use OnionTransport inside 'async with'")
            raise _TorUnreachable(f"tor is unreachable: {self._down or 'no control connection'}")
        if self._socks_port is None:
            self._socks_port = await self._discover_socks_port()
        return self._socks_port

    @property
    def tor_down(self) -> str | None:
        """Why tor is unreachable while the watchdog is getting it back, else None."""
        return self._down

    @property
    def tor_pid(self) -> int | None:
        """PID of the tor this transport launched, or None when attached to a running tor."""
        return self._process.pid if self._process else None

    # -- listening

    def _load_or_none(self) -> tuple[str, str] | None:
        """The saved (key_type, key_content), or None if this node has no onion key yet."""
        if self.data_dir is None:
            return None
        path = self.data_dir / ONION_KEY_FILE
        if not path.exists():
            return None
        text = read_key_file(path).decode("ascii", "replace").strip()
        key_type, sep, content = text.partition(":")
        if not sep or key_type != "ED25519-V3" or not re.fullmatch(r"[A-Za-z0-9+/=]{80,100}", content):
            raise KeyFileError(f"onion key file {str(path)!r} is not an ED25519-V3 key written by anonmail")
        return key_type, content

    async def listen(self, handler: Handler) -> list[str]:
        """Publish an onion service for a new 127.0.0.1 listener; return its ``onion://`` URI.

        Returns once tor reports the descriptor uploaded. Raises TorError if tor refuses the
        service or does not publish it within ``publish_timeout``; KeyFileError if the saved
        key is unreadable. One onion service per transport (its address is the node's).
        """
        if self._service_ids:
            raise TorError(f"this OnionTransport already serves {self._service_ids[0]}.onion; one service per transport")
        if self._controller is None:
            raise TorError(f"tor is unreachable: {self._down or 'no control connection'}")
        settings = self.settings
        saved = self._load_or_none()
        multi = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        listener = multi.listeners[0]  # one explicit loopback host: one socket
        local_port = listener.extra(anyio.abc.SocketAttribute.local_port)
        try:
            response = await self._publish(saved or ("NEW", "ED25519-V3"), local_port)
        except BaseException:
            await listener.aclose()
            raise
        service_id = response.service_id
        self._service_ids.append(service_id)
        self._onion_key = saved or (response.private_key_type, response.private_key)
        self._local_port = local_port
        if saved is None and self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            key = f"{response.private_key_type}:{response.private_key}\n".encode("ascii")
            write_key_file(self.data_dir / ONION_KEY_FILE, key)

        async def serve() -> None:
            async with listener:
                while True:
                    stream = await listener.accept()
                    self._spawn_handler(handler, stream)

        self.task_group.start_soon(serve)
        log.info("onion service published: %s.onion:%d", service_id, settings.virtual_port)
        return [f"onion://{service_id}.onion:{settings.virtual_port}"]

    async def _publish(self, key: tuple[str, str], local_port: int):  # -> stem AddOnionResponse
        """ADD_ONION for ``127.0.0.1:local_port`` with ``key``; return once the descriptor is uploaded."""
        import stem

        settings, controller = self.settings, self._controller
        key_type, key_content = key

        def publish():
            try:
                return controller.create_ephemeral_hidden_service(
                    {settings.virtual_port: f"127.0.0.1:{local_port}"},
                    key_type=key_type, key_content=key_content,
                    await_publication=True, timeout=settings.publish_timeout,
                )
            except stem.Timeout as exc:
                raise TorError(
                    f"tor did not publish the onion service descriptor within {settings.publish_timeout:.0f} s"
                ) from exc
            except (stem.ControllerError, stem.SocketError) as exc:
                raise TorError(f"tor refused to create the onion service: {exc}") from exc

        return await _in_thread(publish, settings.publish_timeout + settings.control_timeout,
                                "publishing the onion service")

    # -- when tor goes away

    async def _watchdog(self) -> None:
        """Check on tor every ``health_interval`` s (at once when the control connection closes); bring it back."""
        interval = self.settings.health_interval
        tick = min(interval, 0.5)
        while True:
            waited = 0.0
            while waited < interval and not self._lost.is_set():
                await anyio.sleep(tick)
                waited += tick
            self._lost.clear()
            problem = await self._health_problem()
            if problem is not None:
                await self._recover(problem)

    async def _health_problem(self) -> str | None:
        """None if tor is up and still serves our onion service, else what is wrong."""
        import stem

        controller, proc, service_ids, endpoint = self._controller, self._process, list(self._service_ids), self._endpoint
        if proc is not None and proc.poll() is not None:
            return f"the tor it launched (PID {proc.pid}) exited with status {proc.returncode}"
        if controller is None or not controller.is_alive():
            return f"the connection to tor's {endpoint} closed"

        def check() -> str | None:
            try:
                known = set(controller.list_ephemeral_hidden_services(our_services=True, detached=True))
            except (stem.ControllerError, stem.SocketError) as exc:
                return f"tor's {endpoint} does not answer ({exc})"
            if any(service_id not in known for service_id in service_ids):
                return f"tor's {endpoint} no longer has our onion service"
            return None

        try:
            return await _in_thread(check, self.settings.control_timeout, "checking its onion services")
        except TorError as exc:
            return str(exc)

    async def _recover(self, problem: str) -> None:
        """Reconnect to tor (restarting the one we launched) with back-off; publish our service again."""
        settings = self.settings
        self._down = problem
        service = f"onion service {self._service_ids[0]}.onion" if self._service_ids else "no onion service"
        log.warning("tor went away: %s; reconnecting (%s)", problem, service)
        start = time.monotonic()
        delay = min(1.0, settings.health_interval)
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._reconnect()
                if self._onion_key is not None and self._local_port is not None:
                    response = await self._publish(self._onion_key, self._local_port)
                    if self._service_ids and response.service_id != self._service_ids[0]:
                        raise TorError("tor published the saved key under another address")  # cannot happen
                break
            except (TorError, OSError) as exc:
                log.warning("tor is not back yet (attempt %d): %s; next try in %.0f s", attempt, exc, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, MAX_RECOVERY_DELAY)
        self._down = None
        log.warning("tor is back after %.1f s (%d attempt%s): %s published again", time.monotonic() - start,
                    attempt, "" if attempt == 1 else "s", service)

    async def _reconnect(self) -> None:
        """Drop the old controller, get a new one (a new tor process in launch mode), wait for bootstrap."""
        settings = self.settings
        old, self._controller = self._controller, None
        if old is not None:
            with anyio.move_on_after(settings.control_timeout):
                await anyio.to_thread.run_sync(old.close, abandon_on_cancel=True)
        if settings.launch:
            proc, self._process = self._process, None
            if proc is not None:  # dead, or alive but unusable: start afresh with the same data dir
                await anyio.to_thread.run_sync(stop_tor_process, proc)
            await self._start_launched_tor()
        else:
            await self._open_controller()
        await self._await_bootstrap()
        self._socks_port = settings.socks_port  # ask tor again if it was discovered

    # -- connecting

    async def connect(self, address: str) -> anyio.abc.ByteStream:
        """Open a stream to ``onion://HOST:PORT`` through tor, retrying failures that heal.

        Raises TransportAddressError for a non-onion or malformed address, ConnectError when
        every attempt failed or ``connect_timeout`` passed; its ``reason`` and message describe
        the last failure (e.g. ``descriptor_not_found``) and, if so, that tor is not bootstrapped.
        """
        from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, ProxyType
        from python_socks.async_.anyio import Proxy

        parsed = parse_transport_address(address)
        if parsed.scheme != "onion":
            raise TransportAddressError(f"the onion transport cannot reach {address}", address=address)
        settings = self.settings
        if self._down is not None:
            raise ConnectError(
                f"cannot reach {address}: tor is unreachable ({self._down}); the transport is reconnecting to it",
                address=address, reason="tor_unreachable",
            )
        try:
            socks_port = await self.socks_port()
        except _TorUnreachable as exc:
            raise ConnectError(f"cannot reach {address}: {exc}", address=address, reason="tor_unreachable") from exc
        proxy = Proxy(ProxyType.SOCKS5, "127.0.0.1", socks_port, rdns=True)
        reason, why = "timeout", "no attempt finished"
        attempts = 0
        start = time.monotonic()
        with anyio.move_on_after(settings.connect_timeout):
            while attempts < settings.connect_attempts:
                attempts += 1
                remaining = settings.connect_timeout - (time.monotonic() - start)
                try:
                    return await proxy.connect(
                        parsed.host, parsed.port, timeout=max(0.1, min(settings.attempt_timeout, remaining))
                    )
                except ProxyTimeoutError:
                    reason, why = "timeout", f"attempt timed out after {settings.attempt_timeout:.0f} s"
                    retry = True
                except ProxyConnectionError as exc:
                    reason, why = "tor_unreachable", f"tor's SOCKS port 127.0.0.1:{socks_port} refused: {exc}"
                    retry = False
                except ProxyError as exc:
                    code = socks_reply_code(exc)
                    if code is None:
                        reason, why, retry = "socks_failure", f"SOCKS error: {exc}", True
                    else:
                        reply = describe_socks_reply(code)
                        reason, retry = reply.reason, reply.retryable
                        why = f"{reply.text} (SOCKS 0x{code:02X})"
                except OSError as exc:
                    reason, why, retry = "socks_failure", f"{exc.strerror or exc}", True
                log.debug("connect attempt %d to %s failed: %s", attempts, parsed.host[:8], why)
                if not retry:
                    break
                await anyio.sleep(settings.retry_delay * min(attempts, 4))
        elapsed = time.monotonic() - start
        if reason != "tor_unreachable":
            reason, why = await self._explain_not_bootstrapped(reason, why)
        raise ConnectError(
            f"cannot reach {address} through tor ({attempts} attempt{'s' if attempts != 1 else ''} "
            f"in {elapsed:.1f} s): {why}",
            address=address, reason=reason,
        )

    async def _explain_not_bootstrapped(self, reason: str, why: str) -> tuple[str, str]:
        """Blame a failed connect on bootstrapping if tor is below 100 %."""
        controller = self._controller
        if controller is None:
            return reason, why
        try:
            with anyio.move_on_after(2):
                status = await anyio.to_thread.run_sync(lambda: bootstrap_status(controller), abandon_on_cancel=True)
                if status.get("PROGRESS") != "100":
                    return "not_bootstrapped", f"tor is not bootstrapped ({_phase_text(status)}); last error: {why}"
        except TorError:
            pass
        return reason, why


def launch_torrc_lines(tor_dir: Path, extra: Iterable[str] = ()) -> list[str]:
    """torrc for a tor launched for one node: loopback-only control and SOCKS ports, cookie auth."""
    return [
        f"DataDirectory {tor_dir}",
        "ControlPort 127.0.0.1:auto",
        f"ControlPortWriteToFile {tor_dir / 'control_port'}",
        "CookieAuthentication 1",
        "SocksPort 127.0.0.1:auto ExtendedErrors",
        f"Log notice file {tor_dir / 'notice.log'}",
        f"PidFile {tor_dir / 'tor.pid'}",
        "RunAsDaemon 0",
        *extra,
    ]


async def _await_control_port_file(port_file: Path, proc: subprocess.Popen, tor_dir: Path) -> int:
    """Wait until a launched tor writes its control port file; TorError if tor exits first."""
    while True:
        if proc.poll() is not None:
            detail = _log_tail(tor_dir / "stderr.log") or _log_tail(tor_dir / "notice.log")
            raise TorError(f"the tor launched in {tor_dir} exited with status {proc.returncode}: {detail}")
        try:
            text = port_file.read_text().strip()
        except FileNotFoundError:
            text = ""
        match = re.fullmatch(r"PORT=127\.0\.0\.1:(\d+)", text)
        if match:
            return int(match.group(1))
        await anyio.sleep(0.05)
