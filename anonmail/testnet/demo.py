"""``anonmail demo --network tor|i2p|both``: mail across a whole network of real processes.

A :class:`~anonmail.testnet.network.Testnet` comes up (private Tor and/or I2P, 3 authorities,
3 layers × 2 mixes, 2 providers that exist only as onion services / I2P destinations, users
alice@alpha and bob@beta with running agents). Alice then uses the ``anonmail send`` command
``messages`` times (the last message is ``big_bytes`` long), Bob answers the first, and the
demo watches ``anonmail inbox --json`` and ``anonmail outbox --json`` until every message has
arrived once and every fragment is acknowledged. Everything is torn down at the end.

Latency is from Alice queueing a message to it being in Bob's inbox (same clock). Its parts:
the mixing delay the sender chose (3 mix hops, Exp(``delay_mean``) each: expected sum
3·``delay_mean``), the wait for Bob's next mailbox fetch (expected ``fetch_interval``/2), and the
rest: waiting for a slot of Alice's Poisson stream, then transport over Tor/I2P.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anonmail.core.stats import percentile
from anonmail.testnet.network import Testnet

__all__ = ["run_network_demo", "NETWORKS"]

NETWORKS = ("tor", "i2p", "both")
#: Mixes that hold each packet (the providers forward at once).
MIX_HOPS = 3


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _body(index: int, total: int, size: int | None) -> str:
    text = f"Hello Bob,\n\nthis is message {index} of {total}, sent through three mix layers.\n\nAlice\n"
    if size is None:
        return text
    filler = "The quick brown fox jumps over the lazy dog. "
    return (text + filler * (size // len(filler) + 1))[:size]


def run_network_demo(
    network: str,
    *,
    messages: int = 20,
    big_bytes: int = 200 * 1024,
    timeout: float = 900.0,
    directory: str | Path | None = None,
    keep: bool = False,
    agent_settings: dict[str, Any] | None = None,
    say: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Bring a network up, send mail Alice → Bob (and a reply), measure, tear down; the JSON result."""
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
    say = say or (lambda _text: None)
    t0 = time.monotonic()
    own_dir = directory is None
    base = Path(tempfile.mkdtemp(prefix="anonmail-demo-")) if own_dir else Path(directory)
    net = Testnet(base, tor=network in ("tor", "both"), i2p=network in ("i2p", "both"), mixes_per_layer=2,
                  providers=2, users=2, agent_settings=dict(agent_settings or {}), progress=say)
    result: dict[str, Any] = {"network": network, "ok": False}
    try:
        net.up()
        result.update(_exchange(net, messages, big_bytes, t0 + timeout, say, progress))
        result["bring_up_s"] = net.timings.get("bring_up_s")
    finally:
        net.down()
        if own_dir and not keep and result.get("ok"):
            shutil.rmtree(base, ignore_errors=True)
        elif not result.get("ok") or keep:
            result["directory"] = str(base)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


def _exchange(net: Testnet, messages: int, big_bytes: int, deadline: float, say, progress) -> dict[str, Any]:
    from anonmail.agent.config import load_agent_config

    settings = load_agent_config(net.home("alice")).settings
    bob_settings = load_agent_config(net.home("bob")).settings
    subjects = [f"demo {i}/{messages}" for i in range(1, messages + 1)]
    say(f"alice@alpha runs `anonmail send --to bob` {messages} times (the last one {big_bytes // 1024} KiB); "
        f"her agent sends {settings.lambda_payload:g} packets/s whatever happens, real or cover")
    t_send = time.monotonic()
    for i, subject in enumerate(subjects, start=1):
        size = big_bytes if i == messages and big_bytes else None
        net.anonmail("alice", "send", "--to", "bob", "--subject", subject, input_text=_body(i, messages, size))
    say(f"{messages} messages queued in {time.monotonic() - t_send:.1f} s; waiting for bob's agent to fetch them "
        f"from beta (every {bob_settings.fetch_interval:g} s)")

    replied = False
    reply_subject = f"Re: {subjects[0]}"
    inbox: list[dict] = []
    outbox: list[dict] = []
    alice_inbox: list[dict] = []
    bob_outbox: list[dict] = []
    delivered = 0
    while time.monotonic() < deadline:
        inbox = _lines(net.anonmail("bob", "inbox", "--json"))
        arrived = {m["subject"] for m in inbox if m["subject"] in subjects}
        if len(arrived) != delivered:
            delivered = len(arrived)
            if progress is not None:
                progress(delivered, messages)
            if delivered == messages:
                say(f"all {messages} messages are in bob's inbox ({time.monotonic() - t_send:.1f} s after the first "
                    f"`send`); waiting for the reply and the last acknowledgements")
        if not replied and subjects[0] in arrived:
            net.anonmail("bob", "send", "--to", "alice", "--subject", reply_subject,
                         input_text="Hi Alice,\n\ngot it, thanks. Replying through the mixnet.\n\nBob\n")
            replied = True
            say("bob read the first message and replied with `anonmail send --to alice`")
        outbox = _lines(net.anonmail("alice", "outbox", "--json"))
        had_reply = any(m["subject"] == reply_subject for m in alice_inbox)
        alice_inbox = _lines(net.anonmail("alice", "inbox", "--json")) if replied else []
        if not had_reply and any(m["subject"] == reply_subject for m in alice_inbox):
            say("bob's reply is in alice's inbox")
        bob_outbox = _lines(net.anonmail("bob", "outbox", "--json")) if replied else []
        done = (
            delivered == messages
            and any(m["subject"] == reply_subject for m in alice_inbox)
            and all(m["state"] == "acknowledged" for m in outbox + bob_outbox)
        )
        if done:
            break
        time.sleep(2.0)

    queued = {m["subject"]: m["queued_at"] for m in outbox}
    seen: dict[str, int] = {}
    latencies: dict[str, float] = {}
    for m in inbox:
        if m["subject"] in subjects:
            seen[m["subject"]] = seen.get(m["subject"], 0) + 1
            if m["subject"] in queued:
                latencies.setdefault(m["subject"], m["received_at"] - queued[m["subject"]])
    values = list(latencies.values())
    small = [v for s, v in latencies.items() if s != subjects[-1]]
    stats = {name: net.node_status(name) or {} for name in ("alice", "bob")}

    def total(key: str) -> int:
        return sum(int(s.get(key) or 0) for s in stats.values())

    latency_mean = statistics.fmean(values) if values else 0.0
    mixing = MIX_HOPS * settings.delay_mean
    fetch_wait = bob_settings.fetch_interval / 2
    result = {
        "sent": messages,
        "delivered": len(seen),
        "duplicates": sum(count - 1 for count in seen.values()),
        "acknowledged": sum(1 for m in outbox if m["state"] == "acknowledged"),
        "reply_delivered": any(m["subject"] == reply_subject for m in alice_inbox),
        "latency_mean_s": round(latency_mean, 2),
        "latency_p50_s": round(percentile(sorted(values), 0.5) or 0.0, 2),
        "latency_p95_s": round(percentile(sorted(values), 0.95) or 0.0, 2),
        "latency_small_mean_s": round(statistics.fmean(small), 2) if small else None,
        "latency_big_s": round(latencies[subjects[-1]], 2) if subjects[-1] in latencies else None,
        "big_bytes": big_bytes,
        "delay_mean_s": settings.delay_mean,
        "mixing_delay_expected_s": round(mixing, 2),
        "fetch_wait_expected_s": round(fetch_wait, 2),
        "queueing_and_transport_s": round(statistics.fmean(small) - mixing - fetch_wait, 2) if small else None,
        "packets_real": total("packets_real"),
        "packets_cover": total("packets_cover"),
        "retransmissions": total("retransmissions"),
        "slots_missed": total("slots_missed"),
        "loops_sent": total("loops_sent"),
        "loops_returned": total("loops_returned"),
        "exchange_s": round(time.monotonic() - t_send, 1),
    }
    result["ok"] = (result["delivered"] == messages and result["duplicates"] == 0 and result["reply_delivered"]
                    and result["acknowledged"] == messages)
    return result
