"""Run the bridge: SMTP submission and IMAP on loopback, over the user's agent store.

:func:`serve_bridge` is an anyio task (``await tg.start(serve_bridge, ...)``) for the asyncio
backend (aiosmtpd and pymap are asyncio libraries). ``anonmail agent`` starts it beside the
agent when ``[bridge] enabled = true``; ``anonmail bridge`` runs it alone, and then refuses
connections with a greeting that says no agent is running (mail would only wait) until one is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread

from anonmail.agent import account
from anonmail.bridge.config import BridgeSettings
from anonmail.bridge.credentials import load_login
from anonmail.bridge.imap import start_imap_server
from anonmail.bridge.maildb import MailStore
from anonmail.bridge.smtp import close_sessions, start_smtp_server
from anonmail.core.address import parse_address
from anonmail.errors import ConfigError

__all__ = ["serve_bridge", "BridgePorts", "agent_refusal"]


@dataclass(frozen=True)
class BridgePorts:
    """Where the running bridge listens (the ports are real even when 0 was asked for)."""

    host: str
    smtp_port: int
    imap_port: int


def agent_refusal(home: Path) -> Callable[[], str | None]:
    """A check for a stand-alone bridge: why it refuses (no agent runs for ``home``), or None."""
    from anonmail.errors import StoreError
    from anonmail.daemon.status import liveness, read_status

    def refusal() -> str | None:
        try:
            alive, _age = liveness(read_status(home))
        except StoreError:
            alive = False
        if alive:
            return None
        return f"anonmail agent is not running for {home}; start it with `anonmail agent` and connect again"

    return refusal


def _port(server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def serve_bridge(home: Path, settings: BridgeSettings, *, quota: int | None,
                       refusal: Callable[[], str | None] = lambda: None,
                       task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve SMTP and IMAP for the user in ``home`` until cancelled; reports :class:`BridgePorts` when listening."""
    login = load_login(home)
    probe = await anyio.to_thread.run_sync(lambda: MailStore(home / account.STORE_FILE, own_address=""))
    own_text = probe.meta("address")
    probe.close()
    if not own_text:
        raise ConfigError(f"{home} holds no registered anonmail user; run `anonmail init` first")
    own = parse_address(own_text)
    store = await anyio.to_thread.run_sync(lambda: MailStore(home / account.STORE_FILE, own_address=str(own)))
    servers, smtp_sessions, imap_handler = [], None, None
    try:
        try:
            smtp, smtp_sessions = await start_smtp_server(store, own, login, settings.host, settings.smtp_port,
                                                          quota=quota, refusal=refusal)
            servers.append(smtp)
            imap, folders, imap_handler = await start_imap_server(store, login, settings.host, settings.imap_port,
                                                                  refusal=refusal)
            servers.append(imap)
        except OSError as exc:
            raise ConfigError(f"the bridge cannot listen on {settings.host} ({exc.strerror}); choose other ports in "
                              "[bridge] of agent.toml") from None
        await anyio.to_thread.run_sync(store.sync)
        async with anyio.create_task_group() as tg:
            tg.start_soon(folders.watch)
            task_status.started(BridgePorts(settings.host, _port(smtp), _port(imap)))
    finally:
        for server in servers:
            server.close()
        with anyio.CancelScope(shield=True):
            if smtp_sessions is not None:
                close_sessions(smtp_sessions)
            if imap_handler is not None:
                with anyio.move_on_after(5):
                    await imap_handler.close_connections()
            for server in servers:
                with anyio.move_on_after(2):
                    await server.wait_closed()
        store.close()
