"""``init``, ``run`` and ``status``, written once for the mix node, the authority, the provider and the agent.

Each service's CLI adds its own options and says what is particular to it (which config it
renders and loads, which rows its status shows); the behaviour users rely on lives here, so it
cannot drift between daemons (docs/design.md, "Daemons"):

- ``init``: :func:`prepare_data_dir` (0700, no overwrite without ``--force``), then
  :func:`anonmail.config.install_config` (what is written must load) and, for a forwarding node,
  the identity key (:func:`init_node`).
- ``run``: :func:`run_daemon` (logfmt on stderr, serve until SIGINT/SIGTERM, exit 0) with
  :func:`serve_announced`, which prints one JSON line ``{"name", "addresses"}`` once listening.
- ``status``: :func:`show_status` reads ``status.json``: the state on stdout (a table, or one
  JSON object with ``running`` and ``age_s``); when the daemon is not running, one line on
  stderr saying why and exit code 3.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anonmail.config import install_config
from anonmail.core import pki
from anonmail.daemon.cli import EXIT_NOT_RUNNING, EXIT_OK, address_key_arg
from anonmail.daemon.identity import IDENTITY_FILE, load_or_create_identity
from anonmail.daemon.status import STATUS_FILE, liveness, pid_alive, read_status
from anonmail.errors import ConfigError, StoreError

__all__ = [
    "LOG_LEVELS",
    "StatusView",
    "add_config_arguments",
    "add_node_init_arguments",
    "config_path",
    "prepare_data_dir",
    "init_node",
    "run_daemon",
    "run_node",
    "serve_announced",
    "node_status",
    "node_status_rows",
    "show_status",
]

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


# --------------------------------------------------------------------------- arguments


def add_config_arguments(parser: argparse.ArgumentParser, config_name: str) -> None:
    """``--config FILE`` or ``--dir DATA_DIR`` (which holds ``config_name``): how run and status find a daemon."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help=f"path to {config_name}")
    where.add_argument("--dir", type=Path, help=f"data directory holding {config_name}")


def config_path(args: argparse.Namespace, config_name: str) -> Path:
    """The config file named by ``--config`` or ``--dir``."""
    return args.config if args.config is not None else args.dir / config_name


def add_node_init_arguments(parser: argparse.ArgumentParser, *, role: str) -> None:
    """The ``init`` options every forwarding node (mix or provider) takes."""
    parser.add_argument("--dir", required=True, type=Path, help="data directory (created, mode 0700)")
    parser.add_argument(
        "--authority", action="append", default=[], type=address_key_arg, metavar="ADDRESS=PUBKEY",
        help="a directory authority to trust (repeat for each)",
    )
    parser.add_argument("--threshold", type=int, default=None,
                        help="authority signatures required (default and least: a majority)")
    parser.add_argument("--epoch-seconds", type=int, default=3600, help="epoch length, must match the authorities")
    parser.add_argument("--tor", action="store_true", help="serve as a Tor onion service")
    parser.add_argument("--i2p", action="store_true", help="serve as an I2P destination")
    parser.add_argument("--test-mode", action="store_true", help="private test networks only: allow tcp:// peers")
    parser.add_argument("--tcp-listen", "--listen", dest="tcp_listen", default=None,
                        help="TEST ONLY: listen on tcp://127.0.0.1:PORT (implies --test-mode)")
    parser.add_argument("--force", action="store_true", help=f"overwrite an existing config file (the {role}'s key is kept)")


# --------------------------------------------------------------------------- init


def prepare_data_dir(directory: Path, config_name: str, *, force: bool) -> Path:
    """Create a daemon's data directory (0700) and return where its config goes; ConfigError if one is there."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    path = directory / config_name
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; use --force to overwrite it")
    return path


def init_node(
    args: argparse.Namespace,
    *,
    role: str,
    config_name: str,
    render: Callable[..., str],
    load: Callable[[Path], Any],
    run_hint: str,
    extra: tuple[tuple[str, str], ...] = (),
) -> int:
    """``init`` of a forwarding node: check the options, write a config that loads, create the identity key.

    ``render(threshold=..., test_mode=...)`` returns the config text; ``run_hint`` is the command
    that starts the node, with ``{config}`` for the config's path.
    """
    if not args.authority:
        raise ConfigError("give at least one --authority ADDRESS=PUBKEY (ask the network's operators)")
    test_mode = args.test_mode or args.tcp_listen is not None
    if not (args.tor or args.i2p or args.tcp_listen):
        raise ConfigError(f"choose how the {role} is reached: --tor and/or --i2p (or --tcp-listen for tests)")
    threshold = args.threshold or pki.majority(len(args.authority))
    directory: Path = args.dir
    path = prepare_data_dir(directory, config_name, force=args.force)
    install_config(path, render(threshold=threshold, test_mode=test_mode), load)
    identity = load_or_create_identity(directory)
    print(f"config:       {path}")
    print(f"identity key: {directory / IDENTITY_FILE} (0600)")
    print(f"public key:   {base64.b64encode(identity.public).decode()}")
    for label, value in extra:
        print(f"{label + ':':<13} {value}")
    print(f"start it:     {run_hint.format(config=path)}")
    return EXIT_OK


# --------------------------------------------------------------------------- run


def run_daemon(log_level: str, serve: Callable[[], Awaitable[None]]) -> int:
    """Log as every daemon does, run ``serve`` until it returns (a signal stops it), exit 0."""
    import anyio

    from anonmail.daemon.logfmt import configure_daemon_logging

    configure_daemon_logging(log_level)
    anyio.run(serve)
    return EXIT_OK


async def serve_announced(
    run: Callable[..., Awaitable[Any]],
    *,
    name: str,
    addresses: Callable[[Any], list[str]],
    log: logging.Logger,
    **extra: str,
) -> None:
    """Serve ``run`` until SIGINT/SIGTERM; once listening print ``{"name", "addresses", **extra}`` on one line."""
    from anonmail.daemon.lifecycle import serve_until_signal

    def started(value: Any, _tg: object) -> None:
        print(json.dumps({"name": name, "addresses": addresses(value), **extra}), flush=True)

    await serve_until_signal(run, log=log, on_started=started)


def run_node(
    args: argparse.Namespace, *, config_name: str, load: Callable[[Path], Any], node: Callable[..., Any],
    log: logging.Logger,
) -> int:
    """``run`` of a forwarding node: load its config, build its transports, serve ``node(config, transports)``."""
    from anonmail.daemon.node_config import build_node_transports

    config = load(config_path(args, config_name))

    async def serve() -> None:
        service = node(config, build_node_transports(config))
        await serve_announced(service.run, name=config.name, addresses=lambda _: service.addresses, log=log)

    return run_daemon(args.log_level, serve)


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class StatusView:
    """What one kind of daemon shows in ``status``: who it is, how to start it, its rows."""

    #: Said when it is not running, e.g. "provider alpha is not running".
    not_running: str
    #: The command that starts it.
    start_hint: str
    #: The table's title, from the status.
    title: Callable[[dict], str]
    #: (label, value) rows after the state row, from the status.
    rows: Callable[[dict], list[tuple[str, str]]]


def node_status_rows(status: dict, rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A forwarding node's rows (mix or provider): epoch and addresses, ``rows``, then drops and links."""
    return [
        ("epoch", f"{status.get('epoch')} (consensus {status.get('consensus_epoch')}, "
                  f"listed: {status.get('in_consensus')})"),
        ("addresses", "\n".join(status.get("addresses") or []) or "-"),
        ("identity key", status.get("identity_key") or "-"),
        *rows,
        ("dropped", ", ".join(f"{k} {v}" for k, v in (status.get("dropped") or {}).items()) or "0"),
        ("links", ", ".join(f"{n}{'' if link.get('authenticated') else ' (down)'}"
                            for n, link in (status.get("links") or {}).items()) or "-"),
        ("links in", ", ".join(status.get("inbound_links") or {}) or "-"),
        ("refused", ", ".join(f"{k} {v}" for k, v in (status.get("refused") or {}).items()) or "0"),
    ]


def node_status(
    args: argparse.Namespace, *, config_name: str, load: Callable[[Path], Any], what: str, start: str,
    rows: Callable[[dict], list[tuple[str, str]]],
) -> int:
    """``status`` of a daemon found by ``--config``/``--dir``: ``what`` names it, ``start`` (with ``{config}``) starts it."""
    path = config_path(args, config_name)
    config = load(path)
    view = StatusView(not_running=f"{what} {config.name} is not running", start_hint=start.format(config=path),
                      title=lambda _: f"{what} {config.name}", rows=rows)
    return show_status(config.data_dir, view, as_json=args.json)


def show_status(data_dir: Path, view: StatusView, *, as_json: bool) -> int:
    """Print a daemon's state from its status file; exit 0 when it runs, 3 (and why, on stderr) when not."""
    try:
        status = read_status(data_dir)
    except StoreError:
        why = "no status file" if not (data_dir / STATUS_FILE).exists() else "its status file is unreadable"
        print(f"{view.not_running} ({why}); start it with `{view.start_hint}`", file=sys.stderr)
        return EXIT_NOT_RUNNING
    alive, age = liveness(status)
    stopped_cleanly = not status.get("running")
    status["running"] = bool(alive)
    status["age_s"] = round(age, 1)
    why = ""
    if not alive:
        why = ("it stopped" if stopped_cleanly else "its process is gone" if not pid_alive(status.get("pid"))
               else f"no update for {age:.0f} s")
        print(f"{view.not_running} ({why}); start it with `{view.start_hint}`", file=sys.stderr)
    if as_json:
        print(json.dumps(status, sort_keys=True))
        return EXIT_OK if alive else EXIT_NOT_RUNNING
    from rich.console import Console
    from rich.table import Table

    table = Table(title=view.title(status), show_header=False)
    state = (f"[green]running[/] (pid {status.get('pid')})" if alive
             else f"[red]not running[/] ({why}; last update {age:.0f} s ago)")
    for row in [("state", state), *view.rows(status)]:
        table.add_row(*row)
    Console().print(table)
    return EXIT_OK if alive else EXIT_NOT_RUNNING
