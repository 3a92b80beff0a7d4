"""``anonmail provider init|run|status``: set up, run and inspect a mailbox provider.

The commands are those every daemon shares (:mod:`anonmail.daemon.commands`): ``init`` creates the
data directory (0700), the node identity key (0600) and a commented ``provider.toml``; ``run``
serves until SIGINT or SIGTERM and exits 0, and once listening prints one JSON line ``{"name",
"addresses"}``; ``status`` reads the ``status.json`` the running provider rewrites every second
and exits 3 when the provider is not running.

Hook into a CLI with :func:`add_provider_parser` (adds ``provider``, dest ``provider_command``)
and dispatch with :func:`run_provider_command`.
"""

from __future__ import annotations

import argparse
import logging

from anonmail.daemon.commands import (
    LOG_LEVELS,
    add_config_arguments,
    add_node_init_arguments,
    init_node,
    node_status,
    node_status_rows,
    run_node,
)

__all__ = [
    "CONFIG_NAME",
    "add_provider_parser",
    "run_provider_command",
    "cmd_provider_init",
    "cmd_provider_run",
    "cmd_provider_status",
]

CONFIG_NAME = "provider.toml"


def add_provider_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``provider`` and its subcommands (dest ``provider_command``) to a CLI."""
    parser = subparsers.add_parser("provider", help="run a mailbox provider (init, run, status)")
    sub = parser.add_subparsers(dest="provider_command", metavar="SUBCOMMAND", required=True)

    init = sub.add_parser("init", help="create keys and a commented config file for a new provider")
    add_node_init_arguments(init, role="provider")
    init.add_argument("--name", required=True, help="provider name: the @provider part of user addresses (a-z, 0-9, -)")
    init.add_argument("--registration", choices=["open", "closed"], default="open",
                      help="whether anyone may register an account (default open)")

    run = sub.add_parser("run", help="run the provider until SIGINT/SIGTERM")
    add_config_arguments(run, CONFIG_NAME)
    run.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)

    status = sub.add_parser("status", help="show a provider's counters (works while it runs; exit 3 if it does not)")
    add_config_arguments(status, CONFIG_NAME)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def run_provider_command(args: argparse.Namespace) -> int:
    """Dispatch ``provider init|run|status`` (use inside :func:`anonmail.daemon.cli.run_command`)."""
    handlers = {"init": cmd_provider_init, "run": cmd_provider_run, "status": cmd_provider_status}
    return handlers[args.provider_command](args)


def cmd_provider_init(args: argparse.Namespace) -> int:
    """Write a commented provider.toml and a 0600 identity key into a new data directory."""
    from anonmail.provider.config import load_provider_config, render_provider_config

    def render(*, threshold: int, test_mode: bool) -> str:
        return render_provider_config(
            name=args.name, authorities=args.authority, threshold=threshold, epoch_seconds=args.epoch_seconds,
            test_mode=test_mode, tcp_listen=args.tcp_listen, tor=args.tor, i2p=args.i2p,
            registration=args.registration,
        )

    return init_node(args, role="provider", config_name=CONFIG_NAME, render=render, load=load_provider_config,
                     run_hint="anonmail provider run --config {config}", extra=(("addresses", f"<user>@{args.name}"),))


def cmd_provider_run(args: argparse.Namespace) -> int:
    """Run the provider until SIGINT/SIGTERM (exit 0)."""
    from anonmail.provider.config import load_provider_config
    from anonmail.provider.node import Provider

    return run_node(args, config_name=CONFIG_NAME, load=load_provider_config, node=Provider,
                    log=logging.getLogger("anonmail.provider"))


def _status_rows(status: dict) -> list[tuple[str, str]]:
    return node_status_rows(status, [
        ("accounts", str(status.get("accounts", 0))),
        ("stored", f"{status.get('stored_entries', 0)} entries, {status.get('stored_bytes', 0)} bytes"),
        ("delivered", f"{status.get('stored', 0)} stored, {status.get('acks_sent', 0)} ACKs sent"),
        ("clients", f"{status.get('client_sessions', 0)} connected, {status.get('fetches', 0)} fetches, "
                    f"{status.get('ingress', 0)} packets in, {status.get('rate_limited', 0)} rate-limited"),
        ("forwarded", str(status.get("forwarded", 0))),
    ])


def cmd_provider_status(args: argparse.Namespace) -> int:
    """Print the provider's counters; exit 3 when it is not running."""
    from anonmail.provider.config import load_provider_config

    return node_status(args, config_name=CONFIG_NAME, load=load_provider_config, what="provider",
                       start="anonmail provider run --config {config}", rows=_status_rows)
