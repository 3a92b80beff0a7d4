"""anonmail.testnet.plan: which nodes a testnet runs, in which role, serving what."""

from __future__ import annotations

from collections import Counter

import pytest

from anonmail.errors import TestnetError
from anonmail.testnet.plan import NodeSpec, plan_nodes

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
