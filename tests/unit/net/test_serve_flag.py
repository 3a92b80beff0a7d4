"""`serve = false` in [tor]/[i2p]: connect-only transports that a node's Router does not listen on."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import anyio
import anyio.abc
import pytest

from anonmail.config import load_toml
from anonmail.errors import ConfigError
from anonmail.net.base import Handler, Transport
from anonmail.net.i2p import I2PSettings, I2PTransport
from anonmail.net.memory import MemoryNetwork, memory_stream_pair
from anonmail.net.router import Router
from anonmail.net.settings import (
    build_transports,
    i2p_settings_from_table,
    tor_settings_from_table,
)
from anonmail.net.tor import OnionTransport, TorSettings

pytestmark = pytest.mark.unit


def load(tmp_path: Path, text: str, name: str):
    path = tmp_path / "node.toml"
    path.write_text("schema_version = 1\n" + text)
    return load_toml(path).table(name)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("value, expected", [("false", False), ("true", True)])
def test_tor_serve_key(tmp_path, value, expected):
    settings = tor_settings_from_table(load(tmp_path, f"[tor]\ncontrol_port = 9151\nserve = {value}\n", "tor"))
    assert settings.serve is expected
    assert settings.control_port == 9151


@pytest.mark.parametrize("value, expected", [("false", False), ("true", True)])
def test_i2p_serve_key(tmp_path, value, expected):
    settings = i2p_settings_from_table(load(tmp_path, f"[i2p]\nsam_port = 7660\nserve = {value}\n", "i2p"))
    assert settings.serve is expected
    assert settings.sam_port == 7660


def test_serve_defaults_to_true(tmp_path):
    assert tor_settings_from_table(load(tmp_path, "[tor]\ncontrol_port = 9151\n", "tor")).serve is True
    assert i2p_settings_from_table(load(tmp_path, "[i2p]\nsam_port = 7660\n", "i2p")).serve is True
    assert TorSettings().serve is True and I2PSettings().serve is True


@pytest.mark.parametrize(
    "reader, name, value",
    [
        (tor_settings_from_table, "tor", '"no"'),
        (tor_settings_from_table, "tor", "0"),
        (i2p_settings_from_table, "i2p", '"false"'),
        (i2p_settings_from_table, "i2p", "1"),
    ],
)
def test_non_boolean_serve_is_a_config_error_naming_the_key(tmp_path, reader, name, value):
    with pytest.raises(ConfigError, match=rf"node\.toml: {name}\.serve: must be true or false"):
        reader(load(tmp_path, f"[{name}]\nserve = {value}\n", name))


def test_built_transports_carry_the_serve_flag(tmp_path):
    tor, i2p = build_transports(tmp_path, tor=TorSettings(serve=False), i2p=I2PSettings(serve=True))
    assert isinstance(tor, OnionTransport) and tor.serves is False
    assert isinstance(i2p, I2PTransport) and i2p.serves is True
    tor, i2p = build_transports(tmp_path, tor=TorSettings(), i2p=I2PSettings(serve=False))
    assert tor.serves is True and i2p.serves is False


# --------------------------------------------------------------------------- Router.listen


class Recorder(Transport):
    """A tcp-scheme transport that records what the Router asks of it."""

    schemes = frozenset({"tcp"})

    def __init__(self, serve: bool) -> None:
        super().__init__()
        self.settings = SimpleNamespace(serve=serve)
        self.listened = 0
        self.connected: list[str] = []
        self.peer: anyio.abc.ByteStream | None = None

    async def listen(self, handler: Handler) -> list[str]:
        self.listened += 1
        return ["tcp://127.0.0.1:7001"]

    async def connect(self, address: str) -> anyio.abc.ByteStream:
        self.connected.append(address)
        ours, self.peer = memory_stream_pair()
        return ours


def test_transport_without_settings_serves():
    assert Recorder(serve=True).serves is True
    assert Recorder(serve=False).serves is False
    assert MemoryNetwork().transport("x").serves is True


async def _echo(stream: anyio.abc.ByteStream) -> None:
    await stream.send(b"echo:" + await stream.receive())


def test_router_listens_only_on_serving_transports():
    async def main() -> None:
        network = MemoryNetwork()
        recorder = Recorder(serve=False)
        async with network.transport("node") as mem, recorder:
            router = Router([recorder, mem], production=False)
            assert router.schemes == {"tcp", "mem"}
            addresses = await router.listen(_echo)
            assert addresses == ["mem://node"]
            assert recorder.listened == 0
            assert network.is_listening("node")
            # The connect-only transport still connects, chosen by scheme.
            stream = await router.connect("tcp://127.0.0.1:7002")
            assert recorder.connected == ["tcp://127.0.0.1:7002"]
            await stream.send(b"hi")
            assert await recorder.peer.receive() == b"hi"
            await stream.aclose()
            await recorder.peer.aclose()
            assert router.can_reach("tcp://127.0.0.1:7002")

    anyio.run(main)


def test_router_with_every_transport_serving_lists_all_addresses():
    async def main() -> None:
        network = MemoryNetwork()
        recorder = Recorder(serve=True)
        async with network.transport("node") as mem, recorder:
            addresses = await Router([recorder, mem], production=False).listen(_echo)
            assert addresses == ["tcp://127.0.0.1:7001", "mem://node"]
            assert recorder.listened == 1

    anyio.run(main)


def test_connect_only_memory_transport_reaches_others_but_is_not_reachable():
    async def main() -> None:
        network = MemoryNetwork()
        async with network.transport("server") as server, network.transport("client") as client:
            client.settings = SimpleNamespace(serve=False)
            assert await Router([server], production=False).listen(_echo) == ["mem://server"]
            client_router = Router([client], production=False)
            assert await client_router.listen(_echo) == []
            assert not network.is_listening("client")
            assert network.is_listening("server")
            stream = await client_router.connect("mem://server")
            await stream.send(b"ping")
            assert await stream.receive() == b"echo:ping"
            await stream.aclose()

    anyio.run(main)
