"""The ``anonmail`` command line: the user's commands, ``provider``, ``testnet``, ``bench`` and ``demo``.

It only builds the parser and dispatches; the commands live with their services (``agent``,
``provider``) and tools (``testnet``, ``bench``, ``demo``). Nothing imports this module (it is
the top of the layers in docs/design.md). Errors are one line on stderr; ``--debug`` shows the
traceback; exit codes are those of :mod:`anonmail.daemon.cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from anonmail import __version__
from anonmail.daemon.cli import (
    dispatch,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from anonmail.errors import AnonmailError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``anonmail`` (also used by the docs test)."""
    parser = argparse.ArgumentParser(
        prog="anonmail", description="Metadata-private mail over a mix network reachable only through Tor and I2P."
    )
    parser.add_argument("--version", action="version", version=f"anonmail {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = sub.add_parser("bench", help="benchmark the packet layer")
    bench.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    bench.add_argument(
        "--scale", type=positive_float, default=1.0, help="multiply the number of iterations (default 1.0)"
    )
    bench.add_argument("--no-reference", action="store_true", help="skip timing unmodified sphinxmix")
    bench.add_argument("--no-mix", action="store_true", help="skip the mix node throughput (mix_pps is null)")

    demo = sub.add_parser("demo", help="run a whole network and send mail through every layer")
    demo.add_argument("--network", choices=["memory", "tor", "i2p", "both"], default="memory",
                      help="memory: one process, in-memory links (default); tor/i2p/both: separate processes "
                           "serving only onion services and/or I2P destinations on private networks")
    demo.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    demo.add_argument("--messages", type=positive_int, default=20, help="mails alice sends bob (default 20)")
    demo.add_argument(
        "--delay-mean", type=non_negative_float, default=None,
        help="mean per-hop mix delay in seconds (default 0.05 in memory; the agents' default 0.5 otherwise)"
    )
    demo.add_argument("--loss", type=probability, default=0.0, help="each link drops packets with this probability")
    demo.add_argument("--kill-mix", type=non_negative_int, default=0, help="mixes stopped mid-run and restarted later")
    demo.add_argument("--seed", type=int, default=None, help="seed for paths, delays and which mixes are killed")
    demo.add_argument(
        "--size", type=non_negative_int, default=200 * 1024, help="bytes of the first (big) message (default 204800)"
    )
    demo.add_argument("--timeout", type=positive_float, default=900.0, help="give up after this many seconds")
    demo.add_argument("--dir", type=Path, default=None,
                      help="tor/i2p/both: keep every node's files and logs here (default: a temporary directory)")

    from anonmail.agent.cli import add_user_parsers
    from anonmail.provider.cli import add_provider_parser

    from anonmail.bridge.cli import add_bridge_parser

    add_user_parsers(sub)
    add_bridge_parser(sub)
    add_provider_parser(sub)

    from anonmail.testnet.cli import add_testnet_parser

    add_testnet_parser(sub)
    return parser


def _cmd_bench(args: argparse.Namespace) -> int:
    from anonmail.bench.packet import run_benchmarks

    if args.json:
        print(json.dumps(run_benchmarks(scale=args.scale, reference=not args.no_reference, mix=not args.no_mix)))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    with console.status("benchmarking…") as status:
        result = run_benchmarks(
            scale=args.scale, reference=not args.no_reference, mix=not args.no_mix,
            progress=lambda m: status.update(m + "…"),
        )
    table = Table(title=f"anonmail {__version__} packet layer")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("X25519 scalar multiplication", f"{result['x25519_us']:.1f} µs"),
        ("Sphinx packet creation, 5 hops", f"{result['sphinx_create_us']:.1f} µs"),
        ("Sphinx processing, one hop", f"{result['sphinx_process_us']:.1f} µs"),
        ("  … over two X25519 (target ≤ 2.0)", f"{result['process_over_2x25519']:.2f}×"),
        ("floor: 1e6 / (2 × X25519)", f"{result['floor_pps']:,.0f} packets/s"),
        ("mix node throughput (one process)", "skipped" if result["mix_pps"] is None else f"{result['mix_pps']:,.0f} packets/s"),
        ("  … over the floor (target ≥ 0.4)", "-" if result["mix_pps"] is None else f"{result['mix_pps'] / result['floor_pps']:.2f}×"),
        ("packet size", f"{result['packet_bytes']:,} bytes"),
        ("Sphinx payload per packet", f"{result['payload_bytes']:,} bytes"),
        ("message data per packet", f"{result['fragment_data_bytes']:,} bytes"),
    ]
    if result["sphinxmix_process_us"] is not None:
        rows.insert(3, ("unmodified sphinxmix, one hop", f"{result['sphinxmix_process_us']:.1f} µs"))
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.network != "memory":
        return _cmd_network_demo(args)
    from anonmail.testnet.memory_demo import run_memory_demo

    delay_mean = 0.05 if args.delay_mean is None else args.delay_mean
    options = dict(messages=args.messages, delay_mean=delay_mean, loss=args.loss, kill_mix=args.kill_mix,
                   seed=args.seed, big_bytes=args.size, timeout=args.timeout)
    if args.json:
        result = run_memory_demo(**options)
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    from rich.console import Console

    console = Console(stderr=True)
    console.rule("[bold]anonmail demo: a whole network in memory")
    with _delivery_bar(console, args.messages) as progress:
        result = run_memory_demo(**options, say=lambda text: console.print(f"- {text}"), progress=progress)
    verdict = "[green]every message delivered once and acknowledged[/]" if result["ok"] else "[red]FAILED[/]"
    console.rule(verdict)
    console.print(
        f"{result['delivered']}/{result['sent']} delivered, {result['duplicates']} duplicates; latency mean "
        f"{result['latency_mean_s']} s, p95 {result['latency_p95_s']} s at {delay_mean} s mean delay per mix; "
        f"{result['packets_real']} real and {result['packets_cover']} cover packets, "
        f"{result['retransmissions']} retransmissions"
    )
    return 0 if result["ok"] else 1


class _delivery_bar:
    """A rich progress bar of messages delivered to Bob; the instance is the progress callback."""

    def __init__(self, console, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("delivered to bob"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console, transient=True)
        self.task = self.bar.add_task("delivered", total=total)

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)


def _cmd_network_demo(args: argparse.Namespace) -> int:
    import time

    from anonmail.testnet.demo import run_network_demo

    if args.loss or args.kill_mix or args.seed is not None:
        raise AnonmailError("--loss, --kill-mix and --seed apply to --network memory only "
                            "(on real networks, the fault tests in tests/integration kill real processes)")
    options = dict(messages=args.messages, big_bytes=args.size, timeout=args.timeout, directory=args.dir,
                   keep=args.dir is not None,
                   agent_settings={} if args.delay_mean is None else {"delay_mean": args.delay_mean})
    if args.json:
        result = run_network_demo(args.network, **options)
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    from rich.console import Console

    console = Console(stderr=True)
    over = {"tor": "a private Tor network", "i2p": "a private I2P network", "both": "private Tor and I2P networks"}
    console.rule(f"[bold]anonmail demo: mail through three mix layers over {over[args.network]}")
    console.print("Every node below is its own process and serves only onion services / I2P destinations on "
                  "127.0.0.1; they are set up with the same commands an operator uses (see README).")
    start = time.monotonic()

    def say(text: str) -> None:
        console.print(f"[dim]{time.monotonic() - start:6.1f} s[/]  {text}")

    with _delivery_bar(console, args.messages) as progress:
        result = run_network_demo(args.network, **options, say=say, progress=progress)
    verdict = "[green]every message delivered once and acknowledged[/]" if result["ok"] else "[red]FAILED[/]"
    console.rule(verdict)
    console.print(
        f"{result.get('delivered')}/{result.get('sent')} delivered to bob, {result.get('duplicates')} duplicates, "
        f"reply {'arrived' if result.get('reply_delivered') else 'missing'}; latency mean "
        f"{result.get('latency_mean_s')} s (p95 {result.get('latency_p95_s')} s; the "
        f"{(result.get('big_bytes') or 0) // 1024} KiB message {result.get('latency_big_s')} s); "
        f"of that, {result.get('mixing_delay_expected_s')} s is mixing delay chosen by alice and "
        f"{result.get('fetch_wait_expected_s')} s the wait for bob's next fetch (expected)"
    )
    console.print(f"{result.get('packets_real')} real and {result.get('packets_cover')} cover packets, "
                  f"{result.get('retransmissions')} retransmissions; network up in {result.get('bring_up_s')} s, "
                  f"whole demo {result.get('wall_s')} s")
    if result.get("directory"):
        console.print(f"files and logs kept in {result['directory']}")
    return 0 if result["ok"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``anonmail`` console script."""
    from anonmail.agent.cli import USER_COMMANDS
    from anonmail.bridge.cli import BRIDGE_COMMANDS
    from anonmail.provider.cli import run_provider_command
    from anonmail.testnet.cli import run_testnet_command

    handlers = {"bench": _cmd_bench, "demo": _cmd_demo, "testnet": run_testnet_command, "provider": run_provider_command,
                **USER_COMMANDS, **BRIDGE_COMMANDS}
    return dispatch("anonmail", build_parser(), handlers, argv)


if __name__ == "__main__":
    sys.exit(main())
