"""``anonmail bridge``: use anonmail from the mail client you already have (docs/bridge.md).

``anonmail bridge --setup`` makes a new login (user name: your address; a random password,
shown once, stored only as a hash). ``anonmail bridge`` serves SMTP and IMAP on loopback until ^C,
beside a running ``anonmail agent``; ``[bridge] enabled = true`` in ``agent.toml`` makes the agent
serve them itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_bridge_parser", "BRIDGE_COMMANDS", "print_login"]


def add_bridge_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``anonmail bridge`` on the ``anonmail`` parser."""
    p = sub.add_parser("bridge", help="SMTP/IMAP on 127.0.0.1 for your mail client (until ^C)")
    p.add_argument("--home", type=Path, default=None, help="your anonmail directory (default: $ANONMAIL_HOME or "
                   "the platform's user data directory)")
    p.add_argument("--setup", action="store_true", help="make a new login for your mail client, print it once, exit")
    p.add_argument("--smtp-port", type=int, default=None, help="instead of [bridge] smtp_port (default 2525)")
    p.add_argument("--imap-port", type=int, default=None, help="instead of [bridge] imap_port (default 2143)")


def print_login(address: str, password: str, settings, out=sys.stdout) -> None:
    """Show the mail-client settings once (the password is not stored anywhere in clear)."""
    print("mail client settings (shown once; `anonmail bridge --setup` makes a new password):", file=out)
    print(f"  user name:   {address}", file=out)
    print(f"  password:    {password}", file=out)
    print(f"  IMAP server: {settings.host} port {settings.imap_port}, no encryption, normal password", file=out)
    print(f"  SMTP server: {settings.host} port {settings.smtp_port}, no encryption, normal password", file=out)
    print("  contacts:    write to <petname>@petname.anonmail, or to a full address", file=out)


def _cmd_bridge(args: argparse.Namespace) -> int:
    import anyio

    from anonmail.agent.cli import _home, _open_store
    from anonmail.agent.config import load_agent_config
    from anonmail.bridge.credentials import create_login
    from anonmail.bridge.server import agent_refusal, serve_bridge
    from anonmail.daemon.lifecycle import serve_until_signal

    home = _home(args)
    store = _open_store(args)
    address = store.meta("address")
    store.close()
    config = load_agent_config(home)
    from dataclasses import replace

    settings = replace(config.bridge, smtp_port=args.smtp_port or config.bridge.smtp_port,
                       imap_port=args.imap_port or config.bridge.imap_port)
    if args.setup:
        print_login(address, create_login(home, address), settings)
        return 0
    import logging

    log = logging.getLogger("anonmail.bridge")

    def started(ports, _tg) -> None:
        print(f"bridge: SMTP on {ports.host}:{ports.smtp_port}, IMAP on {ports.host}:{ports.imap_port}; ^C to stop",
              file=sys.stderr, flush=True)

    async def main() -> None:
        async def run(*, task_status) -> None:
            await serve_bridge(home, settings, quota=config.outbox_quota, refusal=agent_refusal(home),
                               task_status=task_status)

        await serve_until_signal(run, log=log, on_started=started)

    anyio.run(main)
    return 0


BRIDGE_COMMANDS = {"bridge": _cmd_bridge}
