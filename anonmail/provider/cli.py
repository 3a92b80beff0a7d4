"""``anonmail provider init|run|status``: set up, run and inspect a mailbox provider.

``init`` creates the data directory (0700), the node identity key (0600) and a commented
``provider.toml``. ``run`` serves until SIGINT or SIGTERM and exits 0; once listening it prints
one JSON line ``{"name", "addresses"}``. ``status`` reads the ``status.json`` the running
provider rewrites every second; it exits 3 when the provider is not running.

Hook into a CLI with :func:`add_provider_parser` (adds ``provider``, dest ``provider_command``)
and dispatch with :func:`run_provider_command`.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
from pathlib import Path

from anonmail.config import install_config
from anonmail.errors import ConfigError, StoreError
from mixnode.status import NOT_RUNNING

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
    from mixnode.authority.cli import address_key_arg

    parser = subparsers.add_parser("provider", help="run a mailbox provider (init, run, status)")
    sub = parser.add_subparsers(dest="provider_command", metavar="SUBCOMMAND", required=True)

    init = sub.add_parser("init", help="create keys and a commented config file for a new provider")
    init.add_argument("--dir", required=True, type=Path, help="data directory (created, mode 0700)")
    init.add_argument("--name", required=True, help="provider name: the @provider part of user addresses (a-z, 0-9, -)")
    init.add_argument(
        "--authority", action="append", default=[], type=address_key_arg, metavar="ADDRESS=PUBKEY",
        help="a directory authority to trust (repeat for each)",
    )
    init.add_argument("--threshold", type=int, default=None, help="authority signatures required (default 2, or 1 with one authority)")
    init.add_argument("--epoch-seconds", type=int, default=3600, help="epoch length, must match the authorities")
    init.add_argument("--tor", action="store_true", help="serve as a Tor onion service")
    init.add_argument("--i2p", action="store_true", help="serve as an I2P destination")
    init.add_argument("--test-mode", action="store_true", help="private test networks only: allow tcp:// peers")
    init.add_argument("--listen", "--tcp-listen", dest="tcp_listen", default=None,
                      help="TEST ONLY: listen on tcp://127.0.0.1:PORT (implies --test-mode)")
    init.add_argument("--registration", choices=["open", "closed"], default="open",
                      help="whether anyone may register an account (default open)")
    init.add_argument("--force", action="store_true", help="overwrite an existing config file")

    run = sub.add_parser("run", help="run the provider until SIGINT/SIGTERM")
    _config_args(run)
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    status = sub.add_parser("status", help="show a provider's counters (works while it runs)")
    _config_args(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _config_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help=f"path to {CONFIG_NAME}")
    where.add_argument("--dir", type=Path, help=f"data directory holding {CONFIG_NAME}")


def _config_path(args: argparse.Namespace) -> Path:
    return args.config if args.config is not None else args.dir / CONFIG_NAME


def run_provider_command(args: argparse.Namespace) -> int:
    """Dispatch ``provider init|run|status`` (use inside ``anonmail.cli.run_command``)."""
    handlers = {"init": cmd_provider_init, "run": cmd_provider_run, "status": cmd_provider_status}
    return handlers[args.provider_command](args)


def cmd_provider_init(args: argparse.Namespace) -> int:
    """Write a commented provider.toml and a 0600 identity key into a new data directory."""
    from anonmail.provider.config import load_provider_config, render_provider_config
    from mixnode.node import IDENTITY_FILE, load_or_create_identity

    if not args.authority:
        raise ConfigError("give at least one --authority ADDRESS=PUBKEY (ask the network's operators)")
    test_mode = args.test_mode or args.tcp_listen is not None
    if not (args.tor or args.i2p or args.tcp_listen):
        raise ConfigError("choose how the provider is reached: --tor and/or --i2p (or --listen tcp://... for tests)")
    threshold = args.threshold or min(2, len(args.authority))
    directory: Path = args.dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    config_path = directory / CONFIG_NAME
    if config_path.exists() and not args.force:
        raise ConfigError(f"{config_path} exists; use --force to overwrite it")
    text = render_provider_config(
        name=args.name, authorities=args.authority, threshold=threshold, epoch_seconds=args.epoch_seconds,
        test_mode=test_mode, tcp_listen=args.tcp_listen, tor=args.tor, i2p=args.i2p, registration=args.registration,
    )
    install_config(config_path, text, load_provider_config)
    identity = load_or_create_identity(directory)
    print(f"config:       {config_path}")
    print(f"identity key: {directory / IDENTITY_FILE} (0600)")
    print(f"public key:   {base64.b64encode(identity.public).decode()}")
    print(f"addresses:    <user>@{args.name}")
    print(f"start it:     anonmail provider run --config {config_path}")
    return 0


def cmd_provider_run(args: argparse.Namespace) -> int:
    """Run the provider until SIGINT/SIGTERM (exit 0)."""
    import anyio

    from anonmail.provider.config import load_provider_config
    from anonmail.provider.node import Provider
    from mixnode.transports import build_transports

    from anonmail.daemonlog import configure_daemon_logging

    configure_daemon_logging(args.log_level)
    config = load_provider_config(_config_path(args))

    async def main() -> None:
        from anonmail.lifecycle import serve_until_signal

        provider = Provider(config, build_transports(config))  # type: ignore[arg-type]
        await serve_until_signal(
            provider.run, log=logging.getLogger("anonmail.provider"),
            on_started=lambda _p, _tg: print(json.dumps({"name": config.name, "addresses": provider.addresses}),
                                             flush=True))

    anyio.run(main)
    return 0


def cmd_provider_status(args: argparse.Namespace) -> int:
    """Print the provider's counters; exit 3 when it is not running."""
    from anonmail.provider.config import load_provider_config
    from mixnode.status import liveness, read_status

    config = load_provider_config(_config_path(args))
    try:
        status = read_status(config.data_dir)
    except StoreError as exc:
        print(f"provider {config.name}: not running ({exc})", file=sys.stderr)
        return NOT_RUNNING
    alive, age = liveness(status)
    status["running"] = bool(alive)
    status["age_s"] = round(age, 1)
    if args.json:
        print(json.dumps(status, sort_keys=True))
        return 0 if alive else NOT_RUNNING
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"provider {status.get('name')}", show_header=False)
    state = "[green]running[/]" if alive else f"[red]not running[/] (last update {age:.0f} s ago)"
    rows = [
        ("state", state),
        ("epoch", f"{status.get('epoch')} (consensus {status.get('consensus_epoch')}, listed: {status.get('in_consensus')})"),
        ("addresses", "\n".join(status.get("addresses", [])) or "-"),
        ("accounts", str(status.get("accounts", 0))),
        ("stored", f"{status.get('stored_entries', 0)} entries, {status.get('stored_bytes', 0)} bytes"),
        ("delivered", f"{status.get('stored', 0)} stored, {status.get('acks_sent', 0)} ACKs sent"),
        ("clients", f"{status.get('client_sessions', 0)} connected, {status.get('fetches', 0)} fetches, "
                    f"{status.get('ingress', 0)} packets in, {status.get('rate_limited', 0)} rate-limited"),
        ("forwarded", str(status.get("forwarded", 0))),
        ("dropped", ", ".join(f"{k} {v}" for k, v in status.get("dropped", {}).items()) or "0"),
        ("links", ", ".join(f"{n}{'' if link['connected'] else ' (down)'}" for n, link in status.get("links", {}).items()) or "-"),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return 0 if alive else NOT_RUNNING
