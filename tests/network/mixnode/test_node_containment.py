"""An unexpected exception on one item never stops a mix, a provider or an authority.

A parser that raises an arbitrary exception is injected into each node's path for remote input
(Sphinx unwrapping, payload decoding, a client request, an authority request); the network must
go on delivering mail, the nodes must keep running, and each failure is counted by reason.
"""

from __future__ import annotations

import itertools
import logging
from contextlib import AsyncExitStack

import anyio
import pytest
import trio.testing

from anonmail.agent.outbox import queue_mail
from anonmail.core import sphinx
from anonmail.errors import DirectoryError, ProtocolError
from anonmail.clients.provider import ProviderClient
from anonmail.provider import delivery as provider_delivery
from anonmail.provider import node as provider_node
from mixnode.authority.answers import Answers
from tests.network.agent.test_agent import network, start_user, wait_until, wall_clock

pytestmark = pytest.mark.network


@pytest.fixture
def anyio_backend():
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.mark.anyio
async def test_mixes_and_providers_survive_exploding_parsers(tmp_path, monkeypatch, caplog):
    # hop_result reads every unwrapped hop's routing command, in the batch path and in process().
    real_hop_result, real_decode = sphinx.hop_result, provider_delivery.decode_payload
    calls = itertools.count()

    def hop_result(tag, routing, forwarded, mac_key):
        if next(calls) % 7 == 0:
            raise RuntimeError("a parser bug some packet can reach")
        return real_hop_result(tag, routing, forwarded, mac_key)

    decodes = itertools.count()

    def decode_payload(payload):
        if next(decodes) % 4 == 0:
            raise IndexError("another bug")
        return real_decode(payload)

    caplog.set_level(logging.ERROR)
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path)
        alice = await start_user(stack, net, tg, "alice", "alpha", 1, ack_timeout=5.0)
        bob = await start_user(stack, net, tg, "bob", "beta", 2, ack_timeout=5.0)
        alice.store.add_contact("bob", str(bob.address), now=wall_clock())
        monkeypatch.setattr(sphinx, "hop_result", hop_result)
        monkeypatch.setattr(provider_delivery, "decode_payload", decode_payload)
        for i in range(2):
            queue_mail(alice.store, to="bob", subject=f"through the bugs {i}", body=b"x", now=wall_clock())
        await wait_until(lambda: len(bob.store.inbox()) == 2, timeout=1200)
        faults = {name: node.faults.as_dict() for name, node in net.nodes.items()}
        assert sum(sum(f.values()) for f in faults.values()) > 10
        reasons = {reason for f in faults.values() for reason in f}
        assert any(r.startswith("RuntimeError at ") for r in reasons)
        assert any(r.startswith("IndexError at ") for r in reasons)
        assert all(node.status()["faults"] == node.faults.as_dict() for node in net.nodes.values())
        assert sum(n.stats.dropped["unexpected_error"] for n in net.nodes.values()) > 0
    logged = [r for r in caplog.records if "unexpected RuntimeError" in r.getMessage()]
    assert 1 <= len(logged) <= len(net.mix_configs) + len(net.provider_configs)  # once per node and reason
    assert "a parser bug" not in caplog.text


@pytest.mark.anyio
async def test_a_client_request_that_fails_unexpectedly_is_answered_and_the_session_goes_on(tmp_path, monkeypatch):
    async with AsyncExitStack() as stack:
        net, _tg = await network(stack, tmp_path)
        from anonmail.core.keys import IdentityKey

        identity = IdentityKey.generate()
        client = await ProviderClient.connect(net.client_router("c"), net.provider_address("alpha"), identity,
                                              "alpha", op="register")
        stack.push_async_callback(client.aclose)
        real_fetch = provider_node.Provider._fetch
        failing = {"left": 1}

        async def fetch(self, session, message):
            if failing["left"]:
                failing["left"] -= 1
                raise KeyError("a bug in fetch")
            return await real_fetch(self, session, message)

        monkeypatch.setattr(provider_node.Provider, "_fetch", fetch)
        with pytest.raises(ProtocolError) as info:
            await client.fetch()
        assert info.value.reason == "internal"
        result = await client.fetch()  # same session
        assert result.entries == []
        alpha = net.providers["alpha"]
        assert alpha.mail["refused_internal"] == 1 and alpha.faults.total == 1


@pytest.mark.anyio
async def test_an_authority_request_that_fails_unexpectedly_is_answered_and_the_authority_goes_on(
        tmp_path, monkeypatch):
    async with AsyncExitStack() as stack:
        net, _tg = await network(stack, tmp_path)
        epoch = net.epoch()
        real = Answers._get_consensus

        def broken(self, store, request):
            raise AttributeError("a bug in get_consensus")

        monkeypatch.setattr(Answers, "_get_consensus", broken)
        with pytest.raises(DirectoryError):
            await net.directory.fetch(epoch)
        assert all(a.faults.total >= 1 for a in net.authorities)
        monkeypatch.setattr(Answers, "_get_consensus", real)
        await anyio.sleep(1)
        consensus = await net.directory.fetch(epoch)
        assert consensus is not None and consensus.epoch == epoch
