"""Attack tests (issue 15): what a user's provider and a global observer learn from ACKs and cover.

* The sender's own provider watches what it stores for her mailbox while she is idle, and, with
  the same seeds, while she sends 150 one-packet mails: it must not be able to tell the runs
  apart (count per entry kind, sizes, arrival times), nor may her outgoing packet timing differ.
* A global observer watches the links of the egress provider: every packet it receives from the
  last mix layer (real fragment or drop cover) must make one packet leave towards layer 1, and
  that ACK must leave after the hold the *sender* chose (Exp(delay_mean)), not when the
  provider stored the fragment.

Both run on the in-memory network under trio's MockClock, so minutes of traffic take seconds.
"""

from __future__ import annotations

import math
import random
from contextlib import AsyncExitStack

import anyio
import pytest
import trio.testing

from anonmail.agent import account
from anonmail.agent.enroll import enroll
from anonmail.agent.outbox import queue_mail
from anonmail.agent.packets import build_drop_packet, build_fragment_packet
from anonmail.agent.service import Agent, AgentSettings
from anonmail.clients.directory import DirectoryClient
from anonmail.clients.provider import ProviderClient
from anonmail.core import fragments as F
from anonmail.core.keys import IdentityKey
from anonmail.core.mailproto import ENTRY_FRAGMENT, ENTRY_REPLY
from anonmail.testnet.memory import LOCAL_RULES_PARAMS, MemoryMixnet
from simulations.stats import kolmogorov_sf, ks_test

pytestmark = pytest.mark.network

EPOCH = 3600
T0 = 1_800_000_000 - 1_800_000_000 % EPOCH + 600
QUIET = dict(mix_overrides={"lambda_loop": 0.0}, provider_overrides={"lambda_loop": 0.0})


def wall_clock() -> float:
    return T0 + anyio.current_time()


@pytest.fixture
def anyio_backend():
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def ks_2samp(a: list[float], b: list[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: (D, asymptotic p-value); small p says the samples differ."""
    xs, ys = sorted(a), sorted(b)
    n, m = len(xs), len(ys)
    i = j = 0
    d = 0.0
    while i < n and j < m:
        x = min(xs[i], ys[j])
        while i < n and xs[i] <= x:
            i += 1
        while j < m and ys[j] <= x:
            j += 1
        d = max(d, abs(i / n - j / m))
    en = math.sqrt(n * m / (n + m))
    return d, kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


def count_z(a: int, b: int) -> float:
    """|z| of two Poisson counts under 'same rate' (conditional binomial, normal approximation)."""
    return abs(a - b) / math.sqrt(max(1, a + b))


def record_stores(provider, mailbox_id: bytes, out: list[tuple[int, int, float]]) -> None:
    """Make ``provider`` note (kind, size, time) of every entry it stores for ``mailbox_id``."""
    store = provider.store
    original = store.store_within_quota

    def recording(entries, stored_at, quota):
        result = original(entries, stored_at, quota)
        out.extend((e.kind, len(e.data), stored_at) for e in entries if e.mailbox_id == mailbox_id)
        return result

    store.store_within_quota = recording


def record_sends(node, out: list[float], only_to: bytes | None = None) -> None:
    """Make ``node`` note the time of every packet it puts on a link (optionally to one node only)."""
    original = node.send

    def recording(node_id, packet):
        if only_to is None or node_id == only_to:
            out.append(anyio.current_time())
        return original(node_id, packet)

    node.send = recording


async def one_run(tmp_path, *, mails: int, window: float) -> tuple[list, list[float]]:
    """Alice on alpha for ``window`` s, sending ``mails`` one-packet mails to bob (beta) spread over it."""
    stores: list[tuple[int, int, float]] = []
    async with AsyncExitStack() as stack:
        net = await stack.enter_async_context(MemoryMixnet.start(
            tmp_path / "net", wall_clock=wall_clock, epoch_seconds=EPOCH, rng_seed=1, params=LOCAL_RULES_PARAMS,
            **QUIET))
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        now = int(wall_clock())
        bob_store, bob_address = await enroll(tmp_path / "bob", IdentityKey.generate(), "beta",
                                              net.client_router("bob"), net.provider_address("beta"),
                                              now=now, threads=False)
        stack.callback(bob_store.close)
        identity = IdentityKey.generate()
        router = net.client_router("alice")
        store, address = await enroll(tmp_path / "alice", identity, "alpha", router,
                                      net.provider_address("alpha"), now=now, threads=False)
        stack.callback(store.close)
        store.add_contact("bob", str(bob_address), now=now)
        store.add_contact_certs(bob_address.fingerprint, bob_address_identity(bob_store),
                                [(c.to_bytes(), c.not_before, c.not_after)
                                 for c in account.my_certs(bob_store, now=now)])
        record_stores(net.providers["alpha"], address.mailbox_id, stores)
        directory = DirectoryClient(router, net.pins, net.threshold, production=False, wall_clock=wall_clock,
                                    epoch_seconds=EPOCH)
        agent = Agent(identity=identity, store=store, router=router, directory=directory,
                      settings=AgentSettings(provider="alpha", lambda_payload=10.0, lambda_loop=1.0,
                                             fetch_interval=1.0, delay_mean=0.2, transport_slack=2.0,
                                             threads=False, poll_interval=0.5),
                      rng=random.Random(7), wall_clock=wall_clock, keep_emissions=True)
        await tg.start(agent.run)
        start = anyio.current_time()
        for i in range(mails):
            queue_mail(store, to="bob", subject=f"m{i}", body=b"x", now=wall_clock())
            await anyio.sleep(window / mails)
        await anyio.sleep(start + window - anyio.current_time())
        if mails:
            await anyio.sleep(2.0)  # a slot's packet is built up to two slots ahead: the last mail leaves just after
            assert agent.stats.packets_real >= mails  # the mails really left in those slots
        emissions = [t - start for t in agent.stats.emissions if start <= t < start + window]
        t0 = wall_clock() - (anyio.current_time() - start)
    stored = [(kind, size, t - t0) for kind, size, t in stores if 0 <= t - t0 < window]
    return stored, emissions


def bob_address_identity(bob_store) -> bytes:
    """Bob's identity public key, as his published certificates carry it."""
    return account.my_certs(bob_store, now=int(wall_clock()))[0].identity_public


@pytest.mark.anyio
async def test_attack_her_provider_cannot_tell_idle_from_sending(tmp_path):
    """Issue 15: same seeds, idle vs 150 mails in 100 s: her mailbox and her packet timing look the same."""
    window = 100.0
    idle, idle_emit = await one_run(tmp_path / "idle", mails=0, window=window)
    busy, busy_emit = await one_run(tmp_path / "busy", mails=150, window=window)
    findings = []
    for kind in (ENTRY_REPLY, ENTRY_FRAGMENT):
        a = [e for e in idle if e[0] == kind]
        b = [e for e in busy if e[0] == kind]
        z = count_z(len(a), len(b))
        if z > 4:
            findings.append(f"kind {kind}: {len(a)} entries idle, {len(b)} sending (|z| = {z:.1f})")
        if {s for _, s, _ in a} != {s for _, s, _ in b}:
            findings.append(f"kind {kind}: sizes {sorted({s for _, s, _ in a})} vs {sorted({s for _, s, _ in b})}")
        if len(a) > 20 and len(b) > 20:
            for what, xa, xb in (
                ("arrival times", [t for *_, t in a], [t for *_, t in b]),
                ("inter-arrival gaps", gaps([t for *_, t in a]), gaps([t for *_, t in b])),
            ):
                d, p = ks_2samp(xa, xb)
                if p < 0.001:
                    findings.append(f"kind {kind}: {what} differ (KS D = {d:.3f}, p = {p:.2g})")
    z = count_z(len(idle_emit), len(busy_emit))
    if z > 4:
        findings.append(f"her packets: {len(idle_emit)} idle vs {len(busy_emit)} sending")
    d, p = ks_2samp(gaps(idle_emit), gaps(busy_emit))
    if p < 0.001:
        findings.append(f"her packet gaps differ (KS D = {d:.3f}, p = {p:.2g})")
    assert not findings, findings
    # The stream really returns something per slot (so the test watches a live mailbox).
    assert sum(1 for e in idle if e[0] == ENTRY_REPLY) > 0.5 * 10.0 * window, "her slots return nothing"


def gaps(times: list[float]) -> list[float]:
    times = sorted(times)
    return [b - a for a, b in zip(times, times[1:])]


@pytest.mark.anyio
async def test_attack_the_egress_provider_does_not_time_acks(tmp_path):
    """Issue 15: every packet into the egress provider sends one packet out after the sender's Exp hold."""
    mean = 1.5
    samples = 60
    async with AsyncExitStack() as stack:
        net = await stack.enter_async_context(MemoryMixnet.start(
            tmp_path / "net", wall_clock=wall_clock, epoch_seconds=EPOCH, rng_seed=2, params=LOCAL_RULES_PARAMS,
            **QUIET))
        now = int(wall_clock())
        bob_identity = IdentityKey.generate()
        bob_store, bob_address = await enroll(tmp_path / "bob", bob_identity, "beta", net.client_router("bob"),
                                              net.provider_address("beta"), now=now, threads=False)
        stack.callback(bob_store.close)
        bob_key = account.my_certs(bob_store, now=now)[0].encryption_public
        alice = IdentityKey.generate()
        router = net.client_router("alice")
        alice_store, alice_address = await enroll(tmp_path / "alice", alice, "alpha", router,
                                                  net.provider_address("alpha"), now=now, threads=False)
        stack.callback(alice_store.close)
        client = await ProviderClient.connect(router, net.provider_address("alpha"), alice, "alpha")
        stack.push_async_callback(client.aclose)
        consensus = await net.wait_consensus()
        home, beta = consensus.by_name("alpha"), consensus.by_name("beta")
        egress = net.providers["beta"]
        arrivals: list[float] = []
        emitted: list[float] = []
        stored: list[tuple[int, int, float]] = []
        for mix in (m for m in net.mixes.values() if m.config.layer == 3):
            record_sends(mix, arrivals, only_to=egress.node_id)
        record_sends(egress.node, emitted)
        record_stores(egress, bob_address.mailbox_id, stored)
        rng = random.Random(5)
        delays, kinds = [], []
        for i in range(samples):
            real = i % 2 == 0
            if real:
                fragment = F.split_message(b"hello", bytes([i]) * 16)[0]
                packet = build_fragment_packet(rng, consensus, home=home, recipient_provider=beta, sender=alice,
                                               sender_address=alice_address, recipient=bob_address,
                                               recipient_identity=bob_identity.public, recipient_key=bob_key,
                                               fragment=fragment, delay_mean=mean).packet
            else:
                built = build_drop_packet(rng, consensus, home=home, ack_mailbox=alice_address.mailbox_id, delay_mean=mean)
                while built.route[-1] != "beta":  # drop cover goes to a random provider: watch beta's
                    built = build_drop_packet(rng, consensus, home=home, ack_mailbox=alice_address.mailbox_id, delay_mean=mean)
                packet = built.packet
            before_in, before_out = len(arrivals), len(emitted)
            await client.send_packets([packet])
            with anyio.move_on_after(60 * mean):
                while len(emitted) == before_out:
                    await anyio.sleep(0.01)
            assert len(arrivals) == before_in + 1, f"packet {i} did not reach the egress provider"
            if real:
                assert stored and abs((stored[-1][2] - T0) - arrivals[-1]) < 0.05  # stored when it arrived
            kinds.append("real" if real else "cover")
            delays.append(emitted[-1] - arrivals[-1] if len(emitted) > before_out else math.inf)
    silent = [k for k, d in zip(kinds, delays) if d == math.inf]
    assert not silent, f"{len(silent)} packets into the egress provider sent nothing out ({set(silent)})"
    adjacent = sum(1 for d in delays if d < 0.01)
    assert adjacent < samples * 0.05, f"{adjacent} of {samples} ACKs left within 10 ms of the store"
    d, p = ks_test(delays, lambda x: 1 - math.exp(-x / mean) if x > 0 else 0.0)
    assert p > 0.01, f"ACK hold times are not Exp({mean}) (KS D = {d:.3f}, p = {p:.2g}, mean {sum(delays)/len(delays):.2f})"
