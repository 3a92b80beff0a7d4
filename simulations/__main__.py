"""``python -m simulations run [--json] [options]``, ``sweep CONFIG --out DIR`` and ``bench``.

Bad input (an unknown option, a negative rate, a malformed or unknown key in a sweep config) is
one line on stderr naming the option, key or file, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from anonmail.errors import AnonmailError
from simulations.model import CHOICES, DEFAULTS, SimConfig

__all__ = ["main", "build_parser"]

_HELP = {
    "clients": "number of clients (users)",
    "providers": "number of providers; client i uses provider i mod P",
    "layers": "mix layers",
    "mixes_per_layer": "mixes in each layer",
    "delay_mean": "mean per-hop mix delay in seconds (1/mu)",
    "lambda_payload": "payload slots per second per client (0: real messages leave at once, no payload stream)",
    "lambda_loop": "loop cover per second per client",
    "lambda_drop": "drop cover per second per client (its own stream)",
    "lambda_mix": "loop cover per second per mix",
    "real_rate": "real messages written per second per client",
    "fragments": "packets per real message",
    "duration": "seconds of virtual time during which real messages are written",
    "warmup": "entropy targets are sent after this many seconds (default duration/5)",
    "drain": "cover keeps flowing this long after --duration (default about 12 path delays)",
    "compromised": "fraction of mixes the adversary runs and sees through",
    "link_latency": "fixed delay per link, seconds",
    "provider_delay": "mean Exp delay at forwarding providers, seconds (default 0)",
    "entropy_samples": "real messages whose anonymity is traced (the first ones after --warmup)",
    "seed": "seed of every random draw",
    "link_model": "per-link latency drawn from the fit to the private Tor or I2P testnet",
    "fetch_interval": "seconds between a client's mailbox fetches (0: a message counts when stored)",
    "fetch_batch": "entries per fetch (0: all)",
    "burst_messages": "client 0 queues this many messages to client 1 at t=0 (the demos' workload)",
    "burst_big_fragments": "fragments of one big message in the burst (0: none)",
    "burst_big_last": "the burst's big message is queued last (default first)",
    "poll_interval": "the agent picks up mail `anonmail send` queued every this many seconds (0: at once; agent: 1)",
    "burst_interval": "seconds between queueing the burst's messages (0: all at t=0; the Tor demo's sends: 1.6)",
    "acks": "acknowledge every stored fragment through a SURB; resend those whose ACK is overdue",
    "ack_timeout": "seconds before an unacknowledged fragment is resent (0: the agent's automatic timeout)",
    "loss": "probability that a packet is lost on each link",
    "cover_scheme": "acks: every client packet returns an ACK as the agent's do (issue 15): real mail and drop "
                    "cover to the sender's mailbox, a loop's to a random one, each held Exp(delay-mean) at the "
                    "answering provider; legacy: drop cover is discarded unanswered, nothing else is answered "
                    "unless --acks",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The CLI: options mirror :class:`SimConfig` fields (underscores become dashes)."""
    parser = _Parser(prog="python -m simulations", description="Simulate an anonmail mix network.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="simulate one network and print its metrics")
    run.add_argument("--json", action="store_true", help="print one JSON object (fields: docs/simulator.md)")
    run.add_argument("--crypto", action="store_true", help="carry real Sphinx packets (small networks)")
    run.add_argument("--max-memory-gb", type=float, default=8.0,
                     help="refuse a run whose estimated peak memory is larger (default 8)")
    for f in fields(SimConfig):
        if f.name == "crypto":
            continue
        default = getattr(DEFAULTS, f.name)
        if f.type == "bool":
            run.add_argument(f"--{f.name.replace('_', '-')}", action="store_true", dest=f.name,
                             help=_HELP.get(f.name, f.name))
            continue
        if f.type == "str":
            run.add_argument(f"--{f.name.replace('_', '-')}", choices=list(CHOICES[f.name]), default=default,
                             dest=f.name, help=f"{_HELP.get(f.name, f.name)} (default {default})")
            continue
        kind = int if f.type == "int" else float
        run.add_argument(
            f"--{f.name.replace('_', '-')}", type=kind, default=default, dest=f.name,
            help=f"{_HELP.get(f.name, f.name)} (default {default})",
        )
    run.add_argument("--cover-acks", action="store_const", const="acks", dest="cover_scheme",
                     help="the same as --cover-scheme acks (kept for old command lines; acks is the default)")
    sweep = sub.add_parser("sweep", help="run a grid of parameters from a TOML file, write CSV, JSON and plots")
    sweep.add_argument("config", help="sweep TOML file (see simulations/example.toml)")
    sweep.add_argument("--out", required=True, help="output directory")
    sweep.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="Dask scheduler to run on, e.g. tcp://10.0.0.5:8786 (default: a local cluster)")
    sweep.add_argument("--workers", type=int, default=None,
                       help="processes of the local cluster (default: cores, at most 2)")
    sweep.add_argument("--no-plots", action="store_true", help="write CSV and JSON only")
    bench = sub.add_parser("bench", help="time this engine against the frozen pre-speed-up one, side by side")
    bench.add_argument("--preset", action="append", choices=["defaults", "10k", "acks"],
                       help="config to time (repeatable; default: defaults and 10k, both on the legacy cover "
                            "scheme the reference knows; acks: today's defaults, pure against compiled loop)")
    bench.add_argument("--no-pure", action="store_true", help="skip the pure-Python loop when the compiled one is built")
    bench.add_argument("--json", action="store_true", help="print the rows as JSON")
    return parser


def _human(summary: dict) -> str:
    def f(value, unit="", digits=3):
        return "n/a" if value is None else f"{value:.{digits}f}{unit}"

    cfg = summary["config"]
    lines = [
        f"network: {cfg['clients']} clients, {cfg['providers']} providers, "
        f"{cfg['layers']} x {cfg['mixes_per_layer']} mixes ({summary['compromised_mixes']} compromised), "
        f"mean delay {cfg['delay_mean']} s per hop, {summary['mode']} packets, cover scheme {cfg['cover_scheme']}",
        f"messages: {summary['messages_delivered']} of {summary['messages_sent']} delivered; "
        f"cover/real {f(summary['cover_ratio'], digits=2)}",
        f"latency: mean {f(summary['latency_mean_s'], ' s')}, p50 {f(summary['latency_p50_s'], ' s')}, "
        f"p95 {f(summary['latency_p95_s'], ' s')}, p99 {f(summary['latency_p99_s'], ' s')}",
        f"anonymity ({summary['entropy_targets']} traced messages): entropy mean "
        f"{f(summary['entropy_bits_mean'], ' bits', 2)} (p5 {f(summary['entropy_bits_p5'], '', 2)}, "
        f"p95 {f(summary['entropy_bits_p95'], '', 2)}); over recipients "
        f"{f(summary['recipient_entropy_bits_mean'], ' bits', 2)} of at most "
        f"{f(summary['recipient_entropy_bound_bits'], '', 2)}",
        f"linking: the adversary names the right recipient "
        f"{f(None if summary['linking_success_rate'] is None else 100 * summary['linking_success_rate'], ' %', 1)}"
        " of the time",
        f"engine: {summary['sim_events']:,} events in {summary['wall_s']:.2f} s "
        f"({summary['events_per_s'] or 0:,} events/s)",
    ]
    return "\n".join(lines)


def _say_cost_up_front(config: SimConfig, max_memory_gb: float) -> None:
    """For a big run, print what it will need on stderr; refuse it if that is more memory than allowed."""
    from anonmail.errors import ConfigError
    from simulations.estimate import estimate, measure_speed

    cost = estimate(config)
    if cost.peak_bytes > max_memory_gb * 2**30:
        raise ConfigError(f"this run needs {cost.describe()}, more than --max-memory-gb {max_memory_gb:g}")
    if cost.events > 50e6:
        print(f"python -m simulations: {cost.describe(measure_speed(config))}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            from simulations.metrics import to_json
            from simulations.runner import run_config

            values = {f.name: getattr(args, f.name) for f in fields(SimConfig)}
            config = SimConfig(**values).checked()
            _say_cost_up_front(config, args.max_memory_gb)
            summary = run_config(config)
            print(to_json(summary) if args.json else _human(summary))
            return 0
        if args.command == "bench":
            import json

            from simulations.bench import bench, format_table

            rows = bench(args.preset or ["defaults", "10k"], include_pure=not args.no_pure)
            print(json.dumps(rows, indent=2) if args.json else format_table(rows))
            return 0 if all(r["same_json_as_reference"] for r in rows) else 1
        from simulations.sweep import run_sweep

        run_sweep(args.config, args.out, scheduler=args.scheduler, workers=args.workers, plots=not args.no_plots)
        return 0
    except AnonmailError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
