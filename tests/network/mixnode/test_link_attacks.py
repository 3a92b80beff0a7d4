"""Attacks on a mix from outside its neighbourhood (issue 16), each as an outsider does them.

Every test reaches the nodes over the network only (raw connections to their addresses) and
then checks what the network stored or forwarded. Sizes are scaled where building the
attack's packets would dominate the tier's budget (stated per test); the full-size flood on
the private Tor testnet is ``tests/integration/test_link_flood.py``.
"""

from __future__ import annotations

import base64
import contextlib
from contextlib import AsyncExitStack

import anyio
import pytest
import trio.testing

from anonmail.core import sphinx
from anonmail.core.linkauth import LinkHandshake, encode_message, generate_link_secret
from anonmail.core.params import NetworkParams
from anonmail.core.wire import PROTOCOL_VERSION, Control, Hello, Packet, Role, encode_frame
from anonmail.errors import LinkError
from anonmail.net.framed import FramedStream
from tests.network.mixnode.harness import payload_for, start_testnet

pytestmark = [pytest.mark.network, pytest.mark.virtual_time]


def _build(net, consensus, names, delays, i):
    return sphinx.build_forward(net.route(consensus, names, delays), i.to_bytes(16, "big"), payload_for(i))


async def _arrivals(net, count: int, timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        while len(net.sink.arrivals) < count:
            await net.sink.arrived.wait()


@pytest.mark.anyio
async def test_512_idle_connections_after_hello_cannot_lock_a_neighbour_out(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path)
        consensus = await net.consensus(nodes=7)
        target = net.mixes["mix-2-0"]
        # An honest layer-1 neighbour goes down; while it is away a stranger opens 512
        # connections, says HELLO as a mix and goes quiet, holding every stream open.
        await net.stop_mix("mix-1-0")
        await anyio.sleep(1)
        held = []
        for _ in range(512):
            stream = await net.client_router.connect("mem://mix-2-0")
            await stream.send(encode_frame(Hello(PROTOCOL_VERSION, Role.MIX)))
            held.append(stream)
        await anyio.sleep(1)
        # The neighbour comes back and must get its link to mix-2-0 again.
        await net.start_mix("mix-1-0")
        await anyio.sleep(15)
        await net.inject("mix-1-0", [_build(net, consensus, ["mix-1-0", "mix-2-0", "mix-3-0"], [0, 0, 0], 1)])
        await _arrivals(net, 1)
        status = target.status()
        refused = status["refused"]
        assert refused.get("handshake_timeout", 0) + refused.get("too_many_unauthenticated", 0) == 512
        assert status["inbound_unauthenticated"] == 0
        assert "mix-1-0" in status["inbound_links"]
        # Every connection is counted when accepted; none of them refused twice.
        assert sum(refused.values()) + sum(status["inbound_links"].values()) <= status["inbound_accepted"]
        for stream in held:
            await stream.aclose()


@pytest.mark.anyio
async def test_max_delay_packets_cannot_fill_the_queue(tmp_path):
    # Scaled: queue_limit 2,000 and 2,000 attack packets (the 20,000 fill the default 20,000).
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path, queue_limit=2000,
                                  params=NetworkParams(mix_lambda_loop=0.0, max_delay=30.0))
        consensus = await net.consensus(nodes=7)
        mix = net.mixes["mix-1-0"]
        names = ["mix-1-0", "mix-2-0", "mix-3-0"]
        flood = [_build(net, consensus, names, [sphinx.MAX_DELAY_MS, 0, 0], 1000 + i) for i in range(2000)]
        # A stranger sends them straight to the mix; the sink (an admitted provider) sends 50 too.
        stream = await net.client_router.connect("mem://mix-1-0")
        async with stream:
            await stream.send(encode_frame(Hello(PROTOCOL_VERSION, Role.PROVIDER))
                              + b"".join(encode_frame(Packet(p)) for p in flood))
            await anyio.sleep(1)
        await net.inject("mix-1-0", flood[:50])
        await anyio.sleep(1)
        assert mix.status()["queue_length"] == 0
        assert mix.stats.dropped["delay_too_long"] == 50
        # Honest traffic with a delay still gets queued and delivered.
        await net.inject("mix-1-0", [_build(net, consensus, names, [5000, 0, 0], 1)])
        await _arrivals(net, 1)
        assert net.sink.arrivals[0].payload[:4] == (1).to_bytes(4, "big")


@pytest.mark.anyio
async def test_a_stranger_cannot_inject_at_any_mix(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path)
        consensus = await net.consensus(nodes=7)
        packets = {name: _build(net, consensus, [name, *rest], [0] * (1 + len(rest)), i)
                   for i, (name, rest) in enumerate([("mix-1-0", ["mix-2-0", "mix-3-0"]),
                                                     ("mix-2-0", ["mix-3-0"]), ("mix-3-0", [])])}
        for name, packet in packets.items():
            # Plain injection, as before links were authenticated.
            stream = await net.client_router.connect(f"mem://{name}")
            async with stream:
                await stream.send(encode_frame(Hello(PROTOCOL_VERSION, Role.MIX)) + encode_frame(Packet(packet)))
                await anyio.sleep(1)
        await anyio.sleep(5)
        assert net.sink.arrivals == []
        for name, packet in packets.items():
            # A full handshake with a key of its own, which no descriptor publishes.
            stream = await net.client_router.connect(f"mem://{name}")
            async with stream:
                framed = FramedStream(stream)
                hs = LinkHandshake(True, generate_link_secret(), expected_peer=consensus.by_name(name).link_key)
                await framed.send_raw(encode_frame(Hello(PROTOCOL_VERSION, Role.MIX))
                                      + encode_frame(Control(encode_message(hs.start()))))
                reply = await framed.receive()
                third = hs.receive(base64.b64decode(reply.message["msg"]))
                await framed.send_raw(encode_frame(Control(encode_message(third))) + encode_frame(Packet(packet)))
                assert await framed.receive() is None  # the mix closed the link
        await anyio.sleep(5)
        assert net.sink.arrivals == []
        for name in packets:
            mix = net.mixes[name]
            assert mix.stats.received == 0, name
            assert mix.status()["refused"]["unknown_peer"] == 1, name
        # The sink is an admitted provider, but only layer 1 hears providers.
        with contextlib.suppress(LinkError):  # the mix may close before the packet is out
            await net.inject("mix-2-0", [packets["mix-2-0"]])
        await anyio.sleep(1)
        assert net.mixes["mix-2-0"].status()["refused"]["wrong_layer"] == 1
        assert net.sink.arrivals == [] and net.mixes["mix-2-0"].stats.received == 0
