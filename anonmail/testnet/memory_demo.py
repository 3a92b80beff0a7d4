"""``anonmail demo --network memory``: a whole anonmail network in one process, mail from Alice to Bob.

Real nodes, real code paths: 3 directory authorities, 3 layers × 2 mix nodes and 2 providers
(:class:`anonmail.testnet.memory.MemoryMixnet`), and two user agents (:class:`anonmail.agent.service.Agent`)
with their own SQLite stores, all over the in-memory transport in real time. Alice (at provider
``alpha``) sends ``messages`` mails to Bob (at ``beta``), the first one ``big_bytes`` long; Bob
answers the first. Options make the network hostile: ``loss`` drops each packet on every link
with that probability, ``kill_mix`` stops that many mixes mid-run and restarts them later.

The result (:func:`run_memory_demo`) is the JSON the CLI prints: ``sent``, ``delivered``,
``duplicates`` (messages shown to Bob more than once: must be 0), latencies from queueing at
Alice to arrival in Bob's inbox, and the packets both agents emitted (real and cover).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from anonmail.agent.enroll import enroll
from anonmail.agent.outbox import queue_mail
from anonmail.agent.service import Agent, AgentSettings
from anonmail.clients.directory import DirectoryClient
from anonmail.core.keys import IdentityKey
from anonmail.core.params import NetworkParams
from anonmail.core.stats import percentile
from anonmail.testnet.memory import MemoryMixnet

__all__ = ["run_memory_demo", "DEMO_DEFAULTS"]

DEMO_DEFAULTS = {
    "messages": 20,
    "delay_mean": 0.05,
    "loss": 0.0,
    "kill_mix": 0,
    "big_bytes": 200 * 1024,
    "lambda_payload": 25.0,
    "lambda_loop": 2.0,
    "fetch_interval": 0.5,
    "timeout": 900.0,
}


async def _user(net, stack, tg, name: str, provider: str, settings, seed: int):
    identity = IdentityKey.generate()
    router = net.client_router(name)
    store, _address = await enroll(net.data_dir / "users" / name, identity, provider, router,
                                   net.provider_address(provider), now=int(time.time()))
    stack.callback(store.close)
    directory = DirectoryClient(router, net.pins, net.threshold, production=False, epoch_seconds=net.epoch_seconds)
    agent = Agent(identity=identity, store=store, router=router, directory=directory, settings=settings,
                  rng=random.Random(seed))
    await tg.start(agent.run)
    return agent


async def _demo(opts: dict[str, Any], say: Callable[[str], None], progress: Callable[[int, int], None],
                data_dir: Path) -> dict[str, Any]:
    seed = opts["seed"]
    rng = random.Random(seed)
    t_start = time.monotonic()
    async with AsyncExitStack() as stack:
        say("starting 3 directory authorities, 3 mix layers x 2 mix nodes and providers alpha and beta (in memory)")
        net = await stack.enter_async_context(MemoryMixnet.start(
            data_dir / "net", loss=opts["loss"], rng_seed=seed, mix_overrides={"lambda_loop": 0.5},
            provider_overrides={"lambda_loop": 0.2}, params=NetworkParams(  # what every consensus publishes
                lambda_payload=opts["lambda_payload"], lambda_loop=opts["lambda_loop"], mix_lambda_loop=0.2,
                delay_mean=opts["delay_mean"], max_delay=min(86400.0, max(30.0, 20 * opts["delay_mean"])),
                fetch_interval=opts["fetch_interval"])))
        say(f"network up in {time.monotonic() - t_start:.1f} s: the consensus lists "
            f"{len(net.mixes)} mixes and {len(net.providers)} providers, signed by 2 of 3 authorities")
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        base = AgentSettings(provider="alpha", lambda_payload=opts["lambda_payload"], lambda_loop=opts["lambda_loop"],
                             fetch_interval=opts["fetch_interval"], delay_mean=opts["delay_mean"],
                             transport_slack=2.0, poll_interval=0.25, threads=False, link_loss=opts["loss"])
        alice = await _user(net, stack, tg, "alice", "alpha", base, rng.getrandbits(32))
        bob = await _user(net, stack, tg, "bob", "beta", replace(base, provider="beta"), rng.getrandbits(32))
        say(f"alice is {alice.address}")
        say(f"bob   is {bob.address}")
        say(f"both agents send {opts['lambda_payload']:g} packets/s (mail or drop cover) and "
            f"{opts['lambda_loop']:g} loops/s; mixes hold each packet Exp({opts['delay_mean']:g} s)")
        alice.store.add_contact("bob", str(bob.address), now=time.time())
        bob.store.add_contact("alice", str(alice.address), now=time.time())
        body_rng = random.Random(rng.getrandbits(64))
        sent: dict[bytes, float] = {}
        for i in range(opts["messages"]):
            if i == 0 and opts["big_bytes"]:
                body = body_rng.randbytes(opts["big_bytes"])
                subject = f"attachment ({opts['big_bytes'] // 1024} KiB)"
            else:
                body = f"message {i} from alice: {body_rng.getrandbits(64):016x}\n".encode()
                subject = f"note {i}"
            message_id, _ = queue_mail(alice.store, to="bob", subject=subject, body=body, now=time.time())
            sent[message_id] = time.time()
        total_packets = sum(m.fragments for m in alice.store.outbox())
        say(f"alice queued {len(sent)} messages ({total_packets} packets); they leave in her Poisson slots")

        killed: list[str] = []
        restarted = False
        deadline = time.monotonic() + opts["timeout"]
        kill_at = max(1, len(sent) // 3)

        def delivered_ids() -> list[bytes]:
            return [m.message_id for m in bob.store.inbox() if m.message_id in sent]

        reply_id = None
        while time.monotonic() < deadline:
            got = delivered_ids()
            acked = sum(1 for m in alice.store.outbox() if m.state == "acknowledged" and m.message_id in sent)
            progress(len(set(got)), len(sent))
            if opts["kill_mix"] and not killed and len(set(got)) >= kill_at:
                names = sorted(net.mixes)
                killed = rng.sample(names, min(opts["kill_mix"], len(names)))
                for name in killed:
                    await net.kill_mix(name)
                killed_at = time.monotonic()
                say(f"killed mix node(s) {', '.join(killed)}: the packets they held are lost; "
                    "alice retransmits what is not acknowledged")
            if killed and not restarted and time.monotonic() - killed_at > 5.0:
                for name in killed:
                    await net.restart_mix(name)
                restarted = True
                say(f"restarted {', '.join(killed)} with the same keys and replay tags")
            if reply_id is None and got:
                first = next(iter(sent))
                if first in got:
                    reply_id, _ = queue_mail(bob.store, to="alice", subject="re: attachment", body=b"got it, thanks!\n",
                                             now=time.time())
                    say("bob got the attachment and answers alice")
            done = len(set(got)) == len(sent) and acked == len(sent) and (not opts["kill_mix"] or restarted)
            reply_done = reply_id is not None and any(m.message_id == reply_id for m in alice.store.inbox())
            if done and reply_done:
                break
            await anyio.sleep(0.25)
        # Late copies of retransmitted fragments may still arrive: they must be merged, not shown.
        await anyio.sleep(min(5.0, 3 * opts["fetch_interval"] + 1))
        inbox = [m for m in bob.store.inbox() if m.message_id in sent]
        latencies = [m.received_at - sent[m.message_id] for m in inbox]
        stats = [alice.stats, bob.stats]
        reply_delivered = reply_id is not None and any(m.message_id == reply_id for m in alice.store.inbox())
        acked = sum(1 for m in alice.store.outbox() if m.state == "acknowledged" and m.message_id in sent)
        dropped_links = sum(n.stats.dropped.get("link_loss", 0) for n in net.nodes.values())
        result = {
            "network": "memory",
            "sent": len(sent),
            "delivered": len({m.message_id for m in inbox}),
            "duplicates": len(inbox) - len({m.message_id for m in inbox}),
            "acknowledged": acked,
            "reply_delivered": reply_delivered,
            "latency_mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
            "latency_p50_s": round(percentile(sorted(latencies), 0.5), 3) if latencies else None,
            "latency_p95_s": round(percentile(sorted(latencies), 0.95), 3) if latencies else None,
            "packets_real": sum(s.packets_real for s in stats),
            "packets_cover": sum(s.packets_cover for s in stats),
            "retransmissions": sum(s.retransmissions for s in stats),
            "duplicate_fragments_merged": sum(s.duplicates_merged for s in stats),
            "loops_sent": sum(s.packets_loop for s in stats),
            "loops_returned": sum(s.loops_returned for s in stats),
            "packets_lost_on_links": dropped_links,
            "mixes_killed": killed,
            "big_bytes": opts["big_bytes"],
            "delay_mean_s": opts["delay_mean"],
            "loss": opts["loss"],
            "seed": seed,
            "wall_s": round(time.monotonic() - t_start, 2),
        }
        result["ok"] = (result["delivered"] == result["sent"] and result["duplicates"] == 0
                        and acked == len(sent) and reply_delivered)
        return result


def run_memory_demo(*, messages: int = DEMO_DEFAULTS["messages"], delay_mean: float = DEMO_DEFAULTS["delay_mean"],
                    loss: float = 0.0, kill_mix: int = 0, seed: int | None = None,
                    big_bytes: int = DEMO_DEFAULTS["big_bytes"], timeout: float = DEMO_DEFAULTS["timeout"],
                    say: Callable[[str], None] = lambda s: None,
                    progress: Callable[[int, int], None] = lambda done, total: None) -> dict[str, Any]:
    """Run the in-memory demo and return its figures (see the module docstring)."""
    if messages < 1:
        raise ValueError("messages must be at least 1")
    if not 0 <= loss < 1:
        raise ValueError("loss must be in [0, 1)")
    opts = dict(DEMO_DEFAULTS, messages=messages, delay_mean=delay_mean, loss=loss, kill_mix=kill_mix,
                seed=seed if seed is not None else random.SystemRandom().getrandbits(32), big_bytes=big_bytes,
                timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="anonmail-demo-") as tmp:
        return anyio.run(_demo, opts, say, progress, Path(tmp))
