"""User agents on an in-process network (anonmail.testnet.memory), in virtual time: delivery, ACKs, guarantees."""

from __future__ import annotations

import math
import random
from contextlib import AsyncExitStack

import anyio
import pytest
import trio.testing

from anonmail.agent.enroll import enroll
from anonmail.agent.outbox import queue_mail
from anonmail.agent.service import Agent, AgentSettings
from anonmail.agent.status import agent_status
from anonmail.clients.directory import upload_descriptor
from anonmail.core import pki, sphinx
from anonmail.errors import DirectoryError
from anonmail.core.keys import IdentityKey
from anonmail.core.params import NetworkParams
from anonmail.clients.directory import DirectoryClient
from anonmail.testnet.memory import LOCAL_RULES_PARAMS, MemoryMixnet

pytestmark = pytest.mark.network

EPOCH = 3600
T0 = 1_800_000_000 - 1_800_000_000 % EPOCH + 600


def wall_clock() -> float:
    return T0 + anyio.current_time()


@pytest.fixture
def anyio_backend():
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


FAST = dict(lambda_payload=10.0, lambda_loop=1.0, fetch_interval=1.0, delay_mean=0.2, transport_slack=2.0,
            threads=False, poll_interval=0.5)


async def start_user(stack, net, tg, name, provider, seed, *, connected=True, **settings):
    identity = IdentityKey.generate()
    router = net.client_router(name)
    extra = {"key_lifetime": settings["key_lifetime"]} if "key_lifetime" in settings else {}
    store, address = await enroll(net.data_dir / "users" / name, identity, provider, router,
                                  net.provider_address(provider), now=int(wall_clock()), threads=False, **extra)
    stack.callback(store.close)
    directory = DirectoryClient(router, net.pins, net.threshold, production=False, wall_clock=wall_clock,
                                epoch_seconds=EPOCH)
    agent = Agent(identity=identity, store=store, router=router, directory=directory,
                  settings=AgentSettings(provider=provider, **{**FAST, **settings}), rng=random.Random(seed),
                  wall_clock=wall_clock, keep_emissions=True)
    scope = anyio.CancelScope()

    async def run(*, task_status=anyio.TASK_STATUS_IGNORED):
        with scope:
            await agent.run(task_status=task_status)

    if connected:
        await tg.start(run)  # returns once the agent's session with its provider is up
    else:
        tg.start_soon(run)
    agent.scope = scope
    return agent


async def network(stack, tmp_path, **kwargs):
    kwargs.setdefault("params", LOCAL_RULES_PARAMS)  # the agents' own settings rule unless a test publishes others
    net = await stack.enter_async_context(MemoryMixnet.start(tmp_path / "net", wall_clock=wall_clock,
                                                             epoch_seconds=EPOCH, rng_seed=1, **kwargs))
    tg = await stack.enter_async_context(anyio.create_task_group())
    stack.callback(tg.cancel_scope.cancel)
    return net, tg


async def wait_until(predicate, timeout=600, step=0.5):
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(step)


@pytest.mark.anyio
async def test_mail_arrives_once_and_is_acknowledged(tmp_path):
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path)
        alice = await start_user(stack, net, tg, "alice", "alpha", 1)
        bob = await start_user(stack, net, tg, "bob", "beta", 2)
        alice.store.add_contact("bob", str(bob.address), now=wall_clock())
        big = random.Random(3).randbytes(210 * 1024)
        ids = [queue_mail(alice.store, to="bob", subject="hello", body=b"hi bob", now=wall_clock())[0],
               queue_mail(alice.store, to="bob", subject="big one", body=big, now=wall_clock())[0]]
        await wait_until(lambda: len(bob.store.inbox()) == 2
                         and all(m.state == "acknowledged" for m in alice.store.outbox()))
        inbox = {m.subject: m for m in bob.store.inbox()}
        assert inbox["hello"].body == b"hi bob" and inbox["hello"].sender == str(alice.address)
        assert inbox["big one"].body == big
        assert {m.message_id for m in bob.store.inbox()} == set(ids)
        # Cover traffic flowed too, and loops came back.
        assert alice.stats.packets_drop > 0 and alice.stats.loops_returned > 0
        # Bob answers; Alice gets it (Bob learnt Alice's keys by looking them up).
        bob.store.add_contact("alice", str(alice.address), now=wall_clock())
        queue_mail(bob.store, to="alice", subject="re: hello", body=b"hi alice", now=wall_clock())
        await wait_until(lambda: len(alice.store.inbox()) == 1)
        assert alice.store.inbox()[0].body == b"hi alice"


@pytest.mark.anyio
async def test_lost_packets_are_retransmitted_and_never_delivered_twice(tmp_path):
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path, loss=0.15, mix_overrides={"lambda_loop": 0.0},
                                provider_overrides={"lambda_loop": 0.0})
        alice = await start_user(stack, net, tg, "alice", "alpha", 1, link_loss=0.15, ack_timeout=8.0)
        bob = await start_user(stack, net, tg, "bob", "beta", 2, link_loss=0.15, ack_timeout=8.0)
        alice.store.add_contact("bob", str(bob.address), now=wall_clock())
        for i in range(20):
            queue_mail(alice.store, to="bob", subject=f"m{i}", body=f"body {i}".encode(), now=wall_clock())
        await wait_until(lambda: all(m.state == "acknowledged" for m in alice.store.outbox()), timeout=3600)
        await anyio.sleep(30)  # late duplicates of retransmitted fragments arrive and are merged
        subjects = sorted(m.subject for m in bob.store.inbox())
        assert subjects == sorted(f"m{i}" for i in range(20))
        assert alice.stats.retransmissions > 0
        dropped = sum(n.stats.dropped.get("link_loss", 0) for n in net.nodes.values())
        assert dropped > 0


@pytest.mark.anyio
async def test_traffic_shape_does_not_depend_on_what_the_user_sends(tmp_path):
    """Over a fixed window the payload stream is Poisson(λ_P) whether 0 or 20 messages are queued."""
    rate, window = 4.0, 300.0
    counts = {}
    gaps = {}
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path, mix_overrides={"lambda_loop": 0.0},
                                provider_overrides={"lambda_loop": 0.0})
        idle = await start_user(stack, net, tg, "idle", "alpha", 11, lambda_payload=rate, lambda_loop=0.0)
        busy = await start_user(stack, net, tg, "busy", "alpha", 12, lambda_payload=rate, lambda_loop=0.0)
        bob = await start_user(stack, net, tg, "bob", "beta", 13, lambda_payload=1.0, lambda_loop=0.0)
        busy.store.add_contact("bob", str(bob.address), now=wall_clock())
        for i in range(20):
            queue_mail(busy.store, to="bob", subject=f"m{i}", body=bytes(3000), now=wall_clock())
        start = anyio.current_time()
        await anyio.sleep(window)
        for name, agent in (("idle", idle), ("busy", busy)):
            times = [t for t in agent.stats.emissions if start <= t < start + window]
            counts[name] = len(times)
            gaps[name] = [b - a for a, b in zip(times, times[1:])]
        assert busy.stats.packets_real >= 20  # the busy agent really sent its mail in those slots
    expected = rate * window
    for name in counts:
        # Poisson count: within 4 standard deviations of λ·T.
        assert abs(counts[name] - expected) < 4 * math.sqrt(expected), (name, counts[name])
        # Inter-emission gaps are Exp(λ): KS distance to the exponential CDF is small.
        sample = sorted(gaps[name])
        n = len(sample)
        d = max(max(abs((i + 1) / n - (1 - math.exp(-rate * x))), abs(i / n - (1 - math.exp(-rate * x))))
                for i, x in enumerate(sample))
        assert d < 1.63 / math.sqrt(n), (name, d)  # KS critical value at α = 0.01
    # And the two streams are alike: counts within what two Poisson draws differ by.
    assert abs(counts["idle"] - counts["busy"]) < 4 * math.sqrt(2 * expected)


@pytest.mark.anyio
async def test_mail_waits_for_an_offline_user_and_survives_a_provider_crash(tmp_path):
    """Bob is offline; Alice's mail is stored (and ACKed) at beta; beta crashes and restarts; Bob
    comes back and gets every message once. The provider holds no plaintext and no sender."""
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path)
        alice = await start_user(stack, net, tg, "alice", "alpha", 1)
        bob = await start_user(stack, net, tg, "bob", "beta", 2)
        alice.store.add_contact("bob", str(bob.address), now=wall_clock())
        await wait_until(lambda: alice.stats.loops_returned > 0)
        bob.scope.cancel()  # Bob goes offline
        secret = b"the meeting is at noon, bring the documents " * 20
        for i in range(3):
            queue_mail(alice.store, to="bob", subject=f"offline {i}", body=secret + bytes([i]), now=wall_clock())
        # ACKs come back only once beta has stored the fragments durably.
        await wait_until(lambda: all(m.state == "acknowledged" for m in alice.store.outbox()))
        beta = net.providers["beta"]
        assert beta.status()["stored_entries"] >= 3
        # The egress provider's files hold neither the plaintext nor who sent it.
        raw = b"".join(p.read_bytes() for p in (net.data_dir / "beta").glob("*.sqlite*"))
        assert secret[:40] not in raw
        assert str(alice.address).encode() not in raw and alice.identity.public not in raw
        await net.kill_provider("beta")
        await anyio.sleep(5)
        await net.restart_provider("beta")
        bob_again = await restart_user(stack, net, tg, bob, "beta")
        await wait_until(lambda: len(bob_again.store.inbox()) == 3)
        await anyio.sleep(10)
        assert sorted(m.subject for m in bob_again.store.inbox()) == ["offline 0", "offline 1", "offline 2"]
        assert all(m.body.startswith(secret) for m in bob_again.store.inbox())


async def restart_user(stack, net, tg, old, provider):
    """Start a new agent process for a user with the same identity and store."""
    directory = DirectoryClient(old.router, net.pins, net.threshold, production=False, wall_clock=wall_clock,
                                epoch_seconds=EPOCH)
    agent = Agent(identity=old.identity, store=old.store, router=old.router, directory=directory,
                  settings=old.settings, rng=random.Random(99), wall_clock=wall_clock)
    await tg.start(agent.run)
    return agent


@pytest.mark.anyio
async def test_key_rotation_is_announced_and_the_new_key_is_used(tmp_path):
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path, mix_overrides={"lambda_loop": 0.0},
                                provider_overrides={"lambda_loop": 0.0})
        # Bob's keys live 600 s and rotate at half: within this test he rotates at least once.
        quiet = dict(lambda_payload=1.0, lambda_loop=0.0)
        alice = await start_user(stack, net, tg, "alice", "alpha", 1, **quiet)
        bob = await start_user(stack, net, tg, "bob", "beta", 2, key_lifetime=600, **quiet)
        alice.store.add_contact("bob", str(bob.address), now=wall_clock())
        bob.store.add_contact("alice", str(alice.address), now=wall_clock())
        queue_mail(alice.store, to="bob", subject="before", body=b"1", now=wall_clock())
        await wait_until(lambda: len(bob.store.inbox()) == 1)
        first_key = bob.store.my_keys()[0][0]
        await anyio.sleep(400)  # past half the lifetime: Bob rotates and announces to Alice
        assert bob.store.my_keys()[0][0] != first_key
        new_key = bob.store.my_keys()[0][0]
        from anonmail.agent.account import contact_key

        await wait_until(lambda: contact_key(alice.store, bob.address.fingerprint, now=int(wall_clock()))
                         .encryption_public == new_key)
        queue_mail(alice.store, to="bob", subject="after", body=b"2", now=wall_clock())
        await wait_until(lambda: len(bob.store.inbox()) == 2)
        # The announcement travelled as a message but is not shown in Alice's inbox.
        assert [m.subject for m in alice.store.inbox()] == []
        # Much later Bob's first key has expired: Bob deleted it, and Alice no longer uses it.
        await anyio.sleep(700)
        assert first_key not in [k[0] for k in bob.store.my_keys()]
        assert contact_key(alice.store, bob.address.fingerprint, now=int(wall_clock())).encryption_public != first_key


@pytest.mark.anyio
async def test_status_file_is_rewritten_every_second_while_the_agent_runs(tmp_path):
    import json

    from anonmail.agent.status import keep_status, write_agent_status

    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path)
        alice = await start_user(stack, net, tg, "alice", "alpha", 1)
        home = tmp_path / "alice-home"
        home.mkdir()
        started = wall_clock()
        await tg.start(lambda task_status: keep_status(alice, home, started=started, task_status=task_status))
        first = json.loads((home / "status.json").read_text())
        assert first["role"] == "agent" and first["running"] and first["provider"] == "alpha"
        await anyio.sleep(10.5)
        later = json.loads((home / "status.json").read_text())
        assert later["packets_sent"] > first["packets_sent"] and later["loops_sent"] > first["loops_sent"]
        assert later["updated"] - first["updated"] == pytest.approx(10, abs=0.01)  # rewritten every second
        assert later["packets_sent"] <= alice.stats.packets_sent and later["fetches"] >= 9
        assert str(alice.address).split("@")[0] not in (home / "status.json").read_text()
        assert write_agent_status(alice, home, started=started, running=False)
        assert json.loads((home / "status.json").read_text())["running"] is False


@pytest.mark.anyio
async def test_attack_the_status_file_does_not_show_when_real_packets_went(tmp_path):
    """A reader of status.json every second must not see which seconds carried real packets or ACKs."""
    import json

    from anonmail.agent.status import keep_status

    split = ("packets_real", "packets_drop", "packets_cover", "acks", "entries_fetched", "outbox_queued",
             "outbox_acknowledged")
    slow = dict(lambda_payload=2.0, lambda_loop=0.5)
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path, mix_overrides={"lambda_loop": 0.0},
                                provider_overrides={"lambda_loop": 0.0})
        alice = await start_user(stack, net, tg, "alice", "alpha", 1, **slow)
        bob = await start_user(stack, net, tg, "bob", "beta", 2, **slow)
        alice.store.add_contact("bob", str(bob.address), now=wall_clock())
        home = tmp_path / "alice-home"
        home.mkdir()
        await tg.start(lambda task_status: keep_status(alice, home, started=wall_clock(), task_status=task_status))
        await anyio.sleep(0.5)
        seen = []
        for i in range(40):
            if i == 3:
                queue_mail(alice.store, to="bob", subject="now", body=b"x" * 500, now=wall_clock())
            seen.append(json.loads((home / "status.json").read_text()))
            await anyio.sleep(1)
        assert alice.stats.packets_real > 0 and alice.stats.acks > 0  # real packets went, ACKs came back
        assert seen[-1]["packets_sent"] > seen[0]["packets_sent"]  # the file is live
        for key in split:
            assert len({s[key] for s in seen}) == 1, key  # but not one of these moved in those 40 s


# ----------------------------------------------------------------------------- attacks on the directory

QUIET = dict(mix_overrides={"lambda_loop": 0.0}, provider_overrides={"lambda_loop": 0.0})


def smaller_key_than(victim: bytes) -> IdentityKey:
    """A key that sorts before ``victim``: under the old key-order rule it won the victim's name."""
    seed = 0
    while (key := IdentityKey.from_seed(seed.to_bytes(32, "big"))).public >= victim:
        seed += 1
    return key


@pytest.mark.anyio
async def test_attack_a_stranger_cannot_take_a_providers_name_or_add_mixes(tmp_path):
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path, **QUIET)
        epoch = pki.epoch_at(wall_clock(), EPOCH)
        before = await net.directory.fetch(epoch)
        alpha = before.by_name("alpha")
        thief = smaller_key_than(alpha.identity_key)
        router = net.client_router("stranger")
        authorities = [address for address, _ in net.pins]
        for target in (epoch, epoch + 1):
            forged = [
                pki.sign_descriptor(thief, name="alpha", role="provider", layer=0, epoch=target,
                                    sphinx_key=sphinx.generate_node_keypair()[1], addresses=["mem://thief"],
                                    production=False),
                pki.sign_descriptor(IdentityKey.generate(), name="mix-1-9", role="mix", layer=1, epoch=target,
                                    sphinx_key=sphinx.generate_node_keypair()[1], addresses=["mem://sybil"],
                                    production=False),
            ]
            for descriptor in forged:
                with pytest.raises(DirectoryError) as info:
                    await upload_descriptor(router, authorities, descriptor)
                assert info.value.reason == "not_admitted"
        # The next epoch's document, built ahead of time, is the same network: alpha keeps its key.
        with anyio.fail_after(EPOCH):
            while True:
                try:
                    after = await net.directory.fetch(epoch + 1)
                    break
                except DirectoryError:
                    await anyio.sleep(30)
        assert sorted(d.name for d in after.nodes) == sorted(d.name for d in before.nodes)
        assert after.by_name("alpha").identity_key == alpha.identity_key
        # alpha's users keep sending and receiving.
        alice = await start_user(stack, net, tg, "alice", "alpha", 1, provider_key=alpha.identity_key)
        bob = await start_user(stack, net, tg, "bob", "beta", 2)
        alice.store.add_contact("bob", str(bob.address), now=wall_clock())
        queue_mail(alice.store, to="bob", subject="still here", body=b"hi", now=wall_clock())
        await wait_until(lambda: len(bob.store.inbox()) == 1
                         and all(m.state == "acknowledged" for m in alice.store.outbox()))
        bob.store.add_contact("alice", str(alice.address), now=wall_clock())
        queue_mail(bob.store, to="alice", subject="re", body=b"hello", now=wall_clock())
        await wait_until(lambda: len(alice.store.inbox()) == 1)
        assert alice.provider_rebound is None


@pytest.mark.anyio
async def test_an_agent_refuses_a_consensus_that_binds_its_provider_to_another_key(tmp_path):
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path, **QUIET)
        pinned = IdentityKey.generate().public  # what the user was told alpha's key is; the network says otherwise
        carol = await start_user(stack, net, tg, "carol", "alpha", 3, provider_key=pinned, connected=False)
        await anyio.sleep(30)
        epoch = pki.epoch_at(wall_clock(), EPOCH)
        assert carol.provider_rebound == epoch
        assert not carol.connected and carol.stats.packets_real + carol.stats.packets_drop == 0
        assert agent_status(carol, started=0, running=True)["provider_rebound"] == epoch


@pytest.mark.anyio
async def test_an_agent_with_weaker_local_rates_sends_at_the_published_rates(tmp_path, caplog):
    # Attack on unlinkability: a user whose agent.toml sends less cover than everyone else stands
    # out to the mixes. The consensus publishes λ_P and λ_L; the agent raises its own to them.
    published = NetworkParams(lambda_payload=8.0, lambda_loop=2.0, mix_lambda_loop=0.0, delay_mean=0.2,
                              max_delay=5.0, fetch_interval=1.0)
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path, params=published,
                                mix_overrides={"lambda_loop": 0.0}, provider_overrides={"lambda_loop": 0.0})
        weak = await start_user(stack, net, tg, "weak", "alpha", 21, lambda_payload=0.5, lambda_loop=0.1,
                                delay_mean=0.05, fetch_interval=30.0)
        strict = await start_user(stack, net, tg, "strict", "alpha", 22, lambda_payload=12.0, lambda_loop=3.0,
                                  delay_mean=0.2, fetch_interval=1.0)
        start = anyio.current_time()
        await anyio.sleep(80)
        elapsed = anyio.current_time() - start
        assert weak.settings.lambda_payload == 8.0 and weak.settings.lambda_loop == 2.0
        assert weak.settings.delay_mean == 0.2 and weak.settings.fetch_interval == 1.0
        assert strict.settings.lambda_payload == 12.0 and strict.settings.lambda_loop == 3.0  # stricter stays
        # Emission counts over 80 virtual seconds: Poisson at 8/s and 2/s, not at 0.5/s and 0.1/s.
        assert weak.stats.packets_drop + weak.stats.packets_real == pytest.approx(8.0 * elapsed, rel=0.15)
        assert weak.stats.packets_loop == pytest.approx(2.0 * elapsed, rel=0.3)
        assert strict.stats.packets_loop == pytest.approx(3.0 * elapsed, rel=0.3)
        raised = [r for r in caplog.records if "below the network's published values" in r.getMessage()]
        assert len(raised) == 1 and "lambda_payload" in raised[0].getMessage()
