"""The onion transport against real tor processes on a private network on 127.0.0.1.

One network per session (``tests/integration/tor_fixtures.py``). Covered: the transport
conformance suite over onion, a restarted node keeping its onion address (launch mode), a
clear error for an unknown onion address, a control port refusing authentication, a tor that
cannot bootstrap, ``anonmail testnet tor-check``, and a listener whose tor restarts (attach mode)
or dies (launch mode) serving its onion address again.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time

import anyio
import nacl.signing
import pytest

from anonmail.core.uri import onion_address_from_key
from anonmail.errors import ConnectError, TorError
from anonmail.net.tor import (
    ONION_KEY_FILE,
    OnionTransport,
    TorAuthError,
    TorBootstrapError,
    TorSettings,
    start_tor_process,
    stop_tor_process,
)
from anonmail.testnet.checks import run_tor_check
from tests.conformance import TransportConformance, read_exactly

pytestmark = [
    pytest.mark.integration,
    pytest.mark.tor,
    pytest.mark.skipif(shutil.which("tor") is None, reason="tor is not installed"),
    # stem 1.8.2 starts its threads with Thread.setDaemon(), deprecated since Python 3.10
    pytest.mark.filterwarnings(r"ignore:setDaemon\(\) is deprecated:DeprecationWarning"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unknown_onion_address() -> str:
    """A well-formed onion address (real Ed25519 key, valid checksum) that nobody serves."""
    key = bytes(nacl.signing.SigningKey.generate().verify_key)
    return f"onion://{onion_address_from_key(key)}:7000"


# One rerun, for this class only. Each test publishes a fresh onion service and connects to it at
# once. In 3 of the last ~8 fresh-clone suite runs one of them failed: the client tor's descriptor
# fetch for the new address hung until the connect timeout (80 s), and tor then logged "Closed 4
# streams for service ... resolve failed. Fetch status: No more HSDir available to query", although
# `listen` had seen every HSDir take the descriptor. tor will not ask those HSDirs about that address
# again for a while, so retrying inside the test does not help; a rerun makes a new service with a new
# address. The same tests passed in every other run, and a real failure of the transport fails twice.
@pytest.mark.flaky(reruns=1, reruns_delay=5)
class TestOnionConformance(TransportConformance):
    scheme = "onion"
    connect_timeout = 90.0
    io_timeout = 30.0
    bulk_bytes = 256 * 1024
    concurrent_streams = 4
    supports_half_close = False  # tor closes a stream both ways when one side sends EOF

    @pytest.fixture
    async def transport_pair(self, tor_clients, tmp_path):
        server, client = tor_clients
        async with OnionTransport(server.settings(), data_dir=tmp_path / "listener") as listener, \
                OnionTransport(client.settings(connect_timeout=80.0)) as connector:
            yield listener, connector, unknown_onion_address()


async def _echo_once(stream) -> None:
    await stream.send((await read_exactly(stream, 4))[::-1])


@pytest.mark.anyio
async def test_restarted_node_keeps_its_onion_address(tor_network, tor_clients, tmp_path):
    """A node that launches its own tor twice with the same data dir serves the same address."""
    _server, client = tor_clients
    node_dir = tmp_path / "node"
    settings = TorSettings(launch=True, torrc_lines=tuple(tor_network.client_torrc_lines()), bootstrap_timeout=90)
    addresses = []
    pids = []
    for _ in range(2):
        async with OnionTransport(settings, data_dir=node_dir) as node, \
                OnionTransport(client.settings(connect_timeout=60.0)) as peer:
            pids.append(node.tor_pid)
            (address,) = await node.listen(_echo_once)
            addresses.append(address)
            with anyio.fail_after(90):
                stream = await peer.connect(address)
                async with stream:
                    await stream.send(b"ping")
                    assert await read_exactly(stream, 4) == b"gnip"
    assert addresses[0] == addresses[1]
    key_file = node_dir / ONION_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((node_dir / "tor").stat().st_mode) == 0o700
    for pid in pids:  # the launched tors are gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.anyio
async def test_unknown_onion_address_fails_clearly_within_its_timeout(tor_clients):
    _server, client = tor_clients
    address = unknown_onion_address()
    settings = client.settings(connect_timeout=30.0)
    async with OnionTransport(settings) as transport:
        start = time.monotonic()
        with pytest.raises(ConnectError) as info:
            with anyio.fail_after(settings.connect_timeout + 10):
                await transport.connect(address)
        elapsed = time.monotonic() - start
    assert elapsed <= settings.connect_timeout + 2
    assert info.value.reason == "descriptor_not_found"
    assert info.value.address == address
    assert "descriptor not found" in str(info.value)
    assert address in str(info.value)


@pytest.fixture
def offline_tor(tmp_path):
    """A tor with password auth and DisableNetwork 1: answers on its control port, never bootstraps."""
    hashed = subprocess.run(
        ["tor", "--quiet", "--hash-password", "right-password"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip().splitlines()[-1]
    data = tmp_path / "offline-tor"
    data.mkdir(mode=0o700)
    torrc = data / "torrc"
    torrc.write_text("\n".join([
        f"DataDirectory {data}", "ControlPort 127.0.0.1:auto", f"ControlPortWriteToFile {data / 'port'}",
        f"HashedControlPassword {hashed}", "SocksPort 0", "DisableNetwork 1", "RunAsDaemon 0",
        f"Log notice file {data / 'notice.log'}",
    ]) + "\n")
    proc = start_tor_process("tor", torrc, stderr_path=data / "stderr.log")
    try:
        deadline = time.monotonic() + 30
        while not (data / "port").exists() or not (data / "port").read_text().strip():
            assert proc.poll() is None, (data / "notice.log").read_text()
            assert time.monotonic() < deadline, "offline tor wrote no control port file"
            time.sleep(0.05)
        yield int((data / "port").read_text().strip().rsplit(":", 1)[1])
    finally:
        stop_tor_process(proc)


@pytest.mark.anyio
async def test_wrong_control_password_is_a_clear_tor_error(offline_tor):
    port = offline_tor
    with pytest.raises(TorAuthError) as info:
        async with OnionTransport(TorSettings(control_port=port, password="wrong-password")):
            pass
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "password" in text
    assert "wrong-password" not in text
    with pytest.raises(TorAuthError, match=rf"127\.0\.0\.1:{port}.*wants a password"):
        async with OnionTransport(TorSettings(control_port=port)):
            pass


@pytest.mark.anyio
async def test_tor_that_cannot_bootstrap_is_a_clear_error(offline_tor):
    settings = TorSettings(control_port=offline_tor, password="right-password", bootstrap_timeout=1.5)
    start = time.monotonic()
    with pytest.raises(TorBootstrapError, match="did not bootstrap within"):
        async with OnionTransport(settings):
            pass
    assert time.monotonic() - start < 15


def test_tor_check_reports_ok_and_leaves_no_tor_behind():
    messages: list[str] = []
    result = run_tor_check(progress=messages.append, relays=4)
    assert result["ok"], result.get("error")
    assert result["nodes"] == 7
    assert 0 < result["bootstrap_s"] < 120 and result["rtt_ms"] > 0
    assert any("published" in m for m in messages)
    assert result["teardown_s"] < 15


@pytest.mark.anyio
async def test_listener_comes_back_with_the_same_address_after_its_tor_restarts(tor_network, tor_clients, tmp_path):
    """Kill the listener's tor (SIGTERM by PID), start it again: the same onion address answers."""
    _server, client = tor_clients
    phoenix = await anyio.to_thread.run_sync(lambda: tor_network.launch_client("phoenix", socks=False))
    pids = [phoenix.pid]

    async def echo_via(peer: OnionTransport, address: str, timeout: float) -> None:
        with anyio.fail_after(timeout):
            stream = await peer.connect(address)
            async with stream:
                await stream.send(b"ping")
                assert await read_exactly(stream, 4) == b"gnip"

    try:
        settings = phoenix.settings(health_interval=1.0, publish_timeout=60.0)
        async with OnionTransport(settings, data_dir=tmp_path / "listener") as listener, \
                OnionTransport(client.settings(connect_timeout=60.0)) as peer:
            (address,) = await listener.listen(_echo_once)
            await echo_via(peer, address, 70)

            await anyio.to_thread.run_sync(tor_network.stop_client, phoenix)
            with pytest.raises(ProcessLookupError):
                os.kill(phoenix.pid, 0)
            with anyio.fail_after(10):  # the watchdog notices (stem reports the connection closed)
                while listener.tor_down is None:
                    await anyio.sleep(0.1)
            start = time.monotonic()
            with pytest.raises(ConnectError) as info:  # fails at once, does not wait out its timeout
                await listener.connect(address)
            assert info.value.reason == "tor_unreachable" and time.monotonic() - start < 5

            restarted = await anyio.to_thread.run_sync(tor_network.restart_client, phoenix)
            pids.append(restarted.pid)
            with anyio.fail_after(120):
                while listener.tor_down is not None:
                    await anyio.sleep(0.2)
                await echo_via(peer, address, 90)
    finally:
        await anyio.to_thread.run_sync(tor_network.stop_client, phoenix)
    for pid in pids:  # no tor left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.anyio
async def test_launched_tor_that_dies_is_started_again(tor_network, tor_clients, tmp_path):
    """Launch mode: the transport's own tor is killed; it starts it again and republishes the address."""
    _server, client = tor_clients
    settings = TorSettings(launch=True, torrc_lines=tuple(tor_network.client_torrc_lines()), bootstrap_timeout=90,
                           health_interval=1.0)
    async with OnionTransport(settings, data_dir=tmp_path / "node") as node, \
            OnionTransport(client.settings(connect_timeout=60.0)) as peer:
        (address,) = await node.listen(_echo_once)
        first_pid = node.tor_pid
        os.kill(first_pid, signal.SIGTERM)
        with anyio.fail_after(120):
            while node.tor_pid == first_pid or node.tor_down is not None:
                await anyio.sleep(0.2)
            stream = await peer.connect(address)
            async with stream:
                await stream.send(b"ping")
                assert await read_exactly(stream, 4) == b"gnip"
        second_pid = node.tor_pid
    for pid in (first_pid, second_pid):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.anyio
async def test_a_publication_that_stalls_is_withdrawn_and_added_again(tor_clients, tmp_path, caplog):
    """tor holding back the descriptor (``PublishHidServDescriptors 0``) stalls the first attempt.

    The transport withdraws that attempt's service and adds the same key again; once tor
    publishes, ``listen`` returns the one address, and a peer reaches it. When tor never
    publishes, ``listen`` fails with a clear error after ``publish_timeout`` and leaves no
    service behind.
    """
    import logging

    import stem.control

    server, client = tor_clients
    controller = await anyio.to_thread.run_sync(lambda: stem.control.Controller.from_port(port=server.control_port))
    await anyio.to_thread.run_sync(controller.authenticate)

    async def services(transport: OnionTransport) -> list[str]:
        """The onion services tor holds for this transport's control connection."""
        return await anyio.to_thread.run_sync(transport._controller.list_ephemeral_hidden_services)

    caplog.set_level(logging.INFO, logger="anonmail.net.tor")
    try:
        await anyio.to_thread.run_sync(controller.set_conf, "PublishHidServDescriptors", "0")
        # tor never publishes: a typed error naming the bound and the attempts, no service left behind
        async with OnionTransport(server.settings(publish_timeout=6.0), data_dir=tmp_path / "never") as never:
            start = time.monotonic()
            with pytest.raises(TorError) as info:
                await never.listen(_echo_once)
            assert time.monotonic() - start < 6.0 + 10
            assert await services(never) == []  # every attempt withdrawn
        assert "did not publish the onion service descriptor within 6 s (3 attempts)" in str(info.value)

        # tor publishes again while the second attempt waits: listen returns, the address answers
        caplog.clear()
        async with OnionTransport(server.settings(publish_timeout=60.0), data_dir=tmp_path / "late") as late, \
                OnionTransport(client.settings(connect_timeout=60.0)) as peer:
            async with anyio.create_task_group() as tg:
                addresses: list[str] = []

                async def listen() -> None:
                    addresses.extend(await late.listen(_echo_once))

                tg.start_soon(listen)
                with anyio.fail_after(45):
                    while not any("adding it again" in r.getMessage() for r in caplog.records):
                        await anyio.sleep(0.2)
                await anyio.to_thread.run_sync(controller.set_conf, "PublishHidServDescriptors", "1")
            assert any("published on attempt 2" in r.getMessage() for r in caplog.records)
            (address,) = addresses
            assert await services(late) == [address[len("onion://"):].split(".")[0]]  # the stalled one is gone
            with anyio.fail_after(70):
                stream = await peer.connect(address)
                async with stream:
                    await stream.send(b"ping")
                    assert await read_exactly(stream, 4) == b"gnip"
        # tor made the key on the stalled attempt; the key file holds it, so a restart keeps the address
        async with OnionTransport(server.settings(publish_timeout=60.0), data_dir=tmp_path / "late") as again:
            assert await again.listen(_echo_once) == [address]
    finally:
        await anyio.to_thread.run_sync(controller.reset_conf, "PublishHidServDescriptors")
        await anyio.to_thread.run_sync(controller.close)
