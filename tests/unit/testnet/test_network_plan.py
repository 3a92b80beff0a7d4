"""anonmail.testnet.network without processes: the plan, config edits, PID checks, construction."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from anonmail.errors import TestnetError
from anonmail.testnet.network import (
    NodeSpec,
    Testnet,
    plan_nodes,
    process_alive,
    set_toml_keys,
)

pytestmark = pytest.mark.unit

TOR_ONLY, I2P_ONLY, BOTH = ("tor",), ("i2p",), ("tor", "i2p")


def by_role(nodes: list[NodeSpec], role: str) -> list[NodeSpec]:
    return [n for n in nodes if n.role == role]


# --------------------------------------------------------------------------- plan_nodes

@pytest.mark.parametrize("mixes, providers, users", [(1, 1, 0), (2, 2, 2), (3, 3, 5), (8, 8, 8)])
def test_plan_counts_names_and_layers(mixes, providers, users):
    nodes = plan_nodes(tor=True, i2p=False, mixes_per_layer=mixes, providers=providers, users=users)
    roles = Counter(n.role for n in nodes)
    assert roles == Counter(authority=3, mix=3 * mixes, provider=providers, **({"agent": users} if users else {}))
    assert [n.name for n in by_role(nodes, "authority")] == ["auth1", "auth2", "auth3"]
    mixes_by_layer = Counter(n.layer for n in by_role(nodes, "mix"))
    assert mixes_by_layer == {1: mixes, 2: mixes, 3: mixes}
    assert all(n.layer is None for n in nodes if n.role != "mix")
    names = [n.name for n in nodes]
    assert len(set(names)) == len(names)
    assert [n.name for n in by_role(nodes, "provider")] == \
        ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"][:providers]
    # Start order: authorities, mixes layer by layer, providers, users.
    assert [n.role for n in nodes] == sorted((n.role for n in nodes),
                                             key=["authority", "mix", "provider", "agent"].index)
    assert [n.layer for n in by_role(nodes, "mix")] == sorted(n.layer for n in by_role(nodes, "mix"))


def test_users_are_assigned_round_robin_to_providers():
    nodes = plan_nodes(tor=True, i2p=False, mixes_per_layer=1, providers=2, users=5)
    agents = by_role(nodes, "agent")
    assert [(a.name, a.provider) for a in agents] == [
        ("alice", "alpha"), ("bob", "beta"), ("carol", "alpha"), ("dave", "beta"), ("erin", "alpha"),
    ]
    assert all(a.serves == () and a.layer is None for a in agents)
    assert all(n.provider is None for n in nodes if n.role != "agent")
    three = by_role(plan_nodes(tor=True, i2p=False, providers=3, users=4), "agent")
    assert [a.provider for a in three] == ["alpha", "beta", "gamma", "alpha"]


@pytest.mark.parametrize("tor, i2p, expected", [(True, False, TOR_ONLY), (False, True, I2P_ONLY)])
def test_one_network_every_node_serves_it(tor, i2p, expected):
    nodes = plan_nodes(tor=tor, i2p=i2p, mixes_per_layer=3, providers=3, users=3)
    for node in nodes:
        assert node.serves == (() if node.role == "agent" else expected), node


@pytest.mark.parametrize("mixes", [1, 2, 3, 4])
@pytest.mark.parametrize("providers", [1, 2, 3])
def test_both_networks_mix_tor_only_i2p_only_and_both(mixes, providers):
    nodes = plan_nodes(tor=True, i2p=True, mixes_per_layer=mixes, providers=providers, users=2)
    for role in ("authority", "mix", "provider"):
        assert TOR_ONLY in {n.serves for n in by_role(nodes, role)}, role
    servers = [n for n in nodes if n.role != "agent"]
    assert {n.serves for n in servers} == {TOR_ONLY, I2P_ONLY, BOTH}
    assert all(n.serves for n in servers)
    assert all(n.serves == () for n in by_role(nodes, "agent"))
    assert {n.serves for n in by_role(nodes, "authority")} == {TOR_ONLY, I2P_ONLY, BOTH}
    for layer in (1, 2, 3):
        in_layer = [n for n in by_role(nodes, "mix") if n.layer == layer]
        assert len(in_layer) == mixes
        if mixes >= 2:
            # Every layer has a node reachable over Tor and one reachable over I2P.
            assert {net for n in in_layer for net in n.serves} == {"tor", "i2p"}, layer


def test_both_networks_two_per_layer_uses_all_three_kinds():
    nodes = plan_nodes(tor=True, i2p=True, mixes_per_layer=2)
    assert {n.serves for n in nodes} == {TOR_ONLY, I2P_ONLY, BOTH, ()}
    assert {n.serves for n in by_role(nodes, "mix")} == {TOR_ONLY, I2P_ONLY, BOTH}


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"tor": False, "i2p": False}, "--tor"),
        ({"mixes_per_layer": 0}, "--mixes-per-layer"),
        ({"mixes_per_layer": 9}, "--mixes-per-layer"),
        ({"providers": 0}, "--providers"),
        ({"providers": 9}, "--providers"),
        ({"users": 9}, "--users"),
        ({"users": -1}, "--users"),
    ],
)
def test_bad_plan_arguments_name_the_option(kwargs, option):
    arguments = {"tor": True, "i2p": False, **kwargs}
    with pytest.raises(TestnetError, match=option):
        plan_nodes(**arguments)


def test_plan_limits_are_inclusive():
    assert len(by_role(plan_nodes(tor=True, i2p=False, mixes_per_layer=8), "mix")) == 24
    assert by_role(plan_nodes(tor=True, i2p=False, users=0), "agent") == []
    assert len(by_role(plan_nodes(tor=True, i2p=False, users=8, providers=8), "agent")) == 8


# --------------------------------------------------------------------------- NodeSpec

@pytest.mark.parametrize(
    "spec, subdir",
    [
        (NodeSpec("auth1", "authority", TOR_ONLY), "authorities/auth1"),
        (NodeSpec("mix2b", "mix", I2P_ONLY, layer=2), "mixes/mix2b"),
        (NodeSpec("alpha", "provider", BOTH), "providers/alpha"),
        (NodeSpec("alice", "agent", (), provider="alpha"), "users/alice"),
    ],
)
def test_nodespec_subdir(spec, subdir):
    assert spec.subdir == subdir


def test_nodespec_unknown_role_has_no_subdir():
    with pytest.raises(KeyError):
        NodeSpec("x", "relay", TOR_ONLY).subdir  # noqa: B018


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


# --------------------------------------------------------------------------- process_alive

def test_process_alive():
    assert process_alive(os.getpid()) is True
    assert process_alive(None) is False
    assert process_alive(0) is False
    child = subprocess.Popen(["true"])
    child.wait()
    assert process_alive(child.pid) is False  # reaped: gone (a recycled PID is very unlikely this fast)


def test_process_alive_is_false_for_a_zombie():
    child = subprocess.Popen(["true"])
    try:
        # Not waited for: it exits and stays a zombie until reaped.
        for _ in range(200):
            with open(f"/proc/{child.pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        assert process_alive(child.pid) is False
    finally:
        child.wait()


# --------------------------------------------------------------------------- Testnet

def _children() -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            pass
    return pids


def test_constructing_a_testnet_starts_nothing(tmp_path):
    before = _children()
    directory = tmp_path / "net"
    net = Testnet(directory, tor=True, i2p=True, mixes_per_layer=2, providers=2, users=3)
    assert _children() == before
    assert not directory.exists()  # nothing written until up()
    assert net.directory == directory.resolve()
    assert net.names == []
    assert [s.name for s in net.specs] == [s.name for s in plan_nodes(tor=True, i2p=True, users=3)]
    state = net.state()
    assert state["phase"] == "new" and state["processes"] == [] and state["daemons"] == {}
    assert state["networks"] == ["tor", "i2p"]
    assert Testnet.__test__ is False


def test_constructing_a_testnet_checks_the_plan(tmp_path):
    with pytest.raises(TestnetError, match="--tor"):
        Testnet(tmp_path / "net", tor=False, i2p=False)
    with pytest.raises(TestnetError, match="--mixes-per-layer"):
        Testnet(tmp_path / "net", mixes_per_layer=0)
    assert not (tmp_path / "net").exists()


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


def test_an_agent_is_ready_only_once_its_provider_session_is_up(tmp_path: Path):
    from anonmail.testnet.network import _Proc

    popen = subprocess.Popen(["sleep", "30"])
    try:
        proc = _Proc(NodeSpec("alice", "agent", (), provider="alpha"), tmp_path, ["sleep"], tmp_path / "log", popen)
        net = Testnet(tmp_path / "net", tor=True)
        assert not net._ready(proc, consensus=False)  # no status file yet
        status = {"role": "agent", "pid": popen.pid, "running": True, "connected": False}
        (tmp_path / "status.json").write_text(json.dumps(status))
        assert not net._ready(proc, consensus=False)  # running, still connecting
        (tmp_path / "status.json").write_text(json.dumps({**status, "connected": True}))
        assert net._ready(proc, consensus=False)
        (tmp_path / "status.json").write_text(json.dumps({**status, "connected": True, "pid": popen.pid + 1}))
        assert not net._ready(proc, consensus=False)  # an earlier run's file
    finally:
        popen.kill()
        popen.wait()
