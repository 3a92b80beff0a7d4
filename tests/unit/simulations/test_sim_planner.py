"""PathPlanner (the simulator's path source) draws exactly what choose_path draws."""

from __future__ import annotations

import random

import pytest

from anonmail.core.policy import NodeRef, PathPlanner, Topology, choose_path
from anonmail.errors import PathError

pytestmark = pytest.mark.unit


def node(name: str, layer: int, *schemes: str, weight: float = 1.0) -> NodeRef:
    return NodeRef(name.encode().ljust(16, b"\0"), name, layer, frozenset(schemes or ("onion",)), weight)


def mixed_topology() -> Topology:
    return Topology.from_nodes([
        node("a1", 1, "onion"), node("b1", 1, "i2p", weight=3.0), node("c1", 1, "onion", "i2p", weight=0.5),
        node("a2", 2, "onion"), node("b2", 2, "i2p"), node("c2", 2, "onion", "i2p", weight=2.0),
        node("a3", 3, "onion", weight=0.0), node("b3", 3, "i2p"), node("c3", 3, "onion", "i2p"),
        node("p-onion", 0, "onion"), node("p-i2p", 0, "i2p"), node("p-both", 0, "onion", "i2p"),
    ], layers=3)


def test_planner_matches_choose_path_draw_for_draw():
    topo = mixed_topology()
    planner = PathPlanner(topo)
    ends = [None, *topo.providers]
    a, b = random.Random(11), random.Random(11)
    for i in range(3000):
        ingress, egress = ends[i % len(ends)], ends[(i // len(ends)) % len(ends)]
        layers = [2, 3] if i % 7 == 0 else None
        try:
            want = choose_path(a, topo, ingress=ingress, egress=egress, layers=layers)
        except PathError as exc:
            with pytest.raises(PathError, match=str(exc).split("(")[0].strip()):
                planner.choose(b, ingress=ingress, egress=egress, layers=layers)
            continue
        assert planner.choose(b, ingress=ingress, egress=egress, layers=layers) == want
    assert a.random() == b.random()  # both consumed the same draws


def test_planner_all_zero_weights_and_errors_like_choose_path():
    zero = Topology.from_nodes([node("x1", 1, weight=0.0), node("y1", 1, weight=0.0), node("x2", 2), node("x3", 3)])
    planner = PathPlanner(zero)
    a, b = random.Random(2), random.Random(2)
    assert [planner.choose(b) for _ in range(50)] == [choose_path(a, zero) for _ in range(50)]
    broken = Topology.from_nodes([node("x1", 1, "onion"), node("x2", 2, "i2p"), node("x3", 3, "i2p")])
    with pytest.raises(PathError, match="mix layer 1 shares a transport with mix layer 2"):
        PathPlanner(broken).choose(random.Random(1))
