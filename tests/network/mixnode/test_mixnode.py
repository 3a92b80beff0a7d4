"""Mix nodes on an in-process network (3 authorities, 3 layers x 2 mixes) in virtual time."""

from __future__ import annotations

import os
import random
import struct
from contextlib import AsyncExitStack

import anyio
import pytest

from anonmail.core import sphinx
from anonmail.core.params import NetworkParams
from anonmail.core.wire import PROTOCOL_VERSION, Hello, Role, encode_frame
from anonmail.core.pki import epoch_at, epoch_start
from tests.network.mixnode.harness import payload_for, start_testnet, wall_clock

pytestmark = [pytest.mark.network, pytest.mark.virtual_time]


def build(net, consensus, names, delays, i):
    mailbox = i.to_bytes(16, "big")
    return sphinx.build_forward(net.route(consensus, names, delays), mailbox, payload_for(i))


@pytest.mark.anyio
async def test_packets_arrive_intact_after_exactly_their_delays(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path)
        consensus = await net.consensus(nodes=7)
        rng = random.Random(7)
        plans = []
        for i in range(12):
            names = [f"mix-1-{rng.randrange(2)}", f"mix-2-{rng.randrange(2)}", f"mix-3-{rng.randrange(2)}"]
            delays = [rng.randrange(0, 5000) for _ in names]
            plans.append((i, names, delays))
        sent_at = anyio.current_time()
        for i, names, delays in plans:
            await net.inject(names[0], [build(net, consensus, names, delays, i)])
        with anyio.fail_after(60):
            while len(net.sink.arrivals) < len(plans):
                await net.sink.arrived.wait()
        by_mailbox = {a.mailbox_id: a for a in net.sink.arrivals}
        for i, _names, delays in plans:
            arrival = by_mailbox[i.to_bytes(16, "big")]
            assert arrival.payload[:4] == i.to_bytes(4, "big")
            # Virtual time: the measured latency is the chosen delays, to the millisecond.
            assert arrival.time - sent_at == pytest.approx(sum(delays) / 1000, abs=0.0015)
        order = [int.from_bytes(a.mailbox_id, "big") for a in net.sink.arrivals]
        assert order == [i for i, _, d in sorted(plans, key=lambda p: (sum(p[2]), p[0]))]
        forwarded = sum(m.stats.forwarded for m in net.mixes.values())
        assert forwarded == 3 * len(plans)


@pytest.mark.anyio
async def test_replays_are_dropped_at_every_mix_also_after_restart(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path)
        consensus = await net.consensus(nodes=7)
        # The sink is a provider: it may send to layer 1 only (deeper layers hear only their neighbours).
        layers = {1: ["mix-1-0", "mix-2-1", "mix-3-0"], 2: ["mix-1-1", "mix-2-0", "mix-3-1"]}
        for n, (layer, names) in enumerate(layers.items()):
            packet = build(net, consensus, names, [0] * len(names), 100 + n)
            mix = net.mixes[names[0]]
            await net.inject(names[0], [packet])
            await anyio.sleep(1)
            await net.inject(names[0], [packet, packet])
            await anyio.sleep(1)
            assert mix.stats.dropped["replay"] == 2, layer
            # Restart the mix: the replay window stays closed.
            await net.stop_mix(names[0])
            restarted = await net.start_mix(names[0])
            await anyio.sleep(5)
            await net.inject(names[0], [packet])
            await anyio.sleep(1)
            assert restarted.stats.dropped["replay"] == 1, layer
        assert len(net.sink.arrivals) == 2


@pytest.mark.anyio
async def test_bad_packets_frames_and_garbage_are_dropped_and_counted(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path)
        consensus = await net.consensus(nodes=7)
        names = ["mix-1-0", "mix-2-0", "mix-3-0"]
        mix = net.mixes["mix-1-0"]
        good = build(net, consensus, names, [0, 0, 0], 1)
        tampered = bytearray(good)
        tampered[40] ^= 0x01  # a header bit: the MAC no longer matches
        await net.inject("mix-1-0", [bytes(tampered)])
        # A PACKET frame of the wrong size, then garbage, each on its own connection.
        for raw in (
            encode_frame(Hello(PROTOCOL_VERSION, Role.PROVIDER)) + struct.pack(">BI", 0x02, 100) + os.urandom(100),
            os.urandom(5000),
        ):
            stream = await net.client_router.connect("mem://mix-1-0")
            async with stream:
                await stream.send(raw)
                await anyio.sleep(1)
        await anyio.sleep(1)
        assert mix.stats.dropped["bad_mac"] == 1
        assert mix.inbound.refused["bad_frame"] == 2
        # The node still serves honest traffic.
        await net.inject("mix-1-0", [good])
        with anyio.fail_after(30):
            while not net.sink.arrivals:
                await net.sink.arrived.wait()
        assert net.sink.arrivals[0].payload[:4] == (1).to_bytes(4, "big")


@pytest.mark.anyio
async def test_overloaded_mix_drops_instead_of_growing(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path, queue_limit=10)
        consensus = await net.consensus(nodes=7)
        names = ["mix-1-0", "mix-2-0", "mix-3-0"]
        packets = [build(net, consensus, names, [60_000, 0, 0], i) for i in range(40)]
        await net.inject("mix-1-0", packets)
        await anyio.sleep(1)
        mix = net.mixes["mix-1-0"]
        assert mix.status()["queue_length"] == 10
        assert mix.stats.dropped["queue_full"] == 30
        await anyio.sleep(61)
        assert len(net.sink.arrivals) == 10


@pytest.mark.anyio
async def test_unknown_next_hop_is_dropped_and_counted(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path)
        consensus = await net.consensus(nodes=7)
        hops = net.route(consensus, ["mix-1-0", "mix-2-0"], [0, 0])
        stranger = sphinx.Hop(os.urandom(16), sphinx.generate_node_keypair()[1], 0)
        packet = sphinx.build_forward([*hops[:-1], stranger], bytes(16), b"x")
        await net.inject("mix-1-0", [packet])
        # A node of the consensus, but not of the next layer, is no next hop either.
        backwards = sphinx.build_forward([*hops[:-1], net.route(consensus, ["mix-1-1"], [0])[0]], bytes(16), b"x")
        await net.inject("mix-1-0", [backwards])
        await anyio.sleep(2)
        assert net.mixes["mix-2-0"].stats.dropped["wrong_next_hop"] == 2
        assert net.mixes["mix-2-0"].stats.forwarded == 0


@pytest.mark.anyio
async def test_loop_cover_returns_and_lost_loops_are_counted(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path, lambda_loop=0.5, loop_timeout=30.0)
        await anyio.sleep(120)
        for name, mix in net.mixes.items():
            assert mix.stats.loops_sent > 20, name
            assert mix.stats.loops_returned >= mix.stats.loops_sent - 3, name
            assert mix.stats.loops_lost == 0, name
        # Take one layer-2 mix away: loops through it stop coming back and are counted lost.
        net.network.set_down("mix-2-0")
        await anyio.sleep(120)
        assert net.mixes["mix-1-0"].stats.loops_lost > 0
        # Finding 19: the losses are acted on. Once they fill enough of the window, the alarm goes on,
        # the mix shows it with the node most often on lost loops, and logs it once.
        await anyio.sleep(180)
        stats = net.mixes["mix-1-0"].stats
        assert stats.loop_alarm and stats.loop_loss_rate > 0.2, stats.as_dict()
        assert stats.loop_suspects[0].startswith("mix-2-0 ("), stats.loop_suspects
        assert net.mixes["mix-1-0"].status()["loop_alarm"] is True


@pytest.mark.anyio
async def test_network_works_with_one_authority_down(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path, down_authorities=1)
        consensus = await net.consensus(nodes=7)
        names = ["mix-1-1", "mix-2-0", "mix-3-1"]
        await net.inject("mix-1-1", [build(net, consensus, names, [100, 200, 300], 5)])
        with anyio.fail_after(30):
            while not net.sink.arrivals:
                await net.sink.arrived.wait()
        assert net.sink.arrivals[0].mailbox_id == (5).to_bytes(16, "big")


@pytest.mark.anyio
async def test_epochs_roll_over_keys_rotate_and_old_keys_are_deleted(tmp_path):
    seconds = 120
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path, epoch_seconds=seconds)
        epoch = epoch_at(wall_clock(), seconds)
        names = ["mix-1-0", "mix-2-1", "mix-3-0"]

        async def deliver_once(i: int, consensus) -> None:
            await net.inject(names[0], [build(net, consensus, names, [10, 10, 10], i)])
            with anyio.fail_after(30):
                while not any(a.mailbox_id == i.to_bytes(16, "big") for a in net.sink.arrivals):
                    await net.sink.arrived.wait()

        await deliver_once(1, await net.consensus(nodes=7))
        # Every mix holds the next epoch's consensus before the current one ends.
        await anyio.sleep(epoch_start(epoch + 1, seconds) - wall_clock() - 1)
        for name, mix in net.mixes.items():
            assert mix.directory.get(epoch + 1) is not None, name
        for target in (epoch + 1, epoch + 2):
            await anyio.sleep(epoch_start(target, seconds) + 5 - wall_clock())
            consensus = net.client.get(target) or await net.client.fetch(target)
            assert consensus.epoch == target and len(consensus.nodes) == 7
            await deliver_once(target, consensus)
            if target == epoch + 1:
                await net.register_sink(epoch + 2)
        # Keys of finished epochs are gone from disk (forward secrecy); the previous one stays for grace.
        for name, mix in net.mixes.items():
            keys = sorted(int(p.stem.split("-")[1]) for p in mix.config.data_dir.glob("sphinx-*.key"))
            assert keys == [epoch + 1, epoch + 2, epoch + 3], name
            assert mix.replay.count(epoch) == 0


@pytest.mark.anyio
async def test_packets_wait_out_a_next_hop_outage_and_the_link_reconnects(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path)
        consensus = await net.consensus(nodes=7)
        names = ["mix-1-0", "mix-2-0", "mix-3-0"]
        await net.inject(names[0], [build(net, consensus, names, [0, 0, 0], 0)])
        await anyio.sleep(1)
        assert len(net.sink.arrivals) == 1
        net.network.set_down("mix-2-0")  # breaks the persistent link; new connections are refused
        await net.inject(names[0], [build(net, consensus, names, [0, 0, 0], i) for i in range(1, 6)])
        await anyio.sleep(20)
        first = net.mixes["mix-1-0"]
        assert len(net.sink.arrivals) == 1
        assert first.stats.link_failures >= 2  # retried with back-off while the hop was away
        assert first.status()["links"]["mix-2-0"]["connected"] is False
        net.network.set_down("mix-2-0", False)
        with anyio.fail_after(30):
            while len(net.sink.arrivals) < 6:
                await net.sink.arrived.wait()
        assert sorted(int.from_bytes(a.mailbox_id, "big") for a in net.sink.arrivals) == list(range(6))
        assert first.status()["links"]["mix-2-0"]["connected"] is True


@pytest.mark.anyio
async def test_links_to_every_next_layer_node_are_up_before_any_packet(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path)
        consensus = await net.consensus(nodes=7)
        await anyio.sleep(12)  # two link-keeper rounds after the consensus
        by_layer = {layer: sorted(n.name for n in consensus.nodes if n.layer == layer) for layer in (0, 1, 2, 3)}
        for name, mix in net.mixes.items():
            layer = mix.config.layer
            expected = by_layer[layer + 1] if layer < 3 else by_layer[0]
            links = mix.links.connected()
            assert links == {n: True for n in expected}, name
            assert mix.stats.forwarded == 0 and mix.stats.link_failures == 0, name
        # The first packet rides a link that is already up: no connection set-up in its latency.
        names = ["mix-1-0", "mix-2-1", "mix-3-0"]
        sent_at = anyio.current_time()
        await net.inject(names[0], [build(net, consensus, names, [0, 0, 0], 77)])
        with anyio.fail_after(30):
            while not net.sink.arrivals:
                await net.sink.arrived.wait()
        assert net.sink.arrivals[0].time - sent_at < 0.01


@pytest.mark.anyio
async def test_a_delay_above_the_published_maximum_is_dropped_and_counted(tmp_path):
    # Attack: a sender asks a mix to hold its packet far longer than anyone else's, so that the
    # packet stands out when it finally leaves. The consensus publishes max_delay; mixes enforce it.
    params = NetworkParams(max_delay=10.0, mix_lambda_loop=0.0)
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path, params=params)
        consensus = await net.consensus(nodes=7)
        assert consensus.params == params
        names = ["mix-1-0", "mix-2-0", "mix-3-0"]
        await net.inject("mix-1-0", [build(net, consensus, names, [0, 10_001, 0], 1),
                                     build(net, consensus, names, [0, 10_000, 0], 2)])
        with anyio.fail_after(60):
            while len(net.sink.arrivals) < 1:
                await net.sink.arrived.wait()
        await anyio.sleep(30)
        assert [a.mailbox_id for a in net.sink.arrivals] == [(2).to_bytes(16, "big")]
        assert net.mixes["mix-2-0"].stats.dropped["delay_too_long"] == 1
        assert net.mixes["mix-2-0"].status()["dropped"]["delay_too_long"] == 1


@pytest.mark.anyio
async def test_authorities_publish_identical_parameters_and_one_deviant_vote_is_outvoted(tmp_path):
    # One authority configured with weak values (almost no cover, a huge maximum delay) must
    # neither break the consensus nor get its values published.
    honest = NetworkParams(lambda_payload=4.0, lambda_loop=1.0, mix_lambda_loop=0.0, delay_mean=1.0,
                           max_delay=15.0, fetch_interval=2.0, fetch_batch=40)
    weak = NetworkParams(lambda_payload=0.01, lambda_loop=0.0, mix_lambda_loop=0.0, delay_mean=0.0,
                         max_delay=86400.0, fetch_interval=3600.0, fetch_batch=1)
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path, params=[honest, weak, honest])
        consensus = await net.consensus(nodes=7)
        assert consensus.params == honest
        documents = [a.store.consensus(consensus.epoch) for a in net.authorities]
        assert all(d is not None for d in documents)
        assert {d[1] for d in documents} == {consensus.digest().hex()}
        assert all(d[0]["params"] == honest.to_dict() for d in documents)
