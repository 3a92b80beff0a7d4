"""The onion transport without a tor daemon: SOCKS reply mapping, retries, settings, key files."""

from __future__ import annotations

import os
import socket
import stat

import anyio
import pytest

from anonmail.keyfiles import write_key_file
from anonmail.errors import ConfigError, ConnectError, KeyFileError, TestnetError, TorError, TransportAddressError
from anonmail.net.tor import (
    ONION_KEY_FILE,
    ControlEndpoint,
    OnionTransport,
    TorSettings,
    describe_socks_reply,
    launch_torrc_lines,
    load_onion_key,
    open_controller,
    socks_reply_code,
)
from anonmail.testnet.tor import TorNetwork

pytestmark = pytest.mark.filterwarnings(r"ignore:setDaemon\(\) is deprecated:DeprecationWarning")

ONION = "onion://" + "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd" + ".onion:7000"


# --- SOCKS replies


@pytest.mark.parametrize(
    ("code", "reason", "retryable"),
    [
        (0xF0, "descriptor_not_found", True),
        (0xF1, "descriptor_invalid", False),
        (0xF2, "introduction_failed", True),
        (0xF3, "rendezvous_failed", True),
        (0xF4, "client_auth_missing", False),
        (0xF5, "client_auth_wrong", False),
        (0xF6, "bad_onion_address", False),
        (0xF7, "introduction_timeout", True),
        (0x01, "socks_failure", True),
        (0x04, "host_unreachable", True),
        (0x05, "refused", False),
        (0x06, "ttl_expired", True),
    ],
)
def test_socks_reply_codes_map_to_stable_reasons(code, reason, retryable):
    reply = describe_socks_reply(code)
    assert (reply.code, reply.reason, reply.retryable) == (code, reason, retryable)
    assert reply.text


def test_unknown_socks_reply_code_is_named_in_hex():
    assert "0xEE" in describe_socks_reply(0xEE).text


def test_reply_code_is_read_from_python_socks_errors():
    from python_socks import ProxyError

    assert socks_reply_code(ProxyError("Host unreachable", error_code=4)) == 4
    # python-socks does not know tor's extended codes: they arrive in the message only
    assert socks_reply_code(ProxyError("Invalid reply code: 0XF0")) == 0xF0
    assert socks_reply_code(ProxyError("Malformed connect reply")) is None


# --- settings


def test_default_settings_attach_to_a_system_tor():
    settings = TorSettings()
    assert settings.control_port == 9051 and not settings.launch and settings.virtual_port == 7000


def test_tor_is_checked_on_every_30_seconds_by_default():
    assert TorSettings().health_interval == 30.0
    assert TorSettings(health_interval=0.5).health_interval == 0.5


def test_password_is_not_shown_in_repr():
    assert "hunter2" not in repr(TorSettings(password="hunter2"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"control_port": 0}, "control_port"),
        ({"control_port": 70000}, "control_port"),
        ({"socks_port": -1}, "socks_port"),
        ({"virtual_port": True}, "virtual_port"),
        ({"control_port": None}, "control_port or control_socket"),
        ({"launch": True, "password": "x"}, "cookie auth"),
        ({"torrc_lines": ["SocksPort 1"]}, "tuple"),
        ({"torrc_lines": ("A 1\nB 2",)}, "newlines"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"bootstrap_timeout": -1}, "bootstrap_timeout"),
        ({"retry_delay": -0.1}, "retry_delay"),
        ({"connect_attempts": 0}, "connect_attempts"),
        ({"tor_binary": ""}, "tor_binary"),
        ({"health_interval": 0}, "health_interval"),
        ({"health_interval": -5}, "health_interval"),
        ({"health_interval": True}, "health_interval"),
        ({"health_interval": "30"}, "health_interval"),
    ],
)
def test_invalid_settings_are_refused_with_the_key_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TorSettings(**kwargs)


def test_launched_tor_listens_on_loopback_only(tmp_path):
    lines = launch_torrc_lines(tmp_path, ["TestingTorNetwork 1"])
    ports = [line for line in lines if line.split()[0] in ("ControlPort", "SocksPort")]
    assert ports and all(line.split()[1].startswith("127.0.0.1:") for line in ports)
    assert "CookieAuthentication 1" in lines and lines[-1] == "TestingTorNetwork 1"


def test_a_test_network_needs_four_relays():
    with pytest.raises(TestnetError, match="at least 4 relays"):
        TorNetwork(relays=2, authorities=1)
    TorNetwork(relays=3, authorities=1)  # the authority relays too


# --- key file


def test_saved_onion_key_must_be_private(tmp_path):
    path = tmp_path / ONION_KEY_FILE
    write_key_file(path, b"ED25519-V3:" + b"A" * 88 + b"\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_onion_key(tmp_path) == ("ED25519-V3", "A" * 88)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_onion_key(tmp_path)


def test_foreign_onion_key_file_is_refused(tmp_path):
    write_key_file(tmp_path / ONION_KEY_FILE, b"RSA1024:abc\n")
    with pytest.raises(KeyFileError, match="not an ED25519-V3 key"):
        load_onion_key(tmp_path)


def test_no_data_dir_means_no_saved_key(tmp_path):
    assert load_onion_key(None) is None
    assert load_onion_key(tmp_path) is None


# --- control port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_tor_on_the_control_port_is_a_tor_error_naming_it():
    port = _free_port()
    with pytest.raises(TorError, match=rf"control port 127\.0\.0\.1:{port}"):
        open_controller(ControlEndpoint(port=port))


@pytest.mark.anyio
async def test_transport_without_tor_fails_to_enter_with_a_plain_tor_error():
    port = _free_port()
    with pytest.raises(TorError, match=str(port)):
        async with OnionTransport(TorSettings(control_port=port, control_timeout=5)):
            pass


# --- connect's retry loop against a fake SOCKS5 server


class _FakeController:
    """Answers the one GETINFO connect() asks when it fails."""

    def __init__(self, progress: int) -> None:
        self.progress = progress

    def get_info(self, key: str) -> str:
        assert key == "status/bootstrap-phase"
        return f'NOTICE BOOTSTRAP PROGRESS={self.progress} TAG=x SUMMARY="Phase {self.progress}"'


async def _fake_socks(reply_code: int, counter: list[int], *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    """A SOCKS5 server on 127.0.0.1 that answers every CONNECT with ``reply_code``."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)

    async def serve(stream) -> None:
        async with stream:
            await stream.receive(3)  # version, 1 method, no-auth
            await stream.send(b"\x05\x00")
            await stream.receive(1024)  # CONNECT request with the domain name
            counter.append(1)
            await stream.send(bytes([5, reply_code, 0, 1, 0, 0, 0, 0, 0, 0]))

    async with listener:
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(serve)


async def _connect_via_fake(reply_code: int, progress: int = 100, **settings):
    attempts: list[int] = []
    async with anyio.create_task_group() as tg:
        port = await tg.start(_fake_socks, reply_code, attempts)
        transport = OnionTransport(TorSettings(socks_port=port, retry_delay=0.01, **settings),
                                   controller=_FakeController(progress))
        try:
            with pytest.raises(ConnectError) as info:
                await transport.connect(ONION)
        finally:
            tg.cancel_scope.cancel()
    return info.value, len(attempts)


@pytest.mark.anyio
async def test_descriptor_not_found_is_retried_then_reported():
    error, attempts = await _connect_via_fake(0xF0, connect_attempts=3)
    assert attempts == 3
    assert error.reason == "descriptor_not_found"
    assert "3 attempts" in str(error) and "descriptor not found" in str(error) and "0xF0" in str(error)
    assert error.address == ONION


@pytest.mark.anyio
async def test_permanent_socks_failure_is_not_retried():
    error, attempts = await _connect_via_fake(0xF6, connect_attempts=5)
    assert attempts == 1 and error.reason == "bad_onion_address"


@pytest.mark.anyio
async def test_failure_while_tor_is_not_bootstrapped_says_so():
    error, _ = await _connect_via_fake(0x01, progress=45, connect_attempts=2)
    assert error.reason == "not_bootstrapped"
    assert "not bootstrapped" in str(error) and "45%" in str(error)


@pytest.mark.anyio
async def test_socks_port_nobody_listens_on_is_reported():
    transport = OnionTransport(TorSettings(socks_port=_free_port()), controller=_FakeController(100))
    with pytest.raises(ConnectError) as info:
        await transport.connect(ONION)
    assert info.value.reason == "tor_unreachable" and "SOCKS port" in str(info.value)


@pytest.mark.anyio
async def test_only_onion_addresses_are_accepted():
    transport = OnionTransport(TorSettings())
    with pytest.raises(TransportAddressError):
        await transport.connect("tcp://127.0.0.1:7000")


@pytest.mark.anyio
async def test_connect_while_tor_is_down_fails_at_once_as_tor_unreachable():
    transport = OnionTransport(TorSettings(connect_timeout=60))
    transport.mark_tor_down("the connection to tor's control port 127.0.0.1:9051 closed")
    with anyio.fail_after(2), pytest.raises(ConnectError) as info:
        await transport.connect(ONION)
    assert info.value.reason == "tor_unreachable" and "reconnecting" in str(info.value)


class _ClosedController:
    """A controller whose tor went away: every query fails like stem's closed socket."""

    def get_listeners(self, _kind):
        import stem

        raise stem.SocketClosed("socket closed")

    def get_info(self, _key: str) -> str:
        import stem

        raise stem.SocketClosed("socket closed")


@pytest.mark.anyio
async def test_connect_that_cannot_ask_tor_for_its_socks_port_is_tor_unreachable():
    transport = OnionTransport(TorSettings(), controller=_ClosedController())
    with anyio.fail_after(5), pytest.raises(ConnectError) as info:
        await transport.connect(ONION)
    assert info.value.reason == "tor_unreachable" and "SOCKS port" in str(info.value)
