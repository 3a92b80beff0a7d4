"""tor's control interface through stem: connect and authenticate, bootstrap status and wait.

stem is synchronous: these functions block, and the transport runs them through
:func:`in_thread` (a worker thread under a timeout).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread

from anonmail.errors import TorAuthError, TorBootstrapError, TorError

__all__ = ["ControlEndpoint", "open_controller", "bootstrap_status", "wait_for_bootstrap", "phase_text", "in_thread"]

T = TypeVar("T")


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
            raise TorBootstrapError(f"{what} exited while bootstrapping (at {phase_text(status)})")
        if time.monotonic() - start > timeout:
            raise TorBootstrapError(
                f"{what} did not bootstrap within {timeout:.0f} s: stuck at {phase_text(status)}; "
                "check that it can reach the Tor network (or the private test network)"
            )
        time.sleep(0.2)


def phase_text(status: dict[str, str]) -> str:
    """A bootstrap status as ``45% (Loading descriptors), last warning: ...`` for messages."""
    text = f"{status.get('PROGRESS', '?')}% ({status.get('SUMMARY') or status.get('TAG') or 'no status'})"
    if status.get("WARNING"):
        text += f", last warning: {status['WARNING']}"
    return text


async def in_thread(func: Callable[[], T], timeout: float, what: str) -> T:
    """Run a blocking stem call in a worker thread; TorError if it takes longer than ``timeout``."""
    try:
        with anyio.fail_after(timeout):
            return await anyio.to_thread.run_sync(func, abandon_on_cancel=True)
    except TimeoutError:
        raise TorError(f"tor did not answer in {timeout:.0f} s while {what}") from None
