"""The i2p transport against real i2pd routers on a private loopback network.

One network per test session (``i2p_network``); each test creates its own SAM sessions, in
parallel where it can, because every new session waits for tunnels (6-12 s).
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import logging
import os
import subprocess
import time

import anyio
import anyio.abc
import pytest

from anonmail.core.sizes import PACKET_BYTES
from anonmail.core.wire import Packet, Role
from anonmail.errors import ConnectError, I2PError
from anonmail.net.framed import FramedStream
from anonmail.net.i2p import DESTINATION_FILE, I2PSettings, I2PTransport, SessionLostError
from anonmail.testnet.checks import run_i2p_check
from anonmail.testnet.i2p import I2PNetwork
from tests.conformance import TransportConformance

pytestmark = [pytest.mark.integration, pytest.mark.i2p]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """asyncio only, one event loop for the module: the SAM sessions below are shared."""
    return "asyncio"


def random_b32_address() -> str:
    """An I2P address nobody has a destination for."""
    return "i2p://" + base64.b32encode(os.urandom(32)).decode().rstrip("=").lower() + ".b32.i2p"


async def open_sessions(*calls) -> None:
    """Create SAM sessions concurrently (each waits several seconds for tunnels)."""
    async with anyio.create_task_group() as tg:
        for call in calls:
            tg.start_soon(call)


class SharedListener:
    """One test's view of the module's listening transport: ``listen`` routes new streams to it.

    Every new SAM session waits 6-12 s for tunnels, so the conformance tests share one listening
    and one connecting session instead of paying that eight times; the accept loop, streams
    and connects under test are the real ones.
    """

    schemes = I2PTransport.schemes

    def __init__(self, transport: I2PTransport, address: str) -> None:
        self.transport = transport
        self.address = address
        self.handler = None

    async def dispatch(self, stream: anyio.abc.ByteStream) -> None:
        assert self.handler is not None, "a stream arrived before any test listened"
        await self.handler(stream)

    async def listen(self, handler) -> list[str]:
        self.handler = handler
        return [self.address]


@pytest.fixture(scope="module")
async def i2p_shared(i2p_network: I2PNetwork, tmp_path_factory):
    """A listening transport on router 0 and a connecting one on router 1, for the module."""
    data_dir = tmp_path_factory.mktemp("i2p-listener")
    async with I2PTransport(data_dir, i2p_network.settings(0)) as listener, \
            I2PTransport(None, i2p_network.settings(1, lookup_timeout=10.0)) as connector:
        shared: list[SharedListener] = []

        async def listen() -> None:
            view = SharedListener(listener, "")
            (view.address,) = await listener.listen(view.dispatch)
            shared.append(view)

        await open_sessions(listen, functools.partial(connector.open_session, listening=False))
        yield shared[0], connector


class TestI2PConformance(TransportConformance):
    scheme = "i2p"
    connect_timeout = 60.0
    io_timeout = 60.0
    bulk_bytes = 256 * 1024
    # SAM has no half-close: the socket's end is the end of the whole I2P stream.
    supports_half_close = False

    @pytest.fixture
    async def transport_pair(self, i2p_shared):
        view, connector = i2p_shared
        yield view, connector, random_b32_address()
        view.handler = None


async def echo(stream: anyio.abc.ByteStream) -> None:
    framed = FramedStream(stream)
    await framed.expect_hello()
    await framed.hello(Role.MIX)
    while (frame := await framed.receive()) is not None:
        await framed.send(frame)


async def round_trip(connector: I2PTransport, address: str, deadline_s: float = 90.0) -> None:
    """Connect (retrying while the new lease set spreads), exchange HELLO and one packet."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            stream = await connector.connect(address)
            break
        except ConnectError:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(1.0)
    async with stream:
        framed = FramedStream(stream)
        packet = Packet(os.urandom(PACKET_BYTES))
        with anyio.fail_after(60):
            await framed.hello(Role.PROVIDER)
            await framed.expect_hello()
            await framed.send(packet)
            assert await framed.receive() == packet


async def round_trip_from_fresh_clients(network: I2PNetwork, address: str,
                                        first: I2PTransport | None = None) -> None:
    """Round trip from ``first``, else from new client sessions on routers 0 and 1.

    A destination that came back on new tunnels may still be looked up as its old lease set
    (a floodfill has not got the new one yet); a session that cached it keeps using the dead
    leases until they expire (<= 10 min), so a failed attempt moves on to a new session.
    """
    async def answers(client: I2PTransport) -> bool:
        try:
            with anyio.fail_after(40):
                await round_trip(client, address, deadline_s=20.0)
        except (TimeoutError, ConnectError):
            return False
        return True

    if first is not None and await answers(first):
        return
    failures: list[str] = []
    for router in (0, 1):
        answered = False
        try:
            async with I2PTransport(None, network.settings(router, session_timeout=60.0)) as fresh:
                await fresh.open_session(listening=False)
                answered = await answers(fresh)
                if not answered:
                    failures.append(f"router {router}: no round trip")
        except* I2PError as group:  # this router did not build the new session's tunnels in time
            # (it leaves the transport's task group wrapped in an exception group, hence except*)
            failures.append(f"router {router}: {'; '.join(str(e) for e in group.exceptions)}")
        if answered:
            return
    raise AssertionError(f"{address} did not answer from fresh client sessions: {failures}")


@pytest.mark.anyio
async def test_restart_keeps_the_i2p_address(i2p_network: I2PNetwork, i2p_shared, tmp_path) -> None:
    _view, connector = i2p_shared
    data_dir = tmp_path / "node"
    async with I2PTransport(data_dir, i2p_network.settings(2)) as first:
        (address,) = await first.listen(echo)
        await round_trip(connector, address)
    assert (data_dir / DESTINATION_FILE).stat().st_mode & 0o777 == 0o600
    # Restarted on another router: the address is the key in the data dir, not the router. A
    # fresh connector: the old one's router caches the dead leases until they expire (<= 10 min).
    async with I2PTransport(data_dir, i2p_network.settings(0)) as second, \
            I2PTransport(None, i2p_network.settings(1)) as fresh:
        results: list[list[str]] = []

        async def listen() -> None:
            results.append(await second.listen(echo))

        await open_sessions(listen, functools.partial(fresh.open_session, listening=False))
        assert results == [[address]]
        await round_trip_from_fresh_clients(i2p_network, address, fresh)


@pytest.mark.anyio
async def test_unknown_address_fails_clearly_within_its_timeout(i2p_shared) -> None:
    _view, connector = i2p_shared
    address = random_b32_address()
    start = time.monotonic()
    with pytest.raises(ConnectError) as info:
        await connector.connect(address)
    elapsed = time.monotonic() - start
    assert elapsed < connector.settings.lookup_timeout + 5
    assert info.value.address == address
    assert info.value.reason in {"lookup_failed", "timeout"}
    assert address[6:20] in str(info.value) and "lookup" in str(info.value).lower()


@pytest.mark.anyio
async def test_missing_sam_bridge_is_a_clear_i2p_error(tmp_path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with I2PTransport(tmp_path, I2PSettings.for_testnet(port)) as transport:
        with pytest.raises(I2PError, match=f"no SAM bridge at 127.0.0.1:{port}"):
            await transport.listen(echo)


def _check_router_pids() -> set[int]:
    """i2pd processes of i2p-check networks (their folders are named anonmail-i2p-check-*)."""
    out = subprocess.run(["pgrep", "-f", "i2pd --conf .*anonmail-i2p-check-"], capture_output=True,
                         text=True, check=False).stdout
    return {int(pid) for pid in out.split()}


def test_i2p_check_is_ok_and_leaves_no_router_behind(i2p_network: I2PNetwork) -> None:
    before = _check_router_pids()
    steps: list[str] = []
    # In a thread of its own: this module's event loop is running in the test's thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        result = pool.submit(run_i2p_check, progress=steps.append, routers=3).result()
    assert result["ok"], result.get("error")
    assert result["routers"] == 3
    assert result["bootstrap_s"] > 0 and result["rtt_ms"] > 0
    assert any("round trip" in step for step in steps)
    assert _check_router_pids() <= before


# Keep this test last in the module: it stops and restarts router 2 (restored before it returns).
@pytest.mark.anyio
async def test_listener_survives_a_router_restart(i2p_network: I2PNetwork, tmp_path, caplog) -> None:
    """Router 2 restarts under a listener: its session is re-created and the address answers again."""
    caplog.set_level(logging.WARNING, logger="anonmail.net.i2p")
    restarted = 2
    settings = i2p_network.settings(restarted, health_interval=2.0, control_timeout=5.0)
    async with I2PTransport(tmp_path / "node", settings) as listener:
        async with I2PTransport(None, i2p_network.settings(1)) as client:
            results: list[list[str]] = []

            async def listen() -> None:
                results.append(await listener.listen(echo))

            await open_sessions(listen, functools.partial(client.open_session, listening=False))
            (address,) = results[0]
            await round_trip(client, address)

        t0 = time.monotonic()
        await anyio.to_thread.run_sync(i2p_network.stop_router, restarted)
        # Noticed at once (the pending STREAM ACCEPT ends) or at the latest at the next health check.
        with anyio.fail_after(settings.health_interval + settings.control_timeout + 5):
            while listener.listening_ready:
                await anyio.sleep(0.1)
        # Meanwhile connect fails at once with a clear error instead of hanging.
        with anyio.fail_after(settings.control_timeout + 5), pytest.raises(SessionLostError) as info:
            await listener.connect(random_b32_address())
        assert isinstance(info.value, I2PError) and info.value.reason == "session_lost"
        assert "router restarted or is down" in str(info.value)

        await anyio.to_thread.run_sync(i2p_network.start_router, restarted)
        with anyio.fail_after(120):
            while not listener.listening_ready:
                await anyio.sleep(0.2)
        assert listener.address == address
        # Fresh client sessions: router 1's old one still holds the dead destination's leases.
        await round_trip_from_fresh_clients(i2p_network, address)
        elapsed = time.monotonic() - t0
        assert elapsed < 180, elapsed

    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("lost" in m and "re-creating" in m for m in messages), messages
    assert any("re-created" in m for m in messages), messages
    private_key = (tmp_path / "node" / DESTINATION_FILE).read_text().strip()
    assert not any(private_key[:40] in m for m in messages)  # no secrets in the log
