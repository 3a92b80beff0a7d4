"""The ``anonmail`` command line.

Commands so far: ``bench`` (packet-layer benchmark, DESIGN.md §8) and ``demo`` (a message
through every layer of an in-memory network). Errors are one line on stderr with a non-zero
exit code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from anonmail import __version__
from anonmail.errors import AnonmailError

__all__ = ["main", "build_parser", "run_command"]


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
        "--scale", type=_positive_float, default=1.0, help="multiply the number of iterations (default 1.0)"
    )
    bench.add_argument("--no-reference", action="store_true", help="skip timing unmodified sphinxmix")
    bench.add_argument("--no-mix", action="store_true", help="skip the mix node throughput (mix_pps is null)")

    demo = sub.add_parser("demo", help="run a whole network and send mail through every layer")
    demo.add_argument("--network", choices=["memory"], default="memory", help="which network (default memory)")
    demo.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    demo.add_argument("--messages", type=_positive_int, default=20, help="mails alice sends bob (default 20)")
    demo.add_argument(
        "--delay-mean", type=_non_negative_float, default=0.05, help="mean per-hop mix delay in seconds (default 0.05)"
    )
    demo.add_argument("--loss", type=_probability, default=0.0, help="each link drops packets with this probability")
    demo.add_argument("--kill-mix", type=_non_negative_int, default=0, help="mixes stopped mid-run and restarted later")
    demo.add_argument("--seed", type=int, default=None, help="seed for paths, delays and which mixes are killed")
    demo.add_argument(
        "--size", type=_non_negative_int, default=200 * 1024, help="bytes of the first (big) message (default 204800)"
    )
    demo.add_argument("--timeout", type=_positive_float, default=900.0, help="give up after this many seconds")

    from anonmail.agent.cli import add_user_parsers
    from anonmail.provider.cli import add_provider_parser

    add_user_parsers(sub)
    add_provider_parser(sub)

    testnet = sub.add_parser("testnet", help="private Tor and I2P networks on this machine (for tests and demos)")
    tsub = testnet.add_subparsers(dest="testnet_command", metavar="TESTNET_COMMAND")
    tor_check = tsub.add_parser(
        "tor-check", help="bring up a private Tor network, do an onion round trip, tear it down"
    )
    tor_check.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    tor_check.add_argument("--relays", type=_non_negative_int, default=4, help="relays besides the authority (default 4, at least 4)")
    i2p_check = tsub.add_parser(
        "i2p-check", help="bring up a private I2P network, do an I2P round trip, tear it down"
    )
    i2p_check.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    i2p_check.add_argument("--routers", type=_non_negative_int, default=3, help="i2pd routers (default 3, at least 2)")
    return parser


def _parse_number(text: str, kind: type, name: str) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {name}: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    return float(_parse_number(text, float, "a number"))


def _non_negative_int(text: str) -> int:
    return int(_parse_number(text, int, "an integer"))


def _positive_int(text: str) -> int:
    value = _parse_number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return int(value)


def _probability(text: str) -> float:
    value = _parse_number(text, float, "a number")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return float(value)


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def _cmd_bench(args: argparse.Namespace) -> int:
    from anonmail.bench import run_benchmarks

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
    from anonmail.demo import run_memory_demo

    options = dict(messages=args.messages, delay_mean=args.delay_mean, loss=args.loss, kill_mix=args.kill_mix,
                   seed=args.seed, big_bytes=args.size, timeout=args.timeout)
    if args.json:
        result = run_memory_demo(**options)
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    console.rule("[bold]anonmail demo: a whole network in memory")
    with Progress(TextColumn("delivered to bob"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("delivered", total=args.messages)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = run_memory_demo(**options, say=lambda text: console.print(f"- {text}"), progress=progress)
    verdict = "[green]every message delivered once and acknowledged[/]" if result["ok"] else "[red]FAILED[/]"
    console.rule(verdict)
    console.print(
        f"{result['delivered']}/{result['sent']} delivered, {result['duplicates']} duplicates; latency mean "
        f"{result['latency_mean_s']} s, p95 {result['latency_p95_s']} s at {args.delay_mean} s mean delay per mix; "
        f"{result['packets_real']} real and {result['packets_cover']} cover packets, "
        f"{result['retransmissions']} retransmissions"
    )
    return 0 if result["ok"] else 1


def _cmd_testnet(args: argparse.Namespace) -> int:
    """Run a private-network check; progress goes to stderr, the result to stdout."""
    if args.testnet_command is None:
        print("anonmail testnet: choose tor-check or i2p-check (see --help)", file=sys.stderr)
        return 2
    if args.testnet_command == "tor-check":
        from anonmail.testnet.tor import run_tor_check as check

        options = {"relays": args.relays}
    else:
        from anonmail.testnet.i2p import run_i2p_check as check

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``anonmail`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    from anonmail.agent.cli import USER_COMMANDS
    from anonmail.provider.cli import run_provider_command

    handlers = {"bench": _cmd_bench, "demo": _cmd_demo, "testnet": _cmd_testnet, "provider": run_provider_command,
                **USER_COMMANDS}
    handler = handlers[args.command]
    return run_command("anonmail", handler, args)


def run_command(prog: str, handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand: errors become one line on stderr (traceback with --debug), ^C exits 130."""
    try:
        return handler(args)
    except AnonmailError as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BaseExceptionGroup as group:
        # Errors raised inside task groups arrive wrapped; show ours as plain one-liners.
        leaves = _leaves(group)
        if args.debug or not all(isinstance(e, AnonmailError) for e in leaves):
            raise
        for error in leaves:
            print(f"{prog}: error: {error}", file=sys.stderr)
        return 1


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


if __name__ == "__main__":
    sys.exit(main())
