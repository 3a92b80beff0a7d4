"""Budgets of a node's accept side (:class:`mixnode.inbound.Inbound`) at the edges of its timing.

Each connection is refused at most once, whatever the order in which a stranger's bytes and a
newcomer's arrival reach the node.
"""

from __future__ import annotations

from collections import Counter

import anyio
import anyio.lowlevel
import pytest

from anonmail.core.linkauth import generate_link_secret
from anonmail.core.sizes import PACKET_BYTES
from anonmail.core.wire import PROTOCOL_VERSION, Hello, Packet, Role, encode_frame
from anonmail.net.memory import MemoryByteStream
from mixnode.inbound import MAX_UNAUTHENTICATED, Inbound

pytestmark = [pytest.mark.network]


@pytest.mark.anyio
async def test_attack_a_connection_pushed_out_while_it_sends_is_refused_once():
    # The CI flood counted 4,401 refusals for 4,400 connections: a stranger's connection whose
    # bytes had just arrived was pushed out by a newcomer in the same instant, and its own
    # handshake error was counted as well. Here that instant is made on purpose (asyncio runs
    # ready tasks in order, so the newcomer runs first; trio would shuffle them).
    inbound = Inbound(link_secret=generate_link_secret(), me=lambda: "mix-1-0", consensuses=lambda: [],
                      submit=lambda data, now: None, dropped=Counter())

    def pipe():
        to_node, node_reads = anyio.create_memory_object_stream[bytes](64)
        node_writes, from_node = anyio.create_memory_object_stream[bytes](64)
        return to_node, from_node, MemoryByteStream(node_writes, node_reads)

    hello = encode_frame(Hello(PROTOCOL_VERSION, Role.MIX))
    async with anyio.create_task_group() as tg:
        senders = []
        for _ in range(MAX_UNAUTHENTICATED):
            to_node, from_node, stream = pipe()
            senders.append((to_node, from_node))
            to_node.send_nowait(hello)
            tg.start_soon(inbound.serve, stream)
            while inbound.accepted < len(senders):  # in this order: senders[0] is the oldest
                await anyio.lowlevel.checkpoint()
        await anyio.sleep(0.5)  # all of them wait for their handshake message
        assert inbound.unauthenticated == MAX_UNAUTHENTICATED
        # In one step: a newcomer arrives (pushing out the oldest), then the oldest's packet lands.
        newcomer_to, newcomer_from, newcomer = pipe()
        tg.start_soon(inbound.serve, newcomer)
        senders[0][0].send_nowait(encode_frame(Packet(bytes(PACKET_BYTES))))
        await anyio.sleep(0.5)
        assert inbound.accepted == MAX_UNAUTHENTICATED + 1
        assert sum(inbound.refused.values()) == 1, inbound.refused
        tg.cancel_scope.cancel()
    for end in [newcomer_to, newcomer_from, *(end for pair in senders for end in pair)]:
        end.close()
