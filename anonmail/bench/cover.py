"""What cover traffic costs one user: packets and bytes per second, mailbox entries, agent CPU.

``python -m anonmail.bench.cover [--json] [--seconds 300] [--seed 1]`` runs the in-memory network
(3 authorities, 3 layers × 2 mixes, providers alpha and beta) under trio's MockClock with one
idle user, alice@alpha, at the default published rates (λ_P, λ_L, mean delay, fetch schedule of
:data:`~anonmail.core.params.DEFAULT_PARAMS`). Mixes and providers send no loops of their own,
so every packet counted is caused by her. Over ``seconds`` of virtual time it counts:

* her link: packets per second she hands her provider (each one PACKET frame), and the fetch
  traffic (``fetch_batch`` entry frames per ``fetch_interval``, the same whatever arrived);
* the network: packets per second that nodes put on links because of her (every hop of her
  packets, their ACKs and the ACKs of her drops), and bytes;
* her mailbox: entries per second her provider stores for her, by kind;
* her agent's CPU: process time spent building packets (Sphinx headers and bodies, SURBs,
  sealing) and handling fetched entries, per second of traffic.

It only uses interfaces that existed before issue 15, so running this file against an older
checkout measures "before" (README, "Measured figures"). Nym's client defaults are printed
beside it for comparison: a Poisson stream of real-or-loop packets every 20 ms on average (50/s)
and loop cover every 200 ms (5/s), regular Sphinx packets of 2,413 bytes on the wire.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio

from anonmail.core import fragments as F
from anonmail.core import sphinx
from anonmail.core.mailproto import ENTRY_FRAGMENT, ENTRY_REPLY
from anonmail.core.params import DEFAULT_PARAMS
from anonmail.core.wire import FRAME_HEADER_BYTES, PACKET_BYTES

__all__ = ["measure_cover_cost", "NYM_DEFAULTS"]

FRAME_BYTES = FRAME_HEADER_BYTES + PACKET_BYTES
EPOCH = 3600
_T0 = 1_800_000_000 - 1_800_000_000 % EPOCH + 600
#: Nym client defaults (average delays 20 ms for the real-or-loop stream, 200 ms for loops) and its packet size.
NYM_DEFAULTS = {"packets_per_s": 50 + 5, "real_or_loop_per_s": 50, "loops_per_s": 5, "packet_bytes": 2413,
                "up_bytes_per_s": (50 + 5) * 2413}


def _wall() -> float:
    return _T0 + anyio.current_time()


class _CpuMeter:
    """Process time spent inside the wrapped functions (the agent's packet and entry work)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, name: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - start

        self._undo.append((owner, name, original))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


async def _run(tmp: Path, seconds: float, seed: int) -> dict[str, Any]:
    from anonmail.agent.enroll import enroll
    from anonmail.agent.service import Agent, AgentSettings
    from anonmail.clients.directory import DirectoryClient
    from anonmail.core.keys import IdentityKey
    from anonmail.testnet.memory import LOCAL_RULES_PARAMS, MemoryMixnet

    p = DEFAULT_PARAMS
    sends: Counter[str] = Counter()
    entries: Counter[int] = Counter()
    cpu = _CpuMeter()
    async with AsyncExitStack() as stack:
        net = await stack.enter_async_context(MemoryMixnet.start(
            tmp / "net", wall_clock=_wall, epoch_seconds=EPOCH, rng_seed=seed, params=LOCAL_RULES_PARAMS,
            mix_overrides={"lambda_loop": 0.0}, provider_overrides={"lambda_loop": 0.0}))
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        identity = IdentityKey.generate()
        router = net.client_router("alice")
        store, address = await enroll(tmp / "alice", identity, "alpha", router, net.provider_address("alpha"),
                                      now=int(_wall()), threads=False)
        stack.callback(store.close)
        for name, node in net.nodes.items():
            engine = getattr(node, "node", node)  # a provider composes the mix engine
            original = engine.send

            def counting(node_id, packet, _original=original, _name=name):
                sends[_name] += 1
                return _original(node_id, packet)

            engine.send = counting
        mailbox = net.providers["alpha"].store
        store_within_quota = mailbox.store_within_quota

        def recording(new, stored_at, quota):
            entries.update(e.kind for e in new if e.mailbox_id == address.mailbox_id)
            return store_within_quota(new, stored_at, quota)

        mailbox.store_within_quota = recording
        directory = DirectoryClient(router, net.pins, net.threshold, production=False, wall_clock=_wall,
                                    epoch_seconds=EPOCH)
        agent = Agent(identity=identity, store=store, router=router, directory=directory,
                      settings=AgentSettings(provider="alpha", lambda_payload=p.lambda_payload,
                                             lambda_loop=p.lambda_loop, delay_mean=p.delay_mean,
                                             fetch_interval=p.fetch_interval, threads=False),
                      rng=random.Random(seed), wall_clock=_wall)
        await tg.start(agent.run)
        for owner, name in ((sphinx, "build_forward"), (sphinx, "build_surb"), (F, "seal_fragment")):
            cpu.wrap(owner, name)
        cpu.wrap(agent.inbound, "handle_entries")
        try:
            start = dict(sends)
            stats0 = (agent.stats.packets_sent, agent.stats.fetches)
            entries.clear()
            await anyio.sleep(seconds)
            sent = agent.stats.packets_sent - stats0[0]
            fetches = agent.stats.fetches - stats0[1]
            hops = sum(sends.values()) - sum(start.values())
            batch = net.provider_configs["alpha"].fetch_batch
        finally:
            cpu.restore()
    return {
        "seconds": seconds,
        "params": {"lambda_payload": p.lambda_payload, "lambda_loop": p.lambda_loop, "delay_mean": p.delay_mean,
                   "fetch_interval": p.fetch_interval, "fetch_batch": batch},
        "user_packets_per_s": round(sent / seconds, 3),
        "user_up_bytes_per_s": round(sent * FRAME_BYTES / seconds),
        "user_down_bytes_per_s": round(fetches * batch * FRAME_BYTES / seconds),
        "network_packets_per_s": round(hops / seconds, 3),
        "network_bytes_per_s": round(hops * FRAME_BYTES / seconds),
        "mailbox_entries_per_s": {"fragment": round(entries[ENTRY_FRAGMENT] / seconds, 3),
                                  "reply": round(entries[ENTRY_REPLY] / seconds, 3)},
        "agent_cpu_ms_per_s": round(1000 * cpu.seconds / seconds, 2),
        "nym_defaults": NYM_DEFAULTS,
    }


def measure_cover_cost(seconds: float = 300.0, seed: int = 1) -> dict[str, Any]:
    """Run one idle user on the in-memory network for ``seconds`` of virtual time; return her costs."""
    import trio.testing

    with tempfile.TemporaryDirectory(prefix="anonmail-cover-") as tmp:
        return anyio.run(_run, Path(tmp), seconds, seed, backend="trio",
                         backend_options={"clock": trio.testing.MockClock(autojump_threshold=0)})


def main(argv: list[str] | None = None) -> int:
    """Print what cover traffic costs one user (one JSON object with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m anonmail.bench.cover", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--seconds", type=float, default=300.0, help="virtual seconds of traffic (default 300)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    result = measure_cover_cost(args.seconds, args.seed)
    if args.json:
        print(json.dumps(result))
        return 0
    nym = result["nym_defaults"]
    rows = [
        ("her packets/s (up)", result["user_packets_per_s"], nym["packets_per_s"]),
        ("her bytes/s (up)", result["user_up_bytes_per_s"], nym["up_bytes_per_s"]),
        ("her fetch bytes/s (down)", result["user_down_bytes_per_s"], "-"),
        ("network packets/s for her", result["network_packets_per_s"], "-"),
        ("mailbox entries/s (fragment, reply)",
         f"{result['mailbox_entries_per_s']['fragment']}, {result['mailbox_entries_per_s']['reply']}", "-"),
        ("agent CPU ms/s", result["agent_cpu_ms_per_s"], "-"),
    ]
    print(f"one idle user, {result['seconds']:g} virtual s, {result['params']}")
    for what, ours, theirs in rows:
        print(f"  {what:<38} {ours!s:>14}   Nym defaults: {theirs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
