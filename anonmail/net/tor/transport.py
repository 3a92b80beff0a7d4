"""OnionTransport: Tor v3 onion services in, SOCKS5 through tor out; tor watched and brought back.

The lifecycle is described in :mod:`anonmail.net.tor`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread

from anonmail.keyfiles import write_key_file
from anonmail.core.uri import parse_transport_address
from anonmail.errors import ConnectError, TorError, TransportAddressError
from anonmail.net.base import Handler, Transport
from anonmail.net.link import as_link
from anonmail.net.tor.control import ControlEndpoint, bootstrap_status, in_thread, open_controller, phase_text, \
    wait_for_bootstrap
from anonmail.net.tor.onion_key import ONION_KEY_FILE, load_onion_key
from anonmail.net.tor.process import await_control_port_file, launch_torrc_lines, start_tor_process, stop_tor_process
from anonmail.net.tor.settings import TorSettings
from anonmail.net.tor.socks import describe_socks_reply, socks_reply_code

__all__ = ["OnionTransport"]

log = logging.getLogger("anonmail.net.tor")

#: Longest pause between two attempts to get tor back after it went away.
MAX_RECOVERY_DELAY = 30.0
#: Publication attempts within ``publish_timeout``: a stalled one is withdrawn and added again.
PUBLISH_ATTEMPTS = 3
#: Seconds ``listen`` waits, after the first HSDir has the descriptor, for the others tor uploads to.
UPLOAD_SETTLE = 10.0


class _TorUnreachable(TorError):
    """The control connection is gone (tor stopped or restarted); the watchdog is on it."""


class OnionTransport(Transport):
    """Tor v3 onion services in and SOCKS5 out; see the module docstring for the lifecycle."""

    schemes = frozenset({"onion"})

    def __init__(self, settings: TorSettings | None = None, data_dir: str | os.PathLike[str] | None = None,
                 *, controller=None) -> None:
        """``data_dir`` keeps the onion key (and a launched tor's files); without it, every
        run gets a new onion address and a launched tor lives in a temporary directory.

        ``controller``: a stem Controller already connected and authenticated to the tor of the
        settings (attach mode only); the transport uses it instead of opening its own, and
        closes it when it closes. Reconnecting after tor went away uses the settings' endpoint.
        """
        super().__init__()
        self.settings = settings or TorSettings()
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if controller is not None and self.settings.launch:
            raise ValueError("a controller can be given only to attach to a running tor, not with launch")
        self._controller = controller
        self._process: subprocess.Popen | None = None
        self._tor_dir: Path | None = None
        self._temp_dir: str | None = None
        self._socks_port: int | None = self.settings.socks_port
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
            if self._controller is None:
                await self._open_controller()
            else:  # given to the constructor
                self._controller.add_status_listener(self._on_control_state, spawn=False)
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

        await in_thread(open_it, settings.control_timeout, f"connecting to its {endpoint}")

    def _on_control_state(self, controller, state, _timestamp: float) -> None:
        """stem's status listener: when our control connection closes, tor is down until the watchdog checks."""
        import stem.control

        if state == stem.control.State.CLOSED and controller is self._controller:
            self.mark_tor_down(f"the connection to tor's {self._endpoint} closed")

    async def _await_bootstrap(self) -> None:
        """Wait until the tor we hold a controller for reports PROGRESS=100."""
        settings, controller, proc = self.settings, self._controller, self._process
        alive = (lambda: proc.poll() is None) if proc else (lambda: True)
        await in_thread(
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
                port = await await_control_port_file(port_file, proc, tor_dir)
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

        listeners = await in_thread(ask, self.settings.control_timeout, "asking for its SOCKS port")
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

    def mark_tor_down(self, problem: str) -> None:
        """Record that tor went away: connects fail at once (``tor_unreachable``) and the watchdog checks now.

        The watchdog clears the mark when tor turns out fine, or once it brought tor back.
        Safe to call from stem's threads.
        """
        self._down = problem
        self._lost.set()

    @property
    def tor_pid(self) -> int | None:
        """PID of the tor this transport launched, or None when attached to a running tor."""
        return self._process.pid if self._process else None

    # -- listening

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
        saved = load_onion_key(self.data_dir)
        multi = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        listener = multi.listeners[0]  # one explicit loopback host: one socket
        local_port = listener.extra(anyio.abc.SocketAttribute.local_port)
        try:
            service_id, onion_key = await self._publish(saved or ("NEW", "ED25519-V3"), local_port)
        except BaseException:
            await listener.aclose()
            raise
        self._service_ids.append(service_id)
        self._onion_key = onion_key
        self._local_port = local_port
        if saved is None and self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            key = f"{onion_key[0]}:{onion_key[1]}\n".encode("ascii")
            write_key_file(self.data_dir / ONION_KEY_FILE, key)

        async def serve() -> None:
            async with listener:
                while True:
                    stream = await listener.accept()
                    self._spawn_handler(handler, stream)

        self.task_group.start_soon(serve)
        log.info("onion service published: %s.onion:%d", service_id, settings.virtual_port)
        return [f"onion://{service_id}.onion:{settings.virtual_port}"]

    async def _publish(self, key: tuple[str, str], local_port: int) -> tuple[str, tuple[str, str]]:
        """ADD_ONION for ``127.0.0.1:local_port`` with ``key``; (service id, the key it runs under) once uploaded.

        ``("NEW", "ED25519-V3")`` asks tor for a new key; tor returns it only then, so the key of
        the first attempt is the one every later attempt adds again and the one returned.

        One attempt waits up to ``publish_timeout / PUBLISH_ATTEMPTS`` for a first upload; an
        attempt that stalls (tor sometimes never uploads, its introduction circuits stuck in a small
        network) is withdrawn (DEL_ONION) and the same key added again, until ``publish_timeout``.
        """
        settings = self.settings
        deadline = time.monotonic() + settings.publish_timeout
        attempt_timeout = settings.publish_timeout / PUBLISH_ATTEMPTS
        attempt = 0
        while True:
            attempt += 1
            wait = min(attempt_timeout, deadline - time.monotonic())
            response, uploaded = await self._publish_once(key, local_port, wait)
            if key[0] == "NEW":  # tor made the key: later attempts and the caller use it
                key = (response.private_key_type, response.private_key)
            if uploaded:
                if attempt > 1:
                    log.info("onion service published on attempt %d", attempt)
                return response.service_id, key
            await self._withdraw(response.service_id)
            if deadline - time.monotonic() < 1.0:
                raise TorError(f"tor did not publish the onion service descriptor within "
                               f"{settings.publish_timeout:.0f} s ({attempt} attempt{'s' if attempt > 1 else ''})")
            log.warning("tor did not publish the onion service descriptor within %.0f s; adding it again", wait)

    async def _publish_once(self, key: tuple[str, str], local_port: int, wait: float):
        """One ADD_ONION; (response, True) once every HSDir answered (at most UPLOAD_SETTLE s after the first upload),
        (response, False) if none had it after ``wait`` s."""
        import queue

        import stem
        from stem.control import EventType

        settings, controller = self.settings, self._controller
        key_type, key_content = key
        events: queue.Queue = queue.Queue()
        listener = events.put  # one bound method object: removed by identity below

        def publish():
            controller.add_event_listener(listener, EventType.HS_DESC)
            try:
                try:
                    response = controller.create_ephemeral_hidden_service(
                        {settings.virtual_port: f"127.0.0.1:{local_port}"},
                        key_type=key_type, key_content=key_content, await_publication=False,
                    )
                except (stem.ControllerError, stem.SocketError) as exc:
                    raise TorError(f"tor refused to create the onion service: {exc}") from exc
                directories: set[str] = set()  # HSDirs tor is uploading to
                answered: set[str] = set()  # ... that said UPLOADED or FAILED
                uploaded = False
                end = time.monotonic() + wait
                while (left := end - time.monotonic()) > 0:
                    try:
                        event = events.get(timeout=min(left, 1.0))
                    except queue.Empty:
                        if not controller.is_alive():
                            raise TorError("the connection to tor closed while publishing the onion service") from None
                        continue
                    if event.action == stem.HSDescAction.UPLOAD and event.address == response.service_id:
                        directories.add(event.directory_fingerprint)
                    elif event.action in (stem.HSDescAction.UPLOADED, stem.HSDescAction.FAILED) \
                            and event.directory_fingerprint in directories \
                            and event.address in (response.service_id, "UNKNOWN", None):  # not another service's
                        answered.add(event.directory_fingerprint)
                        if event.action == stem.HSDescAction.UPLOADED and not uploaded:
                            uploaded = True
                            end = min(end, time.monotonic() + UPLOAD_SETTLE)
                    if uploaded and answered >= directories:
                        break
                # Returning after the first upload let a peer's first fetch reach HSDirs that did not
                # have it yet; tor then stops asking them for a while ("No more HSDir available").
                if uploaded:
                    log.info("onion service descriptor answered by %d of %d HSDirs", len(answered), len(directories))
                return response, uploaded
            finally:
                controller.remove_event_listener(listener)

        return await in_thread(publish, wait + settings.control_timeout, "publishing the onion service")

    async def _withdraw(self, service_id: str) -> None:
        """DEL_ONION ``service_id`` (a publication attempt that stalled); a failure is only logged."""
        import stem

        controller = self._controller

        def remove() -> None:
            try:
                controller.remove_ephemeral_hidden_service(service_id)
            except (stem.ControllerError, stem.SocketError) as exc:
                log.warning("could not withdraw a stalled onion service: %s", exc)

        await in_thread(remove, self.settings.control_timeout, "withdrawing a stalled onion service")

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
            else:
                self._down = None  # a false alarm (mark_tor_down while tor was fine)

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
            return await in_thread(check, self.settings.control_timeout, "checking its onion services")
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
                    service_id, _key = await self._publish(self._onion_key, self._local_port)
                    if self._service_ids and service_id != self._service_ids[0]:
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
        return await self._connect(address, isolation=None)

    async def connect_isolated(self, address: str) -> anyio.abc.ByteStream:
        """Like :meth:`connect`, on circuits of its own: a fresh random SOCKS username and password.

        tor puts streams with different SOCKS credentials on different circuits (``IsolateSOCKSAuth``,
        on by default for every SocksPort), so the stream shares no circuit with any other of this
        node, not even a rendezvous circuit to the same onion service.
        """
        return await self._connect(address, isolation=secrets.token_hex(16))

    async def _connect(self, address: str, *, isolation: str | None) -> anyio.abc.ByteStream:
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
        proxy = Proxy(ProxyType.SOCKS5, "127.0.0.1", socks_port, rdns=True, username=isolation, password=isolation)
        reason, why = "timeout", "no attempt finished"
        attempts = 0
        start = time.monotonic()
        with anyio.move_on_after(settings.connect_timeout):
            while attempts < settings.connect_attempts:
                attempts += 1
                remaining = settings.connect_timeout - (time.monotonic() - start)
                try:
                    stream = await proxy.connect(
                        parsed.host, parsed.port, timeout=max(0.1, min(settings.attempt_timeout, remaining))
                    )
                    return as_link(stream, address)
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
                except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:  # tor dropped the handshake
                    detail = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
                    reason, why, retry = "socks_failure", detail, True
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
                    return "not_bootstrapped", f"tor is not bootstrapped ({phase_text(status)}); last error: {why}"
        except TorError:
            pass
        return reason, why

