"""The user's commands: ``init``, ``agent``, ``status``, ``whoami``, ``contact``, ``send``, ``outbox``,
``inbox``, ``read``, ``delete``.

Everything a user does goes through the SQLite store in their home directory (``--home``, else
``$ANONMAIL_HOME``, else the platform's user data directory), so the commands work whether or
not ``anonmail agent`` runs: ``send`` queues, the agent delivers. Only ``init`` and ``agent``
need the passphrase (``--passphrase-file``, ``$ANONMAIL_PASSPHRASE`` or a prompt) and the
network. ``status`` reads the ``status.json`` a running agent rewrites every second
(:mod:`anonmail.agent.status`) and exits 3 when no agent runs. Every refusal is one line on
stderr and a non-zero exit; nothing is stored then.
"""

from __future__ import annotations

import argparse
import base64
import functools
import getpass
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

from anonmail.agent import account
from anonmail.agent.store import AgentStore
from anonmail.core import pki
from anonmail.core.display import body_for_terminal, for_terminal
from anonmail.daemon.cli import address_key_arg, parse_public_key
from anonmail.errors import ConfigError, MailError, PassphraseError

__all__ = ["add_user_parsers", "USER_COMMANDS", "init_user", "default_home"]

log = logging.getLogger("anonmail.agent")

#: Passphrase-derivation strength for ``init --kdf``: name -> (opslimit, memlimit).
_KDF = {"moderate": None, "interactive": (2, 64 * 1024 * 1024)}


def default_home() -> Path:
    """``$ANONMAIL_HOME``, else the platform's per-user data directory for anonmail."""
    env = os.environ.get("ANONMAIL_HOME")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("anonmail", appauthor=False))


def add_user_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the user commands on the ``anonmail`` parser."""
    def home(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--home", type=Path, default=None, help="your anonmail directory (default: $ANONMAIL_HOME or "
                       "the platform's user data directory)")
        return p

    init = home(sub.add_parser("init", help="create your identity and register at a provider"))
    init.add_argument("--authority", action="append", default=[], type=address_key_arg, metavar="ADDRESS=PUBKEY",
                      help="a directory authority to trust (repeat for each; ask the network's operators)")
    init.add_argument("--threshold", type=int, default=None, help="authority signatures required (default and least: a majority)")
    init.add_argument("--epoch-seconds", type=int, default=3600, help="epoch length of the network")
    init.add_argument("--provider", default=None, metavar="NAME[=KEY]",
                      help="provider to register at, with its identity key as its operator published it "
                           "(`anonmail provider status`); without KEY the consensus's key is pinned (default: a random one)")
    init.add_argument("--tor", action="store_true", help="reach the network through tor (control port 9051)")
    init.add_argument("--tor-control-port", type=int, default=None, help="tor's control port (implies --tor)")
    init.add_argument("--i2p", action="store_true", help="reach the network through i2pd's SAM bridge")
    init.add_argument("--sam-port", type=int, default=None, help="i2pd's SAM port (implies --i2p)")
    init.add_argument("--test-mode", action="store_true", help="private test networks only: allow tcp:// peers")
    init.add_argument("--passphrase-file", type=Path, default=None, help="read the new passphrase from this file")
    init.add_argument("--kdf", choices=sorted(_KDF), default="moderate",
                      help="passphrase hardening: moderate (default, ~1 s, 256 MiB) or interactive (faster, weaker)")

    agent = home(sub.add_parser("agent", help="run your agent: send, receive, cover traffic (until ^C)"))
    agent.add_argument("--passphrase-file", type=Path, default=None, help="read the passphrase from this file")
    agent.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    status = home(sub.add_parser("status", help="show what your running agent is doing (exit 3 if it is not running)"))
    status.add_argument("--json", action="store_true", help="print one JSON object")

    whoami = home(sub.add_parser("whoami", help="print your address"))
    whoami.add_argument("--fingerprint", action="store_true",
                        help="print your fingerprint in groups of four, for a contact to compare (`contact verify`)")

    contact = sub.add_parser("contact", help="your contact book (petnames for addresses)")
    csub = contact.add_subparsers(dest="contact_command", metavar="ACTION", required=True)
    add = home(csub.add_parser("add", help="add a contact"))
    add.add_argument("name", help="a petname (letters, digits, - and _)")
    add.add_argument("address", help="their address, <56 characters>@<provider>")
    home(csub.add_parser("list", help="list contacts"))
    refresh = home(csub.add_parser("refresh", help="forget a contact's keys so the agent looks them up again"))
    refresh.add_argument("name")
    verify = home(csub.add_parser("verify", help="mark a contact verified once the fingerprint they read you "
                                                 "(`anonmail whoami --fingerprint`) matches"))
    verify.add_argument("name")
    verify.add_argument("fingerprint", nargs="+", help="their fingerprint (spaces and case do not matter)")
    from anonmail.agent.invite_cli import add_invite_parsers

    add_invite_parsers(sub, home)

    send = home(sub.add_parser("send", help="queue a message (the agent sends it)"))
    send.add_argument("--to", required=True, help="a contact's petname or an address")
    send.add_argument("--subject", default="", help="one line")
    send.add_argument("file", nargs="?", default="-", help="the message body: a file, or - for stdin (default)")

    outbox = home(sub.add_parser("outbox", help="your sent mail: queued, sending (progress), acknowledged"))
    outbox.add_argument("--json", action="store_true", help="one JSON object per line")
    inbox = home(sub.add_parser("inbox", help="list received mail"))
    inbox.add_argument("--json", action="store_true", help="one JSON object per line")
    read = home(sub.add_parser("read", help="print a received message"))
    read.add_argument("id", type=int, help="its number in `anonmail inbox`")
    read.add_argument("--raw", action="store_true",
                      help="write the body's bytes unchanged (for a file or a pipe; control characters included)")
    delete = home(sub.add_parser("delete", help="delete a received message for good"))
    delete.add_argument("id", type=int, help="its number in `anonmail inbox`")


# ---------------------------------------------------------------------- helpers

def _home(args: argparse.Namespace) -> Path:
    return args.home if args.home is not None else default_home()


def _open_store(args: argparse.Namespace) -> AgentStore:
    home = _home(args)
    if not (home / account.STORE_FILE).exists() or not (home / account.IDENTITY_FILE).exists():
        raise MailError(f"no anonmail user in {home}; run `anonmail init` first (or pass --home)",
                        reason="not_initialised")
    return AgentStore(home / account.STORE_FILE)


def _passphrase(args: argparse.Namespace, *, new: bool) -> str:
    if args.passphrase_file is not None:
        try:
            text = args.passphrase_file.read_text().rstrip("\n")
        except OSError as exc:
            raise ConfigError(f"cannot read --passphrase-file {args.passphrase_file}: {exc.strerror}") from None
    elif os.environ.get("ANONMAIL_PASSPHRASE"):
        text = os.environ["ANONMAIL_PASSPHRASE"]
    elif sys.stdin.isatty():
        text = getpass.getpass("passphrase: ")
        if new and getpass.getpass("again: ") != text:
            raise PassphraseError("the two passphrases differ; nothing was created")
    else:
        raise PassphraseError("no passphrase: use --passphrase-file FILE or set ANONMAIL_PASSPHRASE")
    if new and len(text) < 8:
        raise PassphraseError("choose a passphrase of at least 8 characters")
    return text


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
    except (OverflowError, OSError, ValueError):  # a sender's clock far outside what time_t holds
        return f"@{ts:.0f}"


def _short(address: str) -> str:
    user, _, provider = address.partition("@")
    return f"{user[:10]}…@{provider}"


# ---------------------------------------------------------------------- init

async def init_user(home: Path, router, *, pins: list[tuple[str, bytes]], threshold: int, epoch_seconds: int,
                    production: bool, provider: str | None, passphrase: str, kdf: str = "moderate",
                    rng: random.Random | None = None, progress=print, provider_key: bytes | None = None):
    """Create a user: fetch the consensus, pick a provider, register, seal the identity.

    With ``provider_key`` the consensus must bind the provider's name to that key. Returns
    (address, provider name, provider key to pin). On failure nothing is left behind but the directory.
    """
    from anonmail.agent.enroll import enroll
    from anonmail.core.keys import IdentityKey
    from anonmail.keyfiles import save_identity
    from anonmail.core.pki import epoch_at
    from anonmail.clients.directory import DirectoryClient

    now = time.time()
    progress("fetching the network's consensus from the directory authorities...")
    directory = DirectoryClient(router, pins, threshold, production=production, epoch_seconds=epoch_seconds)
    consensus = await directory.fetch(epoch_at(now, epoch_seconds))
    reachable = {p.name: next((a for a in p.addresses if router.can_reach(a)), None) for p in consensus.providers}
    reachable = {name: addr for name, addr in reachable.items() if addr is not None}
    if not reachable:
        raise MailError("the consensus lists no provider you can reach with your transports", reason="no_provider")
    if provider is None:
        provider = sorted(reachable)[(rng or random.SystemRandom()).randrange(len(reachable))]
    elif provider not in reachable:
        raise MailError(f"provider {provider!r} is not in the consensus (or not reachable); choose one of: "
                        f"{', '.join(sorted(reachable))}", reason="no_provider")
    listed = consensus.by_name(provider)
    assert listed is not None
    if provider_key is not None and listed.identity_key != provider_key:
        raise MailError(f"the consensus binds provider {provider!r} to another key than the one you gave; check it "
                        "with the provider's operator", reason="provider_key_mismatch")
    if provider_key is None:
        progress(f"pinning provider {provider}'s key from the consensus: {base64.b64encode(listed.identity_key).decode()}")
    identity = IdentityKey.generate()
    progress(f"registering at provider {provider}...")
    created = [home / account.STORE_FILE, home / (account.STORE_FILE + "-wal"), home / (account.STORE_FILE + "-shm")]
    try:
        store, address = await enroll(home, identity, provider, router, reachable[provider], now=int(now))
        store.close()
        limits = _KDF[kdf]
        kwargs = {} if limits is None else {"opslimit": limits[0], "memlimit": limits[1]}
        save_identity(home / account.IDENTITY_FILE, identity, passphrase, **kwargs)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return address, provider, listed.identity_key


def _provider_arg(text: str | None) -> tuple[str | None, bytes | None]:
    """``NAME`` or ``NAME=KEY`` (base64 Ed25519, 44 characters) from ``--provider``."""
    if text is None or "=" not in text.rstrip("="):
        return text, None
    name, key = text[:-45], text[-44:]
    if len(text) < 46 or text[-45] != "=":
        raise ConfigError(f"--provider {text!r}: expected NAME or NAME=KEY (the base64 key `anonmail provider init` printed)")
    try:
        return name, parse_public_key(key)
    except ValueError as exc:
        raise ConfigError(f"--provider {text!r}: {exc}") from None


def _cmd_init(args: argparse.Namespace) -> int:
    import anyio

    from anonmail.agent.config import load_agent_config, render_agent_config
    from anonmail.net.router import Router
    from anonmail.net.settings import build_transports

    home = _home(args)
    if (home / account.IDENTITY_FILE).exists():
        raise MailError(f"{home} already holds an anonmail user; use another --home for a second one",
                        reason="exists")
    if not args.authority:
        raise ConfigError("give at least one --authority ADDRESS=PUBKEY (ask the network's operators)")
    tor = args.tor or args.tor_control_port is not None
    i2p = args.i2p or args.sam_port is not None
    if not (tor or i2p or args.test_mode):
        raise ConfigError("choose how to reach the network: --tor and/or --i2p (--test-mode on private test networks)")
    threshold = args.threshold or pki.majority(len(args.authority))
    provider_name, provider_key = _provider_arg(args.provider)
    passphrase = _passphrase(args, new=True)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = render_agent_config(
        provider="pending", authorities=args.authority, threshold=threshold, epoch_seconds=args.epoch_seconds,
        test_mode=args.test_mode,
        tor_lines=[f"control_port = {args.tor_control_port or 9051}"] if tor else None,
        i2p_lines=['sam_host = "127.0.0.1"', f"sam_port = {args.sam_port or 7656}"] if i2p else None)
    config_path = home / account.CONFIG_FILE
    config_path.write_text(text)
    config = load_agent_config(home)
    pins = [(p.address, p.public_key) for p in config.authorities]

    async def main():
        transports = build_transports(home, tor=config.tor, i2p=config.i2p, test_mode=config.test_mode)
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            for transport in transports:
                await stack.enter_async_context(transport)
            router = Router(transports, production=config.production)
            return await init_user(home, router, pins=pins, threshold=threshold, epoch_seconds=args.epoch_seconds,
                                   production=config.production, provider=provider_name, passphrase=passphrase,
                                   kdf=args.kdf, progress=lambda s: print(s, file=sys.stderr), provider_key=provider_key)

    try:
        address, provider, pinned = anyio.run(main)
    except BaseException:
        config_path.unlink(missing_ok=True)
        raise
    config_path.write_text(text.replace('provider = "pending"', f'provider = "{provider}"', 1).replace(
        '# provider_key = ""', f'provider_key = "{base64.b64encode(pinned).decode()}"', 1))
    config = load_agent_config(home)
    from anonmail.bridge.cli import print_login
    from anonmail.bridge.credentials import create_login

    print(f"your address: {address}")
    print(f"home:         {home}")
    print("next:         run `anonmail agent` (keep it running), then `anonmail send --to ADDRESS`")
    print_login(str(address), create_login(home, str(address)), config.bridge)
    print("  (the agent serves them when [bridge] enabled = true in agent.toml, or run `anonmail bridge`)")
    return 0


# ---------------------------------------------------------------------- agent

def _cmd_agent(args: argparse.Namespace) -> int:
    import anyio

    from anonmail.agent.config import load_agent_config
    from anonmail.agent.service import Agent
    from anonmail.agent.status import keep_status, report_counters, write_agent_status
    from anonmail.keyfiles import load_identity
    from anonmail.clients.directory import DirectoryClient
    from anonmail.daemon.commands import run_daemon
    from anonmail.daemon.lifecycle import serve_until_signal
    from anonmail.net.router import Router
    from anonmail.net.settings import build_transports

    started_at = time.time()
    home = _home(args)
    store = _open_store(args)
    config = load_agent_config(home)
    identity = load_identity(home / account.IDENTITY_FILE, _passphrase(args, new=False))
    if store.meta("address") is not None and store.meta("provider") != config.settings.provider:
        raise ConfigError(f"{config.path}: agent.provider {config.settings.provider!r} is not the provider this user "
                          f"registered at ({store.meta('provider')!r})")

    async def main() -> None:
        from contextlib import AsyncExitStack

        transports = build_transports(home, tor=config.tor, i2p=config.i2p, test_mode=config.test_mode)
        async with AsyncExitStack() as stack:
            for transport in transports:
                await stack.enter_async_context(transport)
            router = Router(transports, production=config.production)
            directory = DirectoryClient(router, [(p.address, p.public_key) for p in config.authorities],
                                        config.threshold, production=config.production,
                                        epoch_seconds=config.epoch_seconds)
            agent = Agent(identity=identity, store=store, router=router, directory=directory, settings=config.settings)

            def started(_agent, tg) -> None:
                print("agent running; ^C to stop (`anonmail status` shows what it does)", file=sys.stderr, flush=True)
                tg.start_soon(report_counters, agent)

            # No address here: what a daemon prints ends up in logs (docs/agent.md, "Logs").
            print(f"agent: connecting to provider {config.settings.provider}...", file=sys.stderr, flush=True)
            async with anyio.create_task_group() as status_tg:
                await status_tg.start(functools.partial(keep_status, agent, home, started=started_at))
                if config.bridge.enabled:
                    from anonmail.bridge.server import serve_bridge

                    ports = await status_tg.start(functools.partial(serve_bridge, home, config.bridge,
                                                                    quota=config.outbox_quota))
                    print(f"bridge: SMTP on {ports.host}:{ports.smtp_port}, IMAP on {ports.host}:{ports.imap_port}",
                          file=sys.stderr, flush=True)
                await serve_until_signal(agent.run, log=log, on_started=started)
                status_tg.cancel_scope.cancel()
            write_agent_status(agent, home, started=started_at, running=False)

    try:
        return run_daemon(args.log_level, main)
    finally:
        store.close()


def _status_rows(status: dict) -> list[tuple[str, str]]:
    def n(key: str) -> int:
        return int(status.get(key) or 0)

    errors = str(n("errors"))
    if status.get("last_error"):
        errors += f" (last: {status['last_error']}, {_when(status.get('last_error_at'))})"
    rebound = status.get("provider_rebound")
    return [
        *([("directory", "[yellow]no consensus for this epoch yet: using the previous one (grace period)[/]")]
          if status.get("directory_grace") else []),
        *([("provider", f"[red]the consensus of epoch {rebound} binds {status.get('provider')} to another key than "
                        "the pinned one: refused; ask your provider's operator[/]")] if rebound is not None else []),
        ("connection", ("connected" if status.get("connected") else "[yellow]connecting[/]")
         + f" (since {_when(status.get('started'))})"),
        ("packets", f"{n('packets_sent')} sent ({n('loops_sent')} loops); {n('slots_missed')} slots missed"),
        ("loops", f"{n('loops_sent')} sent, {n('loops_returned')} back, {n('loops_lost')} lost"),
        *([("loop alarm", f"[red]{float(status.get('loop_loss_rate') or 0):.0%} of your recent loops were lost[/]"
                          f" (most through {', '.join(status.get('loop_suspects') or []) or 'no node in particular'}):"
                          " an active attack on you (n-1) or failing nodes; tell the network's operators")]
          if status.get("loop_alarm") else []),
        ("fetches", str(n("fetches"))),
        ("real/cover", f"{n('packets_real')} real, {n('packets_cover')} cover ({n('packets_drop')} drop); "
                       f"{n('retransmissions')} retransmissions; {n('entries_fetched')} entries fetched: "
                       f"{n('acks')} new ACKs, {n('fragments_received')} mail fragments "
                       f"(as of {_when(status.get('detail_as_of'))}: refreshed every 10 minutes)"),
        ("outbox", f"{n('outbox_queued')} waiting for ACKs, {n('outbox_acknowledged')} acknowledged, "
                   f"{n('outbox_failed')} failed (as above; `anonmail outbox` shows it now)"),
        ("inbox", f"{n('inbox')} messages ({n('delivered')} since start; as above, `anonmail inbox` shows it now)"),
        ("mailbox", ("[red]FULL at the provider[/]: it drops its oldest entries to take new mail"
                     if status.get("mailbox_full") else "ok")
         + (f"; {n('mailbox_evicted')} entries dropped since start" if n("mailbox_evicted") else "")),
        ("bad entries", f"{n('bad_entries')} dropped (did not open or parse), "
                        f"{n('partials_expired') + n('partials_evicted')} incomplete messages dropped"),
        ("errors", errors),
    ]


def _cmd_status(args: argparse.Namespace) -> int:
    """Print the running agent's status (table or JSON); exit 3 when no agent runs for this home."""
    from anonmail.daemon.commands import StatusView, show_status

    home = _home(args)
    view = StatusView(
        not_running=f"no agent is running for {home}",
        start_hint="anonmail agent" + (f" --home {home}" if args.home is not None else ""),
        title=lambda status: f"agent at provider {status.get('provider')}", rows=_status_rows,
    )
    return show_status(home, view, as_json=args.json)


# ---------------------------------------------------------------------- mail

def _cmd_whoami(args: argparse.Namespace) -> int:
    store = _open_store(args)
    if args.fingerprint:
        from anonmail.agent.invite_cli import format_fingerprint

        print(format_fingerprint(store.meta("address") or ""))
        return 0
    print(store.meta("address"))
    return 0


def _cmd_contact(args: argparse.Namespace) -> int:
    from anonmail.core.address import parse_address
    from anonmail.errors import AddressError, StoreError

    store = _open_store(args)
    if args.contact_command == "list":
        contacts = store.contacts_verified()
        if not contacts:
            print("no contacts yet; add one with `anonmail invite` / `anonmail accept CODE`, or "
                  "`anonmail contact add NAME ADDRESS`", file=sys.stderr)
        for name, address, verified in contacts:
            print(f"{name}\t{address}\t{'verified' if verified else 'unverified'}")
        return 0
    if args.contact_command == "verify":
        from anonmail.agent.invite_cli import verify_contact

        address = verify_contact(store, args.name, " ".join(args.fingerprint))
        print(f"{args.name} is verified: {address}")
        return 0
    if args.contact_command == "refresh":
        address = store.contact_address(args.name)
        if address is None:
            raise MailError(f"unknown contact {args.name!r}; see `anonmail contact list`", reason="unknown_contact")
        store.forget_contact_certs(parse_address(address).fingerprint)
        print(f"forgot {args.name}'s keys; the agent looks them up at their provider before the next message")
        return 0
    name = args.name
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name) or "@" in name:
        raise MailError(f"contact name {name!r}: use 1-64 letters, digits, '-', '_' or '.'", reason="bad_name")
    try:
        address = parse_address(args.address)
    except AddressError as exc:
        raise MailError(f"{exc}", reason="bad_address") from exc
    try:
        store.add_contact(name, str(address), now=time.time())
    except StoreError as exc:
        raise MailError(f"{exc}", reason="exists") from exc
    print(f"added {name}: {address}")
    print(f"unverified until you compare fingerprints: ask {name} to read `anonmail whoami --fingerprint` and run "
          f"`anonmail contact verify {name} FINGERPRINT` (or meet with `anonmail invite` next time)")
    return 0


def _cmd_send(args: argparse.Namespace) -> int:
    from anonmail.agent.config import load_agent_config
    from anonmail.agent.outbox import queue_mail

    store = _open_store(args)
    quota = load_agent_config(_home(args)).outbox_quota
    if args.file == "-":
        body = sys.stdin.buffer.read()
    else:
        try:
            body = Path(args.file).read_bytes()
        except OSError as exc:
            raise MailError(f"cannot read {args.file}: {exc.strerror}", reason="bad_file") from None
    message_id, recipient = queue_mail(store, to=args.to, subject=args.subject, body=body, now=time.time(),
                                       quota_bytes=quota)
    from anonmail.core.fragments import fragment_count

    print(f"queued {len(body)} bytes for {args.to} ({fragment_count(len(body))} packet(s)); "
          "`anonmail outbox` shows progress")
    return 0


def _bar(done: int, total: int, width: int = 12) -> str:
    filled = round(width * done / total) if total else width
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def _cmd_outbox(args: argparse.Namespace) -> int:
    store = _open_store(args)
    rows = [m for m in store.outbox() if m.kind != "keys"]
    if args.json:
        for m in rows:
            print(json.dumps({"id": m.id, "to": m.recipient, "subject": m.subject, "bytes": m.size,
                              "state": m.state, "packets": m.fragments, "acknowledged": m.acked,
                              "transmissions": m.transmissions, "queued_at": m.created_at,
                              "acknowledged_at": m.acked_at, "error": m.error}))
        return 0
    if not rows:
        print("outbox is empty", file=sys.stderr)
    for m in rows:
        to = store.contact_name(m.recipient) or _short(m.recipient)
        extra = f"  ({m.error})" if m.error else ""
        print(f"{m.id:>4}  {_when(m.created_at)}  {to:<20.20}  {m.subject[:30]:<30}  {m.state:<12} "
              f"{_bar(m.acked, m.fragments)}{extra}")
    return 0


def _cmd_inbox(args: argparse.Namespace) -> int:
    store = _open_store(args)
    rows = store.inbox()
    if args.json:
        for m in rows:
            print(json.dumps({"id": m.id, "from": m.sender, "subject": m.subject, "bytes": len(m.body),
                              "sent_at": m.sent_at, "received_at": m.received_at, "read": m.read}))
        return 0
    if not rows:
        print("inbox is empty", file=sys.stderr)
    for m in rows:
        sender = store.contact_name(m.sender) or _short(m.sender)
        flag = " " if m.read else "*"
        subject = for_terminal(m.subject)[:40]
        print(f"{m.id:>4}{flag} {_when(m.received_at)}  {for_terminal(sender):<20.20}  {subject:<40}  "
              f"{len(m.body)} bytes")
    return 0


def _inbox_message(store: AgentStore, ident: int):
    message = store.inbox_message(ident)
    if message is None:
        raise MailError(f"no message {ident} in your inbox; see `anonmail inbox`", reason="unknown_message")
    return message


def _cmd_read(args: argparse.Namespace) -> int:
    store = _open_store(args)
    m = _inbox_message(store, args.id)
    name = store.contact_name(m.sender)
    out = sys.stdout
    # Everything a sender wrote is escaped: a terminal must never act on a stranger's bytes.
    out.write(f"From:     {for_terminal(m.sender)}{f' ({for_terminal(name)})' if name else ''}\n")
    out.write(f"Subject:  {for_terminal(m.subject)}\nSent:     {_when(m.sent_at)}\n"
              f"Received: {_when(m.received_at)}\n\n")
    if args.raw:
        out.flush()
        sys.stdout.buffer.write(m.body if m.body.endswith(b"\n") else m.body + b"\n")
        sys.stdout.buffer.flush()
    else:
        text = body_for_terminal(m.body)
        out.write(text if text.endswith("\n") else text + "\n")
        out.flush()
    store.mark_read(m.id)
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    store = _open_store(args)
    _inbox_message(store, args.id)
    store.delete_inbox(args.id)
    print(f"deleted message {args.id}")
    return 0


def _cmd_invite(args: argparse.Namespace) -> int:
    from anonmail.agent.invite_cli import cmd_invite

    return cmd_invite(_open_store(args), args)


def _cmd_accept(args: argparse.Namespace) -> int:
    from anonmail.agent.invite_cli import cmd_accept

    return cmd_accept(_open_store(args), args)


USER_COMMANDS = {
    "invite": _cmd_invite, "accept": _cmd_accept,
    "init": _cmd_init, "agent": _cmd_agent, "status": _cmd_status, "whoami": _cmd_whoami, "contact": _cmd_contact, "send": _cmd_send,
    "outbox": _cmd_outbox, "inbox": _cmd_inbox, "read": _cmd_read, "delete": _cmd_delete,
}
