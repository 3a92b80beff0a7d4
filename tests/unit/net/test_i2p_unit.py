"""The i2p transport and testnet without a router: SAM replies, errors, key files, settings, versions."""

from __future__ import annotations

import os
import stat
import sys

import anyio
import pytest
from i2plib import sam

from anonmail.errors import ConfigError, ConnectError, I2PError, KeyFileError, TestnetError
from anonmail.net.i2p import (
    DESTINATION_FILE,
    I2PSettings,
    I2PTransport,
    SamBridgeError,
    b32_address,
    connect_error,
    load_destination,
    parse_reply,
    save_destination,
    session_options,
)
from anonmail.testnet import i2p as testnet_i2p
from anonmail.testnet.i2p import find_i2pd, i2pd_version, parse_i2pd_version


def fake_private_destination(cert_len: int = 7) -> str:
    """A structurally valid private destination blob (random keys, key certificate)."""
    public = os.urandom(384) + bytes([5]) + cert_len.to_bytes(2, "big") + os.urandom(cert_len)
    return sam.i2p_b64encode(public + os.urandom(32 + 64))


# ------------------------------------------------------------------ replies ---


def test_parse_reply_reads_topic_action_and_options():
    reply = parse_reply(b"HELLO REPLY RESULT=OK VERSION=3.1\n")
    assert (reply.topic, reply.action, reply.ok) == ("HELLO", "REPLY", True)
    assert reply.options["VERSION"] == "3.1"


def test_parse_reply_keeps_quoted_messages_whole():
    reply = parse_reply('SESSION STATUS RESULT=I2P_ERROR MESSAGE="Session already exists here"\n')
    assert not reply.ok
    assert reply.result == "I2P_ERROR"
    assert reply.message == "Session already exists here"


def test_parse_reply_keeps_base64_values_with_equals_signs():
    value = "abc-~DEF=="
    reply = parse_reply(f"NAMING REPLY RESULT=OK NAME=x.b32.i2p VALUE={value}")
    assert reply.options["VALUE"] == value


def test_parse_reply_with_unbalanced_quote_still_parses():
    reply = parse_reply('STREAM STATUS RESULT=CANT_REACH_PEER MESSAGE="oops')
    assert reply.result == "CANT_REACH_PEER"


@pytest.mark.parametrize("line", [b"", b"HTTP/1.1 400 Bad Request\r\n", b"hello", b"SSH-2.0-OpenSSH_9.2"])
def test_parse_reply_rejects_what_is_not_sam(line):
    with pytest.raises(ValueError, match="not a SAM reply"):
        parse_reply(line)


@pytest.mark.parametrize(
    ("result", "reason"),
    [("CANT_REACH_PEER", "unreachable"), ("TIMEOUT", "timeout"), ("INVALID_KEY", "refused"),
     ("SOMETHING_NEW", "unreachable")],
)
def test_connect_errors_carry_reason_address_and_sam_text(result, reason):
    reply = parse_reply(f'STREAM STATUS RESULT={result} MESSAGE="the text"')
    err = connect_error(reply, "i2p://" + "a" * 52 + ".b32.i2p", "127.0.0.1:7656")
    assert isinstance(err, ConnectError)
    assert err.reason == reason
    assert err.address.startswith("i2p://aaaa")
    assert "127.0.0.1:7656" in str(err) and result in str(err) and "the text" in str(err)


def test_session_options_follow_settings():
    options = session_options(I2PSettings(inbound_length=2, outbound_quantity=3,
                                          extra_options={"i2cp.reduceOnIdle": "true"}))
    assert "SIGNATURE_TYPE=7" in options
    assert "inbound.length=2" in options and "outbound.length=3" in options
    assert "outbound.quantity=3" in options and "i2cp.reduceOnIdle=true" in options


# ----------------------------------------------------------------- settings ---


def test_settings_defaults_suit_the_real_network():
    settings = I2PSettings()
    assert (settings.sam_host, settings.sam_port) == ("127.0.0.1", 7656)
    assert settings.inbound_length == settings.outbound_length == 3
    assert settings.session_timeout >= 60


def test_testnet_settings_use_one_hop():
    settings = I2PSettings.for_testnet(17656)
    assert settings.sam_port == 17656
    assert settings.inbound_length == settings.outbound_length == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sam_port": 0}, "sam_port"), ({"sam_port": 70000}, "sam_port"), ({"sam_host": ""}, "sam_host"),
     ({"inbound_length": 8}, "inbound_length"), ({"outbound_length": -1}, "outbound_length"),
     ({"inbound_quantity": 0}, "inbound_quantity"), ({"session_timeout": 0}, "session_timeout"),
     ({"connect_timeout": float("inf")}, "connect_timeout"),
     ({"extra_options": {"bad key": "x"}}, "extra_options"),
     ({"extra_options": {"k": "a b"}}, "extra_options")],
)
def test_settings_reject_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        I2PSettings(**kwargs)


def test_health_interval_defaults_to_30_s_and_is_validated():
    assert I2PSettings().health_interval == 30.0
    assert I2PSettings(health_interval=0.5).health_interval == 0.5
    assert I2PSettings.for_testnet(17656, health_interval=2).health_interval == 2
    for bad in (0, -1, float("inf"), float("nan"), "30", None):
        with pytest.raises(ConfigError, match="health_interval"):
            I2PSettings(health_interval=bad)


def test_session_lost_error_is_both_a_connect_error_and_an_i2p_error():
    from anonmail.net.i2p import SessionLostError

    error = SessionLostError("our session is gone", address="i2p://x.b32.i2p")
    assert isinstance(error, ConnectError) and isinstance(error, I2PError)
    assert (error.reason, error.address) == ("session_lost", "i2p://x.b32.i2p")


def test_settings_are_frozen_and_hashable():
    settings = I2PSettings(extra_options={"b": "2", "a": "1"})
    with pytest.raises(AttributeError):
        settings.sam_port = 1  # type: ignore[misc]
    assert settings.extra_options == (("a", "1"), ("b", "2"))
    assert hash(settings) == hash(I2PSettings(extra_options=(("b", "2"), ("a", "1"))))


# -------------------------------------------------------------- key files ---


def test_destination_is_saved_0600_and_reloaded(tmp_path):
    private = fake_private_destination()
    path = save_destination(tmp_path / "node", private)
    assert path.name == DESTINATION_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_destination(tmp_path / "node") == private
    assert b32_address(private, private=True).endswith(".b32.i2p")
    assert len(b32_address(private, private=True)) == 52 + len(".b32.i2p")


def test_b32_of_private_and_public_agree():
    private = fake_private_destination()
    raw = sam.i2p_b64decode(private)
    public = sam.i2p_b64encode(raw[: 387 + 7])
    assert b32_address(private, private=True) == b32_address(public, private=False)


def test_missing_destination_is_none(tmp_path):
    assert load_destination(tmp_path) is None


def test_destination_readable_by_others_is_refused(tmp_path):
    path = save_destination(tmp_path, fake_private_destination())
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_destination(tmp_path)


def test_corrupt_destination_is_a_key_file_error(tmp_path):
    path = tmp_path / DESTINATION_FILE
    path.write_text("not base64 at all!")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="does not hold an I2P private destination"):
        load_destination(tmp_path)


# ------------------------------------------------------- missing bridge ---


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.anyio
async def test_missing_bridge_is_an_i2p_error_naming_it(tmp_path):
    port = _free_port()
    settings = I2PSettings(sam_port=port, control_timeout=5)
    async with I2PTransport(tmp_path, settings) as transport:
        with pytest.raises(I2PError) as info:
            await transport.connect("i2p://" + "a" * 52 + ".b32.i2p")
    assert isinstance(info.value, SamBridgeError)
    assert f"127.0.0.1:{port}" in str(info.value)


@pytest.mark.anyio
async def test_bridge_refusing_hello_is_named_with_sams_message(tmp_path):
    async def fake_bridge(stream):
        async with stream:
            await stream.receive()
            await stream.send(b'HELLO REPLY RESULT=NOVERSION MESSAGE="no common version"\n')

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, fake_bridge)
        async with I2PTransport(tmp_path, I2PSettings(sam_port=port, control_timeout=5)) as transport:
            with pytest.raises(SamBridgeError, match="refused HELLO.*NOVERSION: no common version") as info:
                await transport.listen(lambda s: anyio.sleep(0))
        assert f"127.0.0.1:{port}" in str(info.value)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_non_sam_service_is_reported_as_such(tmp_path):
    async def http_server(stream):
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, http_server)
        async with I2PTransport(None, I2PSettings(sam_port=port, control_timeout=5)) as transport:
            with pytest.raises(SamBridgeError, match="is it a SAM bridge"):
                await transport.connect("i2p://" + "b" * 52 + ".b32.i2p")
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_listen_without_data_dir_says_why():
    async with I2PTransport(None, I2PSettings(sam_port=_free_port())) as transport:
        with pytest.raises(I2PError, match="data_dir"):
            await transport.listen(lambda s: anyio.sleep(0))


@pytest.mark.anyio
async def test_connect_refuses_other_schemes():
    from anonmail.errors import TransportAddressError

    async with I2PTransport(None) as transport:
        with pytest.raises(TransportAddressError):
            await transport.connect("tcp://127.0.0.1:7000")


# ------------------------------------------------------------ i2pd versions ---


@pytest.mark.parametrize(
    ("text", "version"),
    [("i2pd version 2.45.1 (0.9.57)\nBoost version 1.74.0\n", (2, 45, 1)),
     ("i2pd version 2.56.0 (0.9.65)\n", (2, 56, 0)), ("command not found", None), ("", None)],
)
def test_parse_i2pd_version(text, version):
    assert parse_i2pd_version(text) == version


def _fake_i2pd(path, version: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\nprint('i2pd version {version} (0.9.99)')\n")
    path.chmod(0o755)
    return path


def test_find_i2pd_prefers_a_new_enough_cached_build(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("ANONMAIL_I2PD", raising=False)
    _fake_i2pd(tmp_path / "anonmail" / "i2pd-2.50.0" / "i2pd", "2.50.0")
    good = _fake_i2pd(tmp_path / "anonmail" / "i2pd-2.56.0" / "i2pd", "2.56.0")
    monkeypatch.setattr(testnet_i2p.shutil, "which", lambda name: None)
    monkeypatch.setattr(testnet_i2p, "_SYSTEM_I2PD", str(tmp_path / "none"))
    assert find_i2pd() == (good, (2, 56, 0))
    assert i2pd_version(good) == (2, 56, 0)


def test_find_i2pd_without_a_new_enough_one_says_run_make_bootstrap(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    old = _fake_i2pd(tmp_path / "bin" / "i2pd", "2.45.1")
    monkeypatch.setenv("ANONMAIL_I2PD", str(old))
    monkeypatch.setattr(testnet_i2p.shutil, "which", lambda name: None)
    monkeypatch.setattr(testnet_i2p, "_SYSTEM_I2PD", str(tmp_path / "none"))
    with pytest.raises(TestnetError, match="make bootstrap") as info:
        find_i2pd()
    assert "2.45.1" in str(info.value)


def test_network_needs_two_routers():
    with pytest.raises(TestnetError, match="at least 2"):
        testnet_i2p.I2PNetwork(1)
