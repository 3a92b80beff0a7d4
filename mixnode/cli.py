"""The ``mixnode`` command line: ``init``, ``run``, ``status`` and ``authority ...``.

Errors are one line on stderr with a non-zero exit code (``--debug`` shows the traceback).
``run`` stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from anonmail.core.pki import MIX_LAYERS
from anonmail.cli import run_command
from anonmail.config import install_config
from anonmail.errors import ConfigError
from mixnode import __version__
from mixnode.status import NOT_RUNNING

__all__ = ["main", "build_parser"]

CONFIG_NAME = "mixnode.toml"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mixnode``."""
    from mixnode.authority.cli import add_authority_parser, address_key_arg

    parser = argparse.ArgumentParser(prog="mixnode", description="anonmail mix node and directory authority")
    parser.add_argument("--version", action="version", version=f"mixnode {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    init = sub.add_parser("init", help="create keys and a commented config file for a new mix node")
    init.add_argument("--dir", required=True, type=Path, help="data directory (created, mode 0700)")
    init.add_argument("--name", required=True, help="node name in the consensus (a-z, 0-9, -)")
    init.add_argument("--layer", required=True, type=int, choices=range(1, MIX_LAYERS + 1), help="mix layer")
    init.add_argument(
        "--authority", action="append", default=[], type=address_key_arg, metavar="ADDRESS=PUBKEY",
        help="a directory authority to trust (repeat for each)",
    )
    init.add_argument("--threshold", type=int, default=None, help="authority signatures required (default 2, or 1 with one authority)")
    init.add_argument("--epoch-seconds", type=int, default=3600, help="epoch length, must match the authorities")
    init.add_argument("--tor", action="store_true", help="serve as a Tor onion service")
    init.add_argument("--i2p", action="store_true", help="serve as an I2P destination")
    init.add_argument("--test-mode", action="store_true", help="private test networks only: allow tcp:// peers")
    init.add_argument("--tcp-listen", default=None, help="TEST ONLY: listen on tcp://127.0.0.1:PORT (implies --test-mode)")
    init.add_argument("--force", action="store_true", help="overwrite an existing config file")

    run = sub.add_parser("run", help="run the mix node until SIGINT/SIGTERM")
    run.add_argument("--config", required=True, type=Path, help=f"path to {CONFIG_NAME}")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    status = sub.add_parser("status", help="show a node's counters (works while it runs)")
    status.add_argument("--config", required=True, type=Path, help=f"path to {CONFIG_NAME}")
    status.add_argument("--json", action="store_true", help="print one JSON object")

    add_authority_parser(sub)
    return parser


def _cmd_init(args: argparse.Namespace) -> int:
    from mixnode.config import load_mix_config, render_mix_config
    from mixnode.node import load_or_create_identity

    if not args.authority:
        raise ConfigError("give at least one --authority ADDRESS=PUBKEY (ask the network's operators)")
    test_mode = args.test_mode or args.tcp_listen is not None
    if not (args.tor or args.i2p or args.tcp_listen):
        raise ConfigError("choose how the node is reached: --tor and/or --i2p (or --tcp-listen for tests)")
    threshold = args.threshold or min(2, len(args.authority))
    directory: Path = args.dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    config_path = directory / CONFIG_NAME
    if config_path.exists() and not args.force:
        raise ConfigError(f"{config_path} exists; use --force to overwrite it")
    text = render_mix_config(
        name=args.name, layer=args.layer, authorities=args.authority, threshold=threshold,
        epoch_seconds=args.epoch_seconds, test_mode=test_mode, tcp_listen=args.tcp_listen, tor=args.tor, i2p=args.i2p,
    )
    install_config(config_path, text, load_mix_config)
    identity = load_or_create_identity(directory)
    print(f"config:       {config_path}")
    print(f"identity key: {directory / 'identity.key'} (0600)")
    print(f"public key:   {base64.b64encode(identity.public).decode()}")
    print(f"start it:     mixnode run --config {config_path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import anyio

    from mixnode.config import load_mix_config
    from mixnode.node import MixNode
    from mixnode.transports import build_transports

    from anonmail.daemonlog import configure_daemon_logging

    configure_daemon_logging(args.log_level)
    config = load_mix_config(args.config)

    async def main() -> None:
        from anonmail.lifecycle import serve_until_signal

        node = MixNode(config, build_transports(config))
        await serve_until_signal(
            node.run, log=logging.getLogger("mixnode"),
            on_started=lambda _node, _tg: print(json.dumps({"name": config.name, "addresses": node.addresses}),
                                                flush=True))

    anyio.run(main)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from mixnode.config import load_mix_config
    from mixnode.status import liveness, read_status

    config = load_mix_config(args.config)
    status = read_status(config.data_dir)
    alive, age = liveness(status)
    status["running"] = bool(alive)
    status["age_s"] = round(age, 1)
    if args.json:
        print(json.dumps(status, sort_keys=True))
        return 0 if alive else NOT_RUNNING
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mix node {status['name']} (layer {status['layer']})", show_header=False)
    state = "[green]running[/]" if alive else f"[red]not running[/] (last update {age:.0f} s ago)"
    rows = [
        ("state", state),
        ("epoch", f"{status['epoch']} (consensus {status['consensus_epoch']}, listed: {status['in_consensus']})"),
        ("addresses", "\n".join(status["addresses"]) or "-"),
        ("received", str(status["received"])),
        ("forwarded", str(status["forwarded"])),
        ("dropped", ", ".join(f"{k} {v}" for k, v in status["dropped"].items()) or "0"),
        ("queue", f"{status['queue_length']} held / {status['queue_limit']}, {status['inbound_queue']} waiting to unwrap"),
        ("loops", f"{status['loops_sent']} sent, {status['loops_returned']} back, {status['loops_lost']} lost, "
                  f"{status['loops_pending']} pending"),
        ("links", ", ".join(f"{n}{'' if l['connected'] else ' (down)'}" for n, l in status["links"].items()) or "-"),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return 0 if alive else NOT_RUNNING


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mixnode`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    from mixnode.authority.cli import run_authority_command

    handlers = {"init": _cmd_init, "run": _cmd_run, "status": _cmd_status, "authority": run_authority_command}
    return run_command("mixnode", handlers[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
