"""Attack: a mix that swallows packets (the first step of an (n-1) attack) is noticed by the loops it eats.

Audit finding 19: loops were counted and nothing acted on them. Now a user's agent counts a loop
that has not come back in time as lost, raises ``loop_alarm`` in its status with the nodes most
often on lost loops, and logs one warning (:mod:`anonmail.core.loopwatch`).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

import anyio
import pytest
import trio.testing

from anonmail.agent.status import agent_status
from tests.network.agent.test_agent import network, start_user, wall_clock

pytestmark = pytest.mark.network


@pytest.fixture
def anyio_backend():
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.mark.anyio
async def test_attack_a_mix_that_swallows_packets_raises_the_loop_alarm_and_is_named(tmp_path, caplog):
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path)
        alice = await start_user(stack, net, tg, "alice", "alpha", 1, lambda_loop=2.0)
        await anyio.sleep(60)
        alice.check_loops()
        assert alice.stats.loops_returned > 30 and not alice.stats.loop_alarm  # a healthy network: quiet
        assert alice.stats.loops_lost <= 2, alice.stats.loops_lost

        black_hole = "mix-2-0"
        swallowed = []
        net.mixes[black_hole].send = lambda node_id, packet: swallowed.append(node_id)  # accepts, forwards nothing
        with caplog.at_level(logging.WARNING, logger="anonmail.agent"):
            await anyio.sleep(120)
            alice.check_loops()
        assert swallowed
        status = agent_status(alice, started=wall_clock(), running=True)
        assert status["loop_alarm"] is True and status["loops_lost"] > 20
        assert 0.2 < status["loop_loss_rate"] < 0.9  # only the loops through the black hole
        assert status["loop_suspects"][0].startswith(f"{black_hole} (")
        warnings = [r.getMessage() for r in caplog.records if "loops are being lost" in r.getMessage()]
        assert len(warnings) == 1 and black_hole in warnings[0]
        assert str(alice.address) not in warnings[0]
