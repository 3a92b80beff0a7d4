"""The mem and tcp test transports pass the conformance suite; tcp stays on loopback."""

from __future__ import annotations

import socket

import pytest

from anonmail.errors import ConnectError, LinkBrokenError, LinkEndedError, TransportAddressError
from anonmail.net.memory import MemoryNetwork
from anonmail.net.router import Router
from anonmail.net.tcp import TcpTransport
from tests.conformance import TransportConformance

pytestmark = pytest.mark.network


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TestMemoryConformance(TransportConformance):
    scheme = "mem"

    @pytest.fixture
    async def transport_pair(self):
        network = MemoryNetwork()
        async with network.transport("a") as listener, network.transport("b") as connector:
            yield listener, connector, "mem://nobody"


class TestTcpConformance(TransportConformance):
    scheme = "tcp"

    @pytest.fixture
    async def transport_pair(self):
        async with TcpTransport() as listener, TcpTransport() as connector:
            yield listener, connector, f"tcp://127.0.0.1:{free_port()}"


def test_tcp_refuses_non_loopback_listen_address():
    with pytest.raises(TransportAddressError, match="loopback"):
        TcpTransport("tcp://0.0.0.0:7000")


@pytest.mark.anyio
async def test_tcp_refuses_to_connect_off_loopback():
    async with TcpTransport() as transport:
        with pytest.raises(TransportAddressError, match="loopback"):
            await transport.connect("tcp://10.0.0.1:7000")


@pytest.mark.anyio
async def test_router_refuses_test_schemes_in_production():
    network = MemoryNetwork()
    async with network.transport("a") as transport:
        router = Router([transport], production=True)
        with pytest.raises(TransportAddressError, match="tests only"):
            await router.connect("mem://b")
        assert not router.can_reach("mem://b")


@pytest.mark.anyio
async def test_router_says_which_transport_is_missing():
    network = MemoryNetwork()
    async with network.transport("a") as transport:
        router = Router([transport], production=False)
        with pytest.raises(TransportAddressError, match="no tcp transport"):
            await router.connect("tcp://127.0.0.1:7000")


@pytest.mark.anyio
async def test_memory_node_taken_down_refuses_and_breaks_streams():
    network = MemoryNetwork()
    async with network.transport("a") as a, network.transport("b") as b:
        import anyio

        async def handler(stream):
            await anyio.sleep_forever()

        await a.listen(handler)
        stream = await b.connect("mem://a")
        network.set_down("a")
        with pytest.raises((LinkEndedError, LinkBrokenError)):
            await stream.send(b"x")
            await stream.receive()

        with pytest.raises(ConnectError):
            await b.connect("mem://a")
        network.set_down("a", False)
        again = await b.connect("mem://a")
        await again.aclose()
