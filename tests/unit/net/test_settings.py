"""[tor]/[i2p] config tables: every key a node may set, and errors naming the file and the key."""

from __future__ import annotations

import pytest

from anonmail.config import Table
from anonmail.errors import ConfigError
from anonmail.net.settings import build_transports, i2p_settings_from_table, tor_settings_from_table


def table(data: dict, prefix: str) -> Table:
    return Table(data, "node.toml", prefix)


def test_tor_table_reads_every_documented_key():
    settings = tor_settings_from_table(table({
        "launch": False, "control_port": 9151, "socks_port": 9150, "password": "pw", "tor_binary": "tor",
        "virtual_port": 7001, "bootstrap_timeout": 30, "connect_timeout": 20, "health_interval": 5,
        "torrc_lines": ["SafeLogging 1"],
    }, "tor."))
    assert (settings.control_port, settings.socks_port, settings.virtual_port) == (9151, 9150, 7001)
    assert settings.health_interval == 5.0 and settings.torrc_lines == ("SafeLogging 1",)
    assert "pw" not in repr(settings)


def test_i2p_table_reads_every_documented_key():
    settings = i2p_settings_from_table(table({
        "sam_host": "127.0.0.1", "sam_port": 7660, "inbound_length": 1, "outbound_length": 2,
        "inbound_quantity": 3, "outbound_quantity": 4, "session_timeout": 60, "lookup_timeout": 10,
        "connect_timeout": 30, "health_interval": 5, "private_network": True,
    }, "i2p."))
    assert (settings.sam_port, settings.inbound_length, settings.outbound_quantity) == (7660, 1, 4)
    assert settings.health_interval == 5.0


@pytest.mark.parametrize(
    "reader, data, message",
    [
        (tor_settings_from_table, {"control_prot": 1}, r"node\.toml: unknown key tor\.control_prot"),
        (tor_settings_from_table, {"socks_port": 0}, r"node\.toml: tor\.socks_port: must be >= 1"),
        (tor_settings_from_table, {"launch": "yes"}, r"node\.toml: tor\.launch: must be true or false"),
        (tor_settings_from_table, {"launch": True, "password": "x"}, r"node\.toml: .*password"),
        (i2p_settings_from_table, {"sam_port": 70000}, r"node\.toml: i2p\.sam_port: must be <= 65535"),
        (i2p_settings_from_table, {"inbound_length": 9}, r"node\.toml: .*inbound_length"),
        (i2p_settings_from_table, {"health_interval": -1}, r"node\.toml: i2p\.health_interval: must be >= 0"),
    ],
)
def test_bad_values_name_file_and_key(reader, data, message):
    prefix = "tor." if reader is tor_settings_from_table else "i2p."
    with pytest.raises(ConfigError, match=message):
        reader(table(data, prefix))


@pytest.mark.parametrize("host", ["10.0.0.5", "192.168.1.2", "i2pd.example.org", "0.0.0.0", "::"])
def test_attack_a_sam_bridge_elsewhere_is_refused(host):
    """SAM is plaintext and SESSION CREATE carries the private destination: only this machine."""
    with pytest.raises(ConfigError, match=r"node\.toml: i2p\.sam_host: .*not this machine.*private key"):
        i2p_settings_from_table(table({"sam_host": host}, "i2p."))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost", "LOCALHOST"])
def test_a_sam_bridge_on_this_machine_is_accepted(host):
    assert i2p_settings_from_table(table({"sam_host": host}, "i2p.")).sam_host == host


@pytest.mark.parametrize("key", ["inbound_length", "outbound_length"])
@pytest.mark.parametrize("hops", [0, 1])
def test_attack_short_tunnels_need_private_network(key, hops):
    """0- or 1-hop tunnels give a node no anonymity: only on a private test network, said so."""
    with pytest.raises(ConfigError, match=rf"node\.toml: i2p\.{key}: {hops} hops? per tunnel gives no anonymity"
                                          r".*private_network = true"):
        i2p_settings_from_table(table({key: hops}, "i2p."))
    settings = i2p_settings_from_table(table({key: hops, "private_network": True}, "i2p."))
    assert getattr(settings, key) == hops
    assert getattr(i2p_settings_from_table(table({key: 2}, "i2p.")), key) == 2


def test_tcp_needs_test_mode(tmp_path):
    with pytest.raises(ConfigError, match="test_mode"):
        build_transports(tmp_path, tcp_listen="tcp://127.0.0.1:0", test_mode=False)
    (transport,) = build_transports(tmp_path, test_mode=True)
    assert transport.schemes == {"tcp"}
