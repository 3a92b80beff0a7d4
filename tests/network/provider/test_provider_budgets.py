"""A stranger holding a provider's connection slots (issue 16): users still get in."""

from __future__ import annotations

import anyio
import pytest
import trio.testing

from anonmail.core.wire import PROTOCOL_VERSION, Control, Hello, Role, encode_frame
from anonmail.errors import LinkError
from anonmail.net.framed import FramedStream
from tests.network.provider.test_provider import User, start

pytestmark = [pytest.mark.network, pytest.mark.virtual_time]


@pytest.mark.anyio
async def test_512_idle_sessions_that_never_log_in_cannot_lock_users_out(tmp_path):
    async with start(tmp_path) as net:
        alpha = net.providers["alpha"]
        router = net.client_router("stranger")
        held = []
        for i in range(512):
            stream = await router.connect(net.provider_address("alpha"))
            framed = FramedStream(stream)
            # Half say HELLO as a client and stay quiet; half keep asking for keys to look alive.
            await framed.send_raw(encode_frame(Hello(PROTOCOL_VERSION, Role.CLIENT)))
            held.append((framed, i % 2 == 0))
        user = User("alpha")
        client = await user.connect(net)  # a user logs in while all of them are held
        for _ in range(4):  # the talkative half asks for keys every 20 s, for 80 s
            await anyio.sleep(20)
            for framed, talkative in held:
                if talkative:
                    try:
                        await framed.send(Control({"type": "keys", "address": str(user.address)}))
                    except LinkError:  # the provider ended this session, as it should
                        pass
        status = alpha.status()
        assert status["inbound_unauthenticated"] == 0  # every stranger session ended
        assert status["refused"]["too_many_unauthenticated"] >= 512 - 128
        assert status["inbound_users"] == 1 and status["client_sessions"] == 1
        await client.aclose()
        for framed, _ in held:
            await framed.aclose()
