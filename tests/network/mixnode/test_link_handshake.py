"""Bad link handshakes against a running mix: each one counted under its reason, the link
closed, no exception out of the node, and honest traffic served afterwards."""

from __future__ import annotations

import base64
from contextlib import AsyncExitStack

import anyio
import pytest
import trio.testing

from anonmail.core import sphinx
from anonmail.core.linkauth import LinkHandshake, encode_message, generate_link_secret
from anonmail.core.wire import PROTOCOL_VERSION, Control, Hello, Role, encode_frame
from anonmail.net.framed import FramedStream
from tests.network.mixnode.harness import payload_for, start_testnet

pytestmark = [pytest.mark.network, pytest.mark.virtual_time]


def _hello_and(*controls: dict) -> bytes:
    return encode_frame(Hello(PROTOCOL_VERSION, Role.MIX)) + b"".join(encode_frame(Control(c)) for c in controls)


@pytest.mark.anyio
async def test_bad_handshakes_are_refused_by_reason_and_the_mix_keeps_serving(tmp_path):
    async with AsyncExitStack() as stack:
        net = await start_testnet(stack, tmp_path)
        consensus = await net.consensus(nodes=7)
        mix = net.mixes["mix-1-0"]
        mix_key = consensus.by_name("mix-1-0").link_key
        sink_secret = net.sink.link_secret

        async def attempt(first: bytes, then=None) -> None:
            stream = await net.client_router.connect("mem://mix-1-0")
            async with stream:
                framed = FramedStream(stream)
                await framed.send_raw(first)
                if then is not None:
                    await then(framed)
                with anyio.fail_after(30):
                    while (await framed.receive()) is not None:  # read until the mix closes the link
                        pass

        start = LinkHandshake(True, sink_secret, expected_peer=mix_key).start()
        await attempt(_hello_and({"type": "link_auth", "msg": base64.b64encode(start[:20]).decode()}))
        await attempt(_hello_and({"type": "link_auth", "msg": base64.b64encode(start + b"\x00" * 40).decode()}))
        await attempt(_hello_and({"type": "fetch"}))

        # Replay: a recorded first and third message of the sink's own (valid) handshake.
        recorded: list[bytes] = []
        real = LinkHandshake(True, sink_secret, expected_peer=mix_key)
        responder = LinkHandshake(False, mix.link_secret)
        recorded.append(real.start())
        recorded.append(real.receive(responder.receive(recorded[0])))

        async def replay_third(framed: FramedStream) -> None:
            await framed.receive()  # the mix's fresh second message
            await framed.send(Control(encode_message(recorded[1])))

        await attempt(_hello_and(encode_message(recorded[0])), replay_third)

        # Right key expected, but the mix is asked to prove a key it does not hold: the
        # initiator side refuses (the wrong_key case is the dialler's; see the unit tests).
        wrong = LinkHandshake(True, generate_link_secret(), expected_peer=generate_link_secret())

        async def check_wrong_key(framed: FramedStream) -> None:
            reply = await framed.receive()
            with pytest.raises(Exception) as err:
                wrong.receive(base64.b64decode(reply.message["msg"]))
            assert getattr(err.value, "reason", None) == "wrong_key"
            await framed.aclose()

        stream = await net.client_router.connect("mem://mix-1-0")
        framed = FramedStream(stream)
        await framed.send_raw(_hello_and(encode_message(wrong.start())))
        await check_wrong_key(framed)

        await anyio.sleep(11)  # the abandoned handshake runs into the mix's handshake timeout
        refused = mix.status()["refused"]
        assert refused["truncated"] == 1 and refused["oversized"] == 1
        assert refused["unexpected"] == 1 and refused["bad_message"] == 1
        assert refused.get("handshake_timeout", 0) + refused.get("closed", 0) == 1
        assert mix.stats.received == 0

        names = ["mix-1-0", "mix-2-0", "mix-3-0"]
        packet = sphinx.build_forward(net.route(consensus, names, [0, 0, 0]), bytes(16), payload_for(9))
        await net.inject("mix-1-0", [packet])
        with anyio.fail_after(30):
            while not net.sink.arrivals:
                await net.sink.arrived.wait()
