"""``mixnode authority init|run|status``: set up, run and inspect a directory authority.

``init`` creates the data directory (0700), the identity key (a 0600 file holding the Ed25519
seed: an authority must start unattended) and a commented ``authority.toml``; it prints the
public key and address that nodes and the other authorities pin. ``run`` serves until SIGINT or
SIGTERM and exits 0. ``status`` reads the ``status.json`` the running authority rewrites every
second and says plainly when the authority is not running.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from pathlib import Path

from anonmail.core.keys import IdentityKey, read_key_file, write_key_file
from anonmail.core.uri import parse_transport_address
from anonmail.errors import AnonmailError, ConfigError
from mixnode.authority.config import (
    DEFAULT_EPOCH_SECONDS,
    AuthorityConfig,
    load_authority_config,
    parse_public_key,
)
from mixnode.authority.server import Authority
from mixnode.status import NOT_RUNNING, STATUS_FILE, liveness

__all__ = ["CONFIG_NAME", "KEY_NAME", "add_authority_parser", "run_authority_command", "render_config"]

CONFIG_NAME = "authority.toml"
KEY_NAME = "identity.key"

log = logging.getLogger("mixnode.authority")


def address_key_arg(text: str) -> tuple[str, str]:
    """Parse ``ADDRESS=PUBKEY`` (argparse type); the base64 key is the last 44 characters (it may end in '=')."""
    if len(text) < 46 or text[-45] != "=":
        raise argparse.ArgumentTypeError(f"expected ADDRESS=PUBLIC_KEY (base64, 44 characters), got {text!r}")
    address, key = text[:-45], text[-44:]
    try:
        parse_public_key(key)
        parse_transport_address(address)
    except ValueError as exc:  # TransportAddressError is a ValueError too
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return address, key


def add_authority_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``authority`` and its subcommands (dest ``authority_command``) to a CLI."""
    parser = subparsers.add_parser("authority", help="run a directory authority (init, run, status)")
    sub = parser.add_subparsers(dest="authority_command", metavar="SUBCOMMAND", required=True)

    init = sub.add_parser("init", help="create an identity key and a commented config file")
    init.add_argument("--dir", required=True, type=Path, help="data directory (created, mode 0700)")
    init.add_argument("--name", default=None, help="authority name (a-z, 0-9, -; default: the directory's name)")
    init.add_argument("--listen", action="append", default=[], metavar="ADDRESS",
                      help="TEST ONLY: serve on tcp://127.0.0.1:PORT (repeatable; implies --test-mode)")
    init.add_argument("--tor", action="store_true", help="serve as a Tor onion service (system tor, control port 9051)")
    init.add_argument("--i2p", action="store_true", help="serve as an I2P destination (SAM bridge 127.0.0.1:7656)")
    init.add_argument("--peer", action="append", default=[], type=address_key_arg, metavar="ADDRESS=PUBKEY",
                      help="another authority (repeat for each)")
    init.add_argument("--threshold", type=int, default=None,
                      help="signatures a consensus needs (default: a majority of all authorities)")
    init.add_argument("--epoch-seconds", type=int, default=DEFAULT_EPOCH_SECONDS, help="epoch length (all authorities alike)")
    init.add_argument("--test-mode", action="store_true", help="private test networks only: allow tcp:// addresses")
    init.add_argument("--force", action="store_true", help="overwrite an existing config file (the key is kept)")

    run = sub.add_parser("run", help="serve until SIGINT/SIGTERM")
    run.add_argument("--config", required=True, type=Path, help=f"path to {CONFIG_NAME}")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    status = sub.add_parser("status", help="show epochs, descriptors, signatures and peers of a running authority")
    status.add_argument("--config", required=True, type=Path, help=f"path to {CONFIG_NAME}")
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    return parser


def run_authority_command(args: argparse.Namespace) -> int:
    """Run the chosen ``authority`` subcommand; errors are one line on stderr, exit code 1."""
    try:
        if args.authority_command == "init":
            return _init(args)
        if args.authority_command == "run":
            return _run(args)
        if args.authority_command == "status":
            return _status(args)
    except AnonmailError as exc:
        print(f"mixnode authority {args.authority_command}: {exc}", file=sys.stderr)
        return 1
    print(f"unknown authority command {args.authority_command!r}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------------- init


def render_config(
    *,
    name: str,
    listen: list[str],
    peers: list[tuple[str, str]],
    threshold: int,
    epoch_seconds: int,
    test_mode: bool,
    tor: bool,
    i2p: bool,
) -> str:
    """The commented TOML an operator edits (every key documented)."""
    q = json.dumps  # TOML basic strings accept JSON string escapes

    def line(setting: str, comment: str) -> str:
        return f"{setting:<29} # {comment}"

    lines = [
        "# anonmail directory authority (mixnode authority run --config THIS_FILE)",
        "schema_version = 1",
        line(f"name = {q(name)}", "shown in logs and status"),
        line('data_dir = "."', "database and status file, relative to this file"),
        line(f'key_file = "{KEY_NAME}"', "Ed25519 identity seed, mode 0600; everyone pins its public key"),
        line(f"test_mode = {'true' if test_mode else 'false'}", "true only on private test networks: allows tcp://"),
        "",
        "# Addresses served directly (TEST ONLY: tcp://127.0.0.1:PORT).",
        "listen = [" + ", ".join(q(a) for a in listen) + "]",
        "",
        "# All authorities must use the same epoch length, threshold and timing.",
        line(f"epoch_seconds = {epoch_seconds}", "a consensus is signed for each epoch"),
        line(f"threshold = {threshold}", "signatures a consensus needs (k of n, counting this one)"),
        line("# freeze_lead = EPOCH/4", "descriptors for an epoch are frozen this long before it"),
        line("# round_seconds = 5", "later build attempts (bootstrap) this often"),
        line("# sync_delay = 2", "wait after a cutoff before asking peers (clock skew)"),
        line("# gossip_seconds = 30", "background copy of peers' descriptors"),
        line("# bootstrap_nodes = 0", "test networks: first consensus waits for this many nodes"),
    ]
    if tor:
        lines += ["", line("[tor]", "serve as an onion service through a running tor"),
                  "control_port = 9051", "# socks_port = 9050"]
    if i2p:
        lines += ["", line("[i2p]", "serve as an I2P destination through i2pd's SAM bridge"),
                  'sam_host = "127.0.0.1"', "sam_port = 7656"]
    for address, key in peers:
        lines += ["", line("[[peers]]", "another authority"), f"address = {q(address)}", f"public_key = {q(key)}"]
    return "\n".join(lines) + "\n"


def _init(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    name = args.name or directory.resolve().name.lower()
    test_mode = args.test_mode or bool(args.listen)
    if not (args.listen or args.tor or args.i2p):
        raise ConfigError("choose a transport: --tor, --i2p, or (test networks) --listen tcp://127.0.0.1:PORT")
    count = len(args.peer) + 1
    threshold = args.threshold if args.threshold is not None else count // 2 + 1
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    config_path = directory / CONFIG_NAME
    if config_path.exists() and not args.force:
        raise ConfigError(f"{config_path} already exists; use --force to overwrite it")
    text = render_config(
        name=name, listen=list(args.listen), peers=list(args.peer), threshold=threshold,
        epoch_seconds=args.epoch_seconds, test_mode=test_mode, tor=args.tor, i2p=args.i2p,
    )
    tmp = config_path.with_name(f".{CONFIG_NAME}.tmp")
    tmp.write_text(text)
    try:
        load_authority_config(tmp)  # what we write must load
    except ConfigError:
        tmp.unlink()
        raise
    os.replace(tmp, config_path)
    key_path = directory / KEY_NAME
    if key_path.exists():
        identity = IdentityKey.from_seed(read_key_file(key_path))
    else:
        identity = IdentityKey.generate()
        write_key_file(key_path, identity.seed)
    public = base64.b64encode(identity.public).decode()
    print(f"authority {name} initialised in {directory}")
    print(f"  config:     {config_path}")
    print(f"  public key: {public}")
    for address in args.listen:
        print(f"  address:    {address}")
        print(f"  pin it as:  --peer {address}={public}   (other authorities)")
        print(f"              --authority {address}={public}   (mix nodes, providers, agents)")
    if args.tor or args.i2p:
        print("  the onion/I2P address is created on the first run: see `mixnode authority status`")
    return 0


# --------------------------------------------------------------------------- run


def build_transports(config: AuthorityConfig) -> list:
    """The transports the config asks for (tcp in test mode, Tor, I2P)."""
    from anonmail.net.settings import build_transports as build

    tcp = [a for a in config.listen if a.startswith("tcp://")]
    if len(tcp) != len(config.listen) or len(tcp) > 1:
        raise ConfigError(f"{config.config_path}: listen: give at most one tcp:// address; use [tor] or [i2p] otherwise")
    return build(config.data_dir, tcp_listen=tcp[0] if tcp else None, tor=config.tor, i2p=config.i2p,
                 test_mode=config.test_mode)


async def serve(config: AuthorityConfig) -> None:
    """Run the authority on its configured transports until SIGINT/SIGTERM."""
    import contextlib

    from anonmail.lifecycle import serve_until_signal
    from anonmail.net.router import Router

    async with contextlib.AsyncExitStack() as stack:
        transports = [await stack.enter_async_context(t) for t in build_transports(config)]
        router = Router(transports, production=config.production)
        authority = Authority(config, router)

        def started(addresses, _tg) -> None:
            public = base64.b64encode(authority.identity.public).decode()
            print(f"authority {config.name} serving on {', '.join(addresses)}; public key {public}", flush=True)

        await serve_until_signal(authority.run, log=log, on_started=started)


def _run(args: argparse.Namespace) -> int:
    import anyio

    from anonmail.daemonlog import configure_daemon_logging

    configure_daemon_logging(args.log_level)
    config = load_authority_config(args.config)
    anyio.run(serve, config)
    return 0


# --------------------------------------------------------------------------- status


def _status(args: argparse.Namespace) -> int:
    config = load_authority_config(args.config)
    path = config.data_dir / STATUS_FILE
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        print(f"authority {config.name} is not running (no {path}; start it with `mixnode authority run`)")
        return NOT_RUNNING
    except (OSError, ValueError) as exc:
        print(f"authority {config.name}: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    running, age = liveness(status)
    if args.json:
        print(json.dumps({**status, "running": running, "age_seconds": round(age, 1)}, sort_keys=True))
        return 0 if running else NOT_RUNNING
    if not running:
        why = "it stopped" if not status.get("running") else f"its status file is {age:.0f} s old"
        print(f"authority {config.name} is not running ({why}); last known state:")
    else:
        print(f"authority {config.name} running (pid {status.get('pid')})")
    print(f"  addresses:  {', '.join(status.get('addresses') or []) or '-'}")
    print(f"  epoch:      {status.get('epoch')} ({status.get('epoch_seconds')} s), threshold {status.get('threshold')}")
    for epoch, entry in sorted((status.get("epochs") or {}).items()):
        built = f"consensus {entry.get('digest')} with {entry.get('signatures')} signatures" if entry.get("consensus") else "no consensus yet"
        print(f"  epoch {epoch}: {entry.get('descriptors')} descriptors, {built}")
    for address, peer in sorted((status.get("peers") or {}).items()):
        state = {True: "up", False: "down", None: "not contacted yet"}[peer.get("up")]
        extra = f" ({peer.get('last_error')})" if peer.get("last_error") else ""
        print(f"  peer {address}: {state}{extra}")
    return 0 if running else NOT_RUNNING
