"""``anonmail testnet``: private Tor/I2P networks and whole anonmail networks on this machine.

``up`` starts a supervisor process (``up --foreground``, detached, logging to
``DIR/testnet.log``) that brings the network up and keeps it until SIGTERM; ``up`` itself shows
the supervisor's progress from ``DIR/testnet.json`` and returns once the network is ready.
``status`` prints every process with what its own status file says; ``down`` stops the
supervisor (which stops everything it started) and then kills, by PID, anything still alive.
``tor-check`` and ``i2p-check`` bring up only the private Tor or I2P network for one round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from anonmail.daemon.cli import EXIT_NOT_RUNNING as NOT_RUNNING
from anonmail.daemon.status import STATUS_FILE, liveness, pid_alive
from anonmail.daemon.logfmt import open_log_file
from anonmail.errors import TestnetError
from anonmail.testnet.network import Testnet
from anonmail.testnet.processes import STATE_FILE, check_fresh_directory, log_tail, read_json, read_state

__all__ = ["add_testnet_parser", "run_testnet_command"]

#: Seconds ``up`` waits for the supervisor to report the network ready.
UP_TIMEOUT = 900.0


def _count(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}")
        return value
    return parse


def add_testnet_parser(sub) -> None:
    """Register ``anonmail testnet`` and its subcommands."""
    testnet = sub.add_parser("testnet", help="private Tor/I2P networks and whole anonmail networks on this machine")
    tsub = testnet.add_subparsers(dest="testnet_command", metavar="TESTNET_COMMAND")

    up = tsub.add_parser("up", help="bring up authorities, mixes, providers and users over private Tor and/or I2P")
    up.add_argument("--dir", type=Path, required=True, help="directory for every node's files and logs")
    up.add_argument("--tor", action="store_true", help="nodes serve onion services on a private Tor network")
    up.add_argument("--i2p", action="store_true", help="nodes serve I2P destinations on a private I2P network")
    up.add_argument("--mixes-per-layer", type=_count(1, 8), default=2, help="mix nodes in each of 3 layers (default 2)")
    up.add_argument("--providers", type=_count(1, 8), default=2, help="providers (default 2)")
    up.add_argument("--users", type=_count(0, 8), default=2, help="users with a running agent (default 2)")
    up.add_argument("--epoch-seconds", type=_count(60, 86400), default=3600, help="epoch length (default 3600)")
    up.add_argument("--foreground", action="store_true",
                    help="run the network in this process until Ctrl-C (default: in the background)")

    status = tsub.add_parser("status", help="show every process of a running testnet")
    status.add_argument("--dir", type=Path, required=True)
    status.add_argument("--json", action="store_true", help="print one JSON object")

    down = tsub.add_parser("down", help="stop every process a testnet started")
    down.add_argument("--dir", type=Path, required=True)

    tor_check = tsub.add_parser(
        "tor-check", help="bring up a private Tor network, do an onion round trip, tear it down"
    )
    tor_check.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    tor_check.add_argument("--relays", type=_count(4, 32), default=4, help="relays besides the authority (default 4)")
    i2p_check = tsub.add_parser(
        "i2p-check", help="bring up a private I2P network, do an I2P round trip, tear it down"
    )
    i2p_check.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    i2p_check.add_argument("--routers", type=_count(2, 16), default=3, help="i2pd routers (default 3)")


def run_testnet_command(args: argparse.Namespace) -> int:
    """Dispatch ``anonmail testnet SUBCOMMAND``."""
    command = args.testnet_command
    if command is None:
        print("anonmail testnet: choose up, status, down, tor-check or i2p-check (see --help)", file=sys.stderr)
        return 2
    if command in ("tor-check", "i2p-check"):
        return _check(args)
    return {"up": _up, "status": _status, "down": _down}[command](args)


def _check(args: argparse.Namespace) -> int:
    if args.testnet_command == "tor-check":
        from anonmail.testnet.checks import run_tor_check as check

        options = {"relays": args.relays}
    else:
        from anonmail.testnet.checks import run_i2p_check as check

        options = {"routers": args.routers}

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    result = check(progress=None if args.json else progress, **options)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0 if result.get("ok") else 1


# ------------------------------------------------------------------------------------ up

def _up(args: argparse.Namespace) -> int:
    if not (args.tor or args.i2p):
        raise TestnetError("choose the networks: --tor, --i2p or both")
    directory = args.dir.resolve()
    state = read_state(directory)
    if state and state.get("phase") in ("starting", "ready") and pid_alive(state.get("supervisor_pid")):
        raise TestnetError(f"a testnet is already running in {directory} "
                           f"(`anonmail testnet down --dir {directory}` stops it)")
    check_fresh_directory(directory)
    if args.foreground:
        return _up_foreground(args, directory)
    return _up_background(args, directory)


def _up_foreground(args: argparse.Namespace, directory: Path) -> int:
    stop = threading.Event()
    ready = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()
        if not ready.is_set():  # abort the bring-up; up() stops whatever it started
            raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    net = Testnet(directory, tor=args.tor, i2p=args.i2p, mixes_per_layer=args.mixes_per_layer,
                  providers=args.providers, users=args.users, epoch_seconds=args.epoch_seconds,
                  progress=lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True))
    try:
        net.up()
        ready.set()
        print(f"[{time.strftime('%H:%M:%S')}] running; SIGINT/SIGTERM (or `anonmail testnet down --dir "
              f"{directory}`) stops it", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        net.down()
        print(f"[{time.strftime('%H:%M:%S')}] every process stopped", flush=True)
    return 0


def _up_background(args: argparse.Namespace, directory: Path) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STATE_FILE).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "anonmail.cli", "testnet", "up", "--foreground", "--dir", str(directory),
            "--mixes-per-layer", str(args.mixes_per_layer), "--providers", str(args.providers),
            "--users", str(args.users), "--epoch-seconds", str(args.epoch_seconds)]
    argv += (["--tor"] if args.tor else []) + (["--i2p"] if args.i2p else [])
    log_path = directory / "testnet.log"
    with open_log_file(log_path) as log:
        supervisor = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
    console.print(f"testnet supervisor started (pid {supervisor.pid}); log: {log_path}")
    shown = 0
    deadline = time.monotonic() + UP_TIMEOUT
    try:
        with console.status("starting…") as spinner:
            while True:
                state = read_state(directory) or {}
                steps = state.get("steps") or []
                for step in steps[shown:]:
                    console.print(f"[dim]{step['t']:>6.1f} s[/]  {step['text']}")
                shown = max(shown, len(steps))
                if steps:
                    spinner.update(f"{steps[-1]['text'][:70]}…")
                if state.get("phase") == "ready":
                    break
                if state.get("phase") == "failed" or supervisor.poll() is not None:
                    error = state.get("error") or log_tail(log_path, 5, sep=" / ")
                    supervisor.wait(timeout=60)
                    raise TestnetError(f"the testnet did not come up: {error}\n(log: {log_path})")
                if time.monotonic() > deadline:
                    supervisor.terminate()
                    raise TestnetError(f"the testnet was not ready after {UP_TIMEOUT:.0f} s (log: {log_path})")
                time.sleep(0.3)
    except KeyboardInterrupt:
        supervisor.terminate()
        supervisor.wait(timeout=60)
        raise
    console.print(f"[green]testnet ready[/] in {directory}")
    _print_table(console, state)
    users = state.get("users") or {}
    if users:
        first = sorted(users)[0]
        others = [u for u in sorted(users) if u != first]
        console.print(f"\nsend mail as {first}:  anonmail send --home {directory}/users/{first} "
                      f"--to {others[0] if others else first} --subject hello < message.txt")
    console.print(f"status: anonmail testnet status --dir {directory}\nstop:   anonmail testnet down --dir {directory}")
    return 0


# -------------------------------------------------------------------------------- status

def _process_rows(state: dict) -> list[dict]:
    """One row per process: its plan entry plus what its status file says now."""
    rows = []
    for proc in state.get("processes") or []:
        status = read_json(Path(proc["dir"]) / STATUS_FILE) or {}
        running, _age = liveness(status)  # the same test as `mixnode status`
        up = running and status.get("pid") == proc.get("pid")
        row = {"name": proc["name"], "role": proc["role"], "serves": proc.get("serves") or [],
               "pid": proc.get("pid"), "up": bool(up), "addresses": status.get("addresses") or []}
        if proc["role"] in ("mix", "provider"):
            dropped = status.get("dropped") or {}
            row.update(packets_in=status.get("received"), packets_out=status.get("forwarded"),
                       queue=status.get("queue_length"), dropped=sum(dropped.values()) if isinstance(dropped, dict)
                       else dropped, in_consensus=status.get("in_consensus"),
                       # Authenticated links: out to the next layer, in from the layer before.
                       links_out=sorted(n for n, link in (status.get("links") or {}).items()
                                        if isinstance(link, dict) and link.get("authenticated")),
                       links_in=sorted(status.get("inbound_links") or {}),
                       refused=status.get("refused") or {})
            if proc["role"] == "provider":
                row.update(stored=status.get("stored_entries"), accounts=status.get("accounts"))
        elif proc["role"] == "agent":
            row.update(packets_out=status.get("packets_sent"), packets_real=status.get("packets_real"),
                       packets_cover=status.get("packets_cover"), queue=status.get("outbox_queued"),
                       packets_in=status.get("entries_fetched"), inbox=status.get("inbox"),
                       provider=proc.get("provider"))
        elif proc["role"] == "authority":
            epochs = status.get("epochs") or {}
            current = epochs.get(str(status.get("epoch"))) or {}
            row.update(epoch=status.get("epoch"), consensus=current.get("consensus"),
                       signatures=current.get("signatures"), descriptors=current.get("descriptors"))
        rows.append(row)
    return rows


def _short(address: str) -> str:
    scheme, _, rest = address.partition("://")
    host = rest.split(".")[0]
    return f"{scheme}:{host[:10]}…"


def _print_table(console, state: dict) -> None:
    from rich.table import Table

    table = Table(title=f"testnet {state.get('directory')} ({state.get('phase')})")
    for column in ("name", "role", "serves", "addresses", "state", "in", "out", "queue", "notes"):
        table.add_column(column, justify="right" if column in ("in", "out", "queue") else "left")
    for row in _process_rows(state):
        def num(key: str) -> str:
            value = row.get(key)
            return "-" if value is None else str(value)
        notes = []
        if row["role"] == "authority":
            notes.append(f"epoch {row.get('epoch')}: " + (f"consensus, {row.get('signatures')} sigs, "
                                                          f"{row.get('descriptors')} nodes" if row.get("consensus")
                                                          else "no consensus yet"))
        elif row["role"] in ("mix", "provider"):
            if row.get("dropped"):
                notes.append(f"{row['dropped']} dropped")
            if row.get("in_consensus") is False:
                notes.append("not in consensus")
            notes.append(f"links in {','.join(row['links_in']) or '-'} out {','.join(row['links_out']) or '-'}")
            if row.get("refused"):
                notes.append(f"{sum(row['refused'].values())} refused")
            if row["role"] == "provider":
                notes.append(f"{num('accounts')} accounts, {num('stored')} stored")
        elif row["role"] == "agent":
            notes.append(f"@{row.get('provider')}; {num('packets_real')} real / {num('packets_cover')} cover; "
                         f"inbox {num('inbox')}")
        table.add_row(row["name"], row["role"], "+".join(row["serves"]) or "(client)",
                      "\n".join(_short(a) for a in row["addresses"]) or "-",
                      "[green]up[/]" if row["up"] else "[red]down[/]", num("packets_in"), num("packets_out"),
                      num("queue"), "; ".join(notes))
    daemons = state.get("daemons") or {}
    for name, pids in sorted(daemons.items()):
        alive = sum(1 for pid in pids if pid_alive(pid))
        table.add_row(name, "daemon", "-", "-", f"{alive}/{len(pids)} up", "-", "-", "-", "private network, 127.0.0.1")
    console.print(table)


def _status(args: argparse.Namespace) -> int:
    directory = args.dir.resolve()
    state = read_state(directory)
    if state is None:
        print(f"anonmail testnet: no testnet in {directory} (start one with `anonmail testnet up`)", file=sys.stderr)
        return NOT_RUNNING
    running = pid_alive(state.get("supervisor_pid")) and state.get("phase") in ("starting", "ready")
    if args.json:
        print(json.dumps({"phase": state.get("phase") if running else "stopped", "directory": str(directory),
                          "timings": state.get("timings"), "processes": _process_rows(state),
                          "daemons": state.get("daemons")}))
    else:
        from rich.console import Console

        if not running:
            state = dict(state, phase="stopped")
        _print_table(Console(), state)
    return 0 if running else NOT_RUNNING


# ---------------------------------------------------------------------------------- down

_OURS = frozenset({"tor", "i2pd", "anonmail", "mixnode"})


def _expected(pid: int, names: frozenset[str] = _OURS) -> bool:
    """Whether ``pid`` still runs one of our programs (not a recycled PID): judged by program name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [a.decode(errors="replace") for a in argv[:3]]
    if any(Path(w).name in names for w in words):
        return True
    return "-m" in words and any(w.split(".")[0] in names for w in words)  # python -m anonmail.cli


def _down(args: argparse.Namespace) -> int:
    directory = args.dir.resolve()
    state = read_state(directory)
    if state is None:
        print(f"anonmail testnet: no testnet in {directory}", file=sys.stderr)
        return 1
    supervisor = state.get("supervisor_pid")
    if pid_alive(supervisor) and _expected(supervisor, frozenset({"anonmail"})):
        print(f"stopping the testnet supervisor (pid {supervisor})…", file=sys.stderr)
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.2)
        state = read_state(directory) or state
    pids = [p["pid"] for p in state.get("processes") or [] if p.get("pid")]
    pids += [pid for group in (state.get("daemons") or {}).values() for pid in group]
    leftovers = [pid for pid in pids if pid_alive(pid) and _expected(pid)]
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    if pid_alive(supervisor) and _expected(supervisor, frozenset({"anonmail"})):
        os.kill(supervisor, signal.SIGKILL)
        leftovers.append(supervisor)
    if leftovers:
        print(f"killed {len(leftovers)} process(es) that outlived the supervisor: {leftovers}", file=sys.stderr)
    print(f"testnet in {directory} stopped: no process it started is running", file=sys.stderr)
    return 0
