"""anonmail.testnet.tomledit: setting keys in a commented config, keeping the rest."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from anonmail.errors import TestnetError
from anonmail.testnet.tomledit import set_toml_keys

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------- set_toml_keys

# What `mixnode init --tor --i2p` writes (mixnode/config.py), with [[peers]] as an authority has.
CONFIG = """\
# anonmail mix node configuration (TOML). Unknown keys are errors.
schema_version = 1
# bootstrap_nodes = 0         # commented default

[node]
name = "mix1a"          # unique in the consensus; a-z, 0-9, -
layer = 1                # mix layer 1..3

[tor]                    # serve as an onion service through a running tor (see torrc.example)
control_port = 9051      # or control_socket = "/run/tor/control"; or launch = true for a private tor
# socks_port = 9050      # default: ask tor

[i2p]                    # serve as an I2P destination through i2pd's SAM bridge
sam_host = "127.0.0.1"
sam_port = 7656
# inbound_length = 3     # tunnel hops; 3 is the I2P default

[[peers]]                     # another authority
address = "tcp://127.0.0.1:7302"
public_key = "AAAA"

[[peers]]                     # another authority
address = "tcp://127.0.0.1:7303"
public_key = "BBBB"
"""

BASE = {
    "schema_version": 1,
    "node": {"name": "mix1a", "layer": 1},
    "tor": {"control_port": 9051},
    "i2p": {"sam_host": "127.0.0.1", "sam_port": 7656},
    "peers": [
        {"address": "tcp://127.0.0.1:7302", "public_key": "AAAA"},
        {"address": "tcp://127.0.0.1:7303", "public_key": "BBBB"},
    ],
}


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "mixnode.toml"
    path.write_text(CONFIG)
    os.chmod(path, 0o644)
    return path


def parsed(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_set_keys_in_an_existing_table_replaces_the_key_and_keeps_the_rest(config):
    assert tomllib.loads(CONFIG) == BASE  # the sample itself is what we think it is
    set_toml_keys(config, "tor", {"control_port": 19051, "socks_port": 19050, "serve": False})
    expected = {**BASE, "tor": {"control_port": 19051, "socks_port": 19050, "serve": False}}
    assert parsed(config) == expected
    text = config.read_text()
    assert "control_port = 19051" in text and "socks_port = 19050" in text and "serve = false" in text
    assert "control_port = 9051" not in text  # the old line is gone, not shadowed
    assert text.count("control_port =") == 1
    # Comments survive: the header's, the commented-out default, the other tables'.
    assert "[tor]                    # serve as an onion service through a running tor (see torrc.example)" in text
    assert "# socks_port = 9050      # default: ask tor" in text
    assert "# inbound_length = 3     # tunnel hops; 3 is the I2P default" in text
    assert 'name = "mix1a"          # unique in the consensus; a-z, 0-9, -' in text
    assert text.count("[[peers]]                     # another authority") == 2
    # The new keys stay inside [tor], before [i2p].
    lines = text.splitlines()
    tor, i2p = lines.index(next(x for x in lines if x.startswith("[tor]"))), \
        lines.index(next(x for x in lines if x.startswith("[i2p]")))
    assert all(tor < lines.index(f"{k} = {v}") < i2p
               for k, v in (("control_port", 19051), ("socks_port", 19050), ("serve", "false")))
    assert mode(config) == 0o600


def test_set_keys_renders_values_as_toml(config):
    set_toml_keys(config, "i2p", {"serve": True, "sam_host": 'lo"cal\\host', "session_timeout": 120.0,
                                  "inbound_length": 1})
    text = config.read_text()
    assert "serve = true" in text and "session_timeout = 120.0" in text and "inbound_length = 1" in text
    assert 'sam_host = "lo\\"cal\\\\host"' in text
    assert parsed(config)["i2p"] == {"serve": True, "sam_host": 'lo"cal\\host', "session_timeout": 120.0,
                                     "inbound_length": 1, "sam_port": 7656}
    with pytest.raises(TypeError):
        set_toml_keys(config, "i2p", {"bad": [1, 2]})


def test_set_keys_in_a_missing_table_appends_it(config):
    set_toml_keys(config, "agent", {"lambda_payload": 0.5, "threads": False, "provider": "alpha"})
    assert parsed(config) == {**BASE, "agent": {"lambda_payload": 0.5, "threads": False, "provider": "alpha"}}
    text = config.read_text()
    assert text.startswith(CONFIG.rstrip("\n"))  # everything before is untouched
    assert text.rstrip().endswith('[agent]\nlambda_payload = 0.5\nthreads = false\nprovider = "alpha"')
    assert mode(config) == 0o600


def test_set_top_level_keys_before_the_first_table(config):
    set_toml_keys(config, None, {"bootstrap_nodes": 9, "schema_version": 1})
    assert parsed(config) == {**BASE, "bootstrap_nodes": 9}
    text = config.read_text()
    assert text.count("schema_version") == 1
    assert text.index("bootstrap_nodes = 9") < text.index("[node]")
    assert "# bootstrap_nodes = 0         # commented default" in text
    # Setting it again replaces, never duplicates.
    set_toml_keys(config, None, {"bootstrap_nodes": 11})
    assert parsed(config)["bootstrap_nodes"] == 11
    assert config.read_text().count("bootstrap_nodes = ") == 2  # the new line and the commented one


def test_set_keys_in_the_table_before_arrays_of_tables(tmp_path):
    path = tmp_path / "authority.toml"
    path.write_text('name = "a"\n\n[tor]\ncontrol_port = 1\n\n[[peers]]\naddress = "x"\n')
    set_toml_keys(path, "tor", {"control_port": 2, "serve": False})
    assert parsed(path) == {"name": "a", "tor": {"control_port": 2, "serve": False}, "peers": [{"address": "x"}]}
    set_toml_keys(path, "i2p", {"sam_port": 7660})
    assert parsed(path) == {"name": "a", "tor": {"control_port": 2, "serve": False}, "peers": [{"address": "x"}],
                            "i2p": {"sam_port": 7660}}
    assert mode(path) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_set_keys_on_a_file_without_tables(tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text("# just a comment\na = 1\n")
    set_toml_keys(path, None, {"a": 2, "b": "x"})
    assert parsed(path) == {"a": 2, "b": "x"}
    assert "# just a comment" in path.read_text()


def test_set_keys_replaces_a_multi_line_array_whole(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[tor]\ntorrc_lines = [\n  "A 1",\n  "B 2",\n]\ncontrol_port = 9051\n\n[i2p]\nsam_port = 7656\n')
    set_toml_keys(path, "tor", {"torrc_lines": "x", "control_port": 9999})
    assert tomllib.loads(path.read_text()) == {"tor": {"torrc_lines": "x", "control_port": 9999},
                                               "i2p": {"sam_port": 7656}}


def test_set_keys_refuses_to_replace_a_multi_line_string(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[agent]\nnote = """\nline\n"""\n')
    before = path.read_text()
    with pytest.raises(TestnetError, match="multi-line string"):
        set_toml_keys(path, "agent", {"note": "x"})
    assert path.read_text() == before
