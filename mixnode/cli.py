"""The ``mixnode`` command line: ``init``, ``run``, ``status`` and ``authority ...``.

The commands are :mod:`anonmail.daemon.commands`, shared with the authority, the provider and the
agent: errors are one line on stderr (``--debug`` shows the traceback), ``run`` stops cleanly on
SIGINT or SIGTERM, and the exit codes are those of :mod:`anonmail.daemon.cli`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from anonmail.core.pki import MIX_LAYERS
from anonmail.daemon.cli import dispatch
from anonmail.daemon.commands import (
    LOG_LEVELS,
    add_config_arguments,
    add_node_init_arguments,
    init_node,
    node_status,
    node_status_rows,
    run_node,
)
from mixnode import __version__

__all__ = ["main", "build_parser"]

CONFIG_NAME = "mixnode.toml"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mixnode``."""
    from mixnode.authority.cli import add_authority_parser

    parser = argparse.ArgumentParser(prog="mixnode", description="anonmail mix node and directory authority")
    parser.add_argument("--version", action="version", version=f"mixnode {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    init = sub.add_parser("init", help="create keys and a commented config file for a new mix node")
    add_node_init_arguments(init, role="node")
    init.add_argument("--name", required=True, help="node name in the consensus (a-z, 0-9, -)")
    init.add_argument("--layer", required=True, type=int, choices=range(1, MIX_LAYERS + 1), help="mix layer")

    run = sub.add_parser("run", help="run the mix node until SIGINT/SIGTERM")
    add_config_arguments(run, CONFIG_NAME)
    run.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)

    status = sub.add_parser("status", help="show a node's counters (works while it runs; exit 3 if it does not)")
    add_config_arguments(status, CONFIG_NAME)
    status.add_argument("--json", action="store_true", help="print one JSON object")

    add_authority_parser(sub)
    return parser


def _cmd_init(args: argparse.Namespace) -> int:
    from mixnode.config import load_mix_config, render_mix_config

    def render(*, threshold: int, test_mode: bool) -> str:
        return render_mix_config(
            name=args.name, layer=args.layer, authorities=args.authority, threshold=threshold,
            epoch_seconds=args.epoch_seconds, test_mode=test_mode, tcp_listen=args.tcp_listen, tor=args.tor,
            i2p=args.i2p,
        )

    return init_node(args, role="node", config_name=CONFIG_NAME, render=render, load=load_mix_config,
                     run_hint="mixnode run --config {config}")


def _cmd_run(args: argparse.Namespace) -> int:
    from mixnode.config import load_mix_config
    from mixnode.node import MixNode

    return run_node(args, config_name=CONFIG_NAME, load=load_mix_config, node=MixNode, log=logging.getLogger("mixnode"))


def _status_rows(status: dict) -> list[tuple[str, str]]:
    return [("layer", str(status.get("layer"))), *node_status_rows(status, [
        ("received", str(status.get("received", 0))),
        ("forwarded", str(status.get("forwarded", 0))),
        ("queue", f"{status.get('queue_length')} held / {status.get('queue_limit')}, "
                  f"{status.get('inbound_queue')} waiting to unwrap"),
        ("loops", f"{status.get('loops_sent')} sent, {status.get('loops_returned')} back, "
                  f"{status.get('loops_lost')} lost, {status.get('loops_pending')} pending"),
        *([("loop alarm", f"[red]{float(status.get('loop_loss_rate') or 0):.0%} of recent loops lost[/] (most through "
                          f"{', '.join(status.get('loop_suspects') or []) or 'no node in particular'}): "
                          "an active attack (n-1) or failing nodes")] if status.get("loop_alarm") else []),
    ])]


def _cmd_status(args: argparse.Namespace) -> int:
    from mixnode.config import load_mix_config

    return node_status(args, config_name=CONFIG_NAME, load=load_mix_config, what="mix node",
                       start="mixnode run --config {config}", rows=_status_rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mixnode`` console script."""
    from mixnode.authority.cli import run_authority_command

    handlers = {"init": _cmd_init, "run": _cmd_run, "status": _cmd_status, "authority": run_authority_command}
    return dispatch("mixnode", build_parser(), handlers, argv)


if __name__ == "__main__":
    sys.exit(main())
