"""``mixnode authority init|run|status``: set up, run and inspect a directory authority.

``init`` creates the data directory (0700), the identity key (a 0600 file holding the Ed25519
seed: an authority must start unattended) and a commented ``authority.toml``; it prints the
public key and address that nodes and the other authorities pin. ``run`` serves until SIGINT or
SIGTERM and exits 0. ``status`` reads the ``status.json`` the running authority rewrites every
second and exits 3 when the authority is not running. These are the commands every daemon
shares (:mod:`anonmail.daemon.commands`), with the authority's own options and rows.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
from pathlib import Path

from anonmail.config import install_config
from anonmail.core.keys import IdentityKey
from anonmail.core.params import DEFAULT_PARAMS
from anonmail.keyfiles import read_key_file, write_key_file
from anonmail.daemon.cli import address_key_arg
from anonmail.daemon.commands import (
    LOG_LEVELS,
    add_config_arguments,
    config_path,
    node_status,
    prepare_data_dir,
    run_daemon,
    serve_announced,
)
from anonmail.errors import ConfigError, DirectoryError
from mixnode.authority.admission import ADMISSION_FILE, Admission, admit, load_admission, revoke
from mixnode.authority.config import (
    DEFAULT_EPOCH_SECONDS,
    AuthorityConfig,
    load_authority_config,
)
from mixnode.authority.server import Authority

__all__ = ["CONFIG_NAME", "KEY_NAME", "add_authority_parser", "run_authority_command", "render_config"]

CONFIG_NAME = "authority.toml"
KEY_NAME = "identity.key"

log = logging.getLogger("mixnode.authority")


def add_authority_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``authority`` and its subcommands (dest ``authority_command``) to a CLI."""
    parser = subparsers.add_parser("authority", help="run a directory authority (init, run, status, admit, revoke, list)")
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
    add_config_arguments(run, CONFIG_NAME)
    run.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)

    admitting = sub.add_parser("admit", help="admit a node's identity key under a name, role and layer")
    add_config_arguments(admitting, CONFIG_NAME)
    admitting.add_argument("node", nargs="+", metavar="NAME ROLE [LAYER] KEY",
                       help="e.g. `alpha provider KEY` or `mix-1-0 mix 1 KEY` (the key `init` printed for the node)")
    revoking = sub.add_parser("revoke", help="remove a node from the admission list (by name or key)")
    add_config_arguments(revoking, CONFIG_NAME)
    revoking.add_argument("name_or_key")
    listing = sub.add_parser("list", help="print the admission list")
    add_config_arguments(listing, CONFIG_NAME)

    status = sub.add_parser("status", help="show epochs, descriptors, signatures and peers of a running authority")
    add_config_arguments(status, CONFIG_NAME)
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    return parser


def run_authority_command(args: argparse.Namespace) -> int:
    """Run the chosen ``authority`` subcommand (inside :func:`anonmail.daemon.cli.run_command`)."""
    handlers = {"init": _init, "run": _run, "status": _status, "admit": _admission, "revoke": _admission,
                "list": _admission}
    return handlers[args.authority_command](args)


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
        line("# vote_seconds = 5", "each of the two voting phases of a build round"),
        line("# bootstrap_nodes = 0", "test networks: first consensus waits for this many nodes"),
    ]
    if tor:
        lines += ["", line("[tor]", "serve as an onion service through a running tor"),
                  "control_port = 9051", "# socks_port = 9050"]
    if i2p:
        lines += ["", line("[i2p]", "serve as an I2P destination through i2pd's SAM bridge"),
                  'sam_host = "127.0.0.1"', "sam_port = 7656"]
    d = DEFAULT_PARAMS
    lines += ["", line("# [params]", "traffic parameters voted; every consensus carries the median"),
              line(f"# lambda_payload = {d.lambda_payload}", "lambda_P: packets/s every agent sends (mail or cover)"),
              line(f"# lambda_loop = {d.lambda_loop}", "lambda_L: loop cover packets/s per agent"),
              line(f"# mix_lambda_loop = {d.mix_lambda_loop}", "lambda_M: loop cover packets/s per mix"),
              line(f"# delay_mean = {d.delay_mean}", "mean per-hop delay, seconds"),
              line(f"# max_delay = {d.max_delay}", "mixes and providers drop a longer per-hop delay"),
              line(f"# fetch_interval = {d.fetch_interval}", "seconds between an agent's mailbox fetches"),
              line(f"# fetch_batch = {d.fetch_batch}", "entries per fetch")]
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
    path = prepare_data_dir(directory, CONFIG_NAME, force=args.force)
    text = render_config(
        name=name, listen=list(args.listen), peers=list(args.peer), threshold=threshold,
        epoch_seconds=args.epoch_seconds, test_mode=test_mode, tor=args.tor, i2p=args.i2p,
    )
    install_config(path, text, load_authority_config)
    key_path = directory / KEY_NAME
    if key_path.exists():
        identity = IdentityKey.from_seed(read_key_file(key_path))
    else:
        identity = IdentityKey.generate()
        write_key_file(key_path, identity.seed)
    public = base64.b64encode(identity.public).decode()
    print(f"authority {name} initialised in {directory}")
    print(f"  config:     {path}")
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

    from anonmail.net.router import Router

    async with contextlib.AsyncExitStack() as stack:
        transports = [await stack.enter_async_context(t) for t in build_transports(config)]
        router = Router(transports, production=config.production)
        authority = Authority(config, router)
        await serve_announced(authority.run, name=config.name, addresses=lambda addresses: addresses, log=log,
                              public_key=base64.b64encode(authority.identity.public).decode())


def _run(args: argparse.Namespace) -> int:
    config = load_authority_config(config_path(args, CONFIG_NAME))
    return run_daemon(args.log_level, lambda: serve(config))


# --------------------------------------------------------------------------- admission


def _admission(args: argparse.Namespace) -> int:
    config = load_authority_config(config_path(args, CONFIG_NAME))
    if args.authority_command == "list":
        entries = load_admission(config.data_dir).entries
        for entry in entries:
            print(entry.line())
        if not entries:
            print(f"no node is admitted yet (add one with `mixnode authority admit --config {config.config_path} NAME ROLE [LAYER] KEY`)")
        return 0
    try:
        if args.authority_command == "revoke":
            entry = revoke(config.data_dir, args.name_or_key)
            print(f"revoked {entry.name} ({entry.role}); its next descriptors are refused")
            return 0
        entry = Admission.from_words(args.node)
        admit(config.data_dir, entry)
    except (ValueError, DirectoryError) as exc:
        raise ConfigError(f"{config.data_dir / ADMISSION_FILE}: {exc}") from None
    print(f"admitted {entry.name} as {entry.role}{f' in layer {entry.layer}' if entry.role == 'mix' else ''}; "
          "every authority's operator must admit it too")
    return 0


# --------------------------------------------------------------------------- status


def _status_rows(status: dict) -> list[tuple[str, str]]:
    rows = [
        ("addresses", "\n".join(status.get("addresses") or []) or "-"),
        ("epoch", f"{status.get('epoch')} ({status.get('epoch_seconds')} s), threshold {status.get('threshold')}"),
    ]
    for epoch, entry in sorted((status.get("epochs") or {}).items()):
        built = (f"consensus {entry.get('digest')} with {entry.get('signatures')} signatures" if entry.get("consensus")
                 else "no consensus yet")
        rows.append((f"epoch {epoch}", f"{entry.get('descriptors')} descriptors, {built}"))
    admitted = status.get("admitted") or []
    rows.append(("admitted", f"{len(admitted)} nodes" + ("" if admitted else " (see `mixnode authority admit`)")))
    for entry in admitted:
        layer = f" layer {entry.get('layer')}" if entry.get("role") == "mix" else ""
        rows.append((f"  {entry.get('name')}", f"{entry.get('role')}{layer}, key {entry.get('identity_key')}"))
    for address, peer in sorted((status.get("peers") or {}).items()):
        state = {True: "up", False: "down", None: "not contacted yet"}[peer.get("up")]
        extra = f" ({peer.get('last_error')})" if peer.get("last_error") else ""
        rows.append((f"peer {address}", f"{state}{extra}"))
    return rows


def _status(args: argparse.Namespace) -> int:
    return node_status(args, config_name=CONFIG_NAME, load=load_authority_config, what="authority",
                       start="mixnode authority run --config {config}", rows=_status_rows)
