"""Traffic policy: Poisson schedules, delays, stratified paths over mixed transports, loop routes."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from anonmail.core import policy
from anonmail.core.policy import NodeRef, PoissonSchedule, Topology, choose_path, loop_route
from anonmail.errors import PathError


def node(name: str, layer: int, *schemes: str, weight: float = 1.0) -> NodeRef:
    return NodeRef(name.encode().ljust(16, b"\0"), name, layer, frozenset(schemes or ("onion",)), weight)


# ----------------------------------------------------------------------------- sampling


def test_exponential_mean_with_fixed_seed():
    rng = random.Random(1)
    samples = [policy.exponential(rng, 0.5) for _ in range(20000)]
    assert statistics.fmean(samples) == pytest.approx(0.5, rel=0.03)
    assert min(samples) >= 0


def test_exponential_zero_and_bad_means():
    assert policy.exponential(random.Random(1), 0) == 0.0
    for bad in (-1, math.inf, math.nan):
        with pytest.raises(ValueError, match="mean must be finite"):
            policy.exponential(random.Random(1), bad)


def test_delays_are_whole_milliseconds_and_capped():
    rng = random.Random(2)
    delays = policy.sample_delays_ms(rng, 20000, 0.2)
    assert len(delays) == 20000 and all(isinstance(d, int) and d >= 0 for d in delays)
    assert statistics.fmean(delays) == pytest.approx(200, rel=0.03)
    assert policy.sample_delay_ms(random.Random(3), 1e12) == policy.MAX_DELAY_MS
    assert policy.sample_delays_ms(rng, 3, 0) == [0, 0, 0]


def test_same_seed_same_choices():
    a = policy.sample_delays_ms(random.Random(7), 50, 1.0)
    b = policy.sample_delays_ms(random.Random(7), 50, 1.0)
    assert a == b


def test_poisson_rate_and_spacing():
    schedule = PoissonSchedule(10.0, random.Random(5), start=100.0)
    deadlines = [schedule.next() for _ in range(20000)]
    assert all(b > a for a, b in zip(deadlines, deadlines[1:]))
    assert deadlines[0] > 100.0
    rate = len(deadlines) / (deadlines[-1] - 100.0)
    assert rate == pytest.approx(10.0, rel=0.03)
    gaps = [b - a for a, b in zip(deadlines, deadlines[1:])]
    # Exponential gaps: the standard deviation equals the mean.
    assert statistics.pstdev(gaps) == pytest.approx(statistics.fmean(gaps), rel=0.05)


def test_poisson_advances_from_previous_deadline_not_now():
    schedule = PoissonSchedule(2.0, random.Random(9))
    first = schedule.next()
    assert schedule.deadline == first
    second = next(iter(schedule))
    assert second > first and schedule.deadline == second


def test_poisson_zero_rate_never_fires_and_bad_rates():
    assert PoissonSchedule(0, random.Random(1)).next() == math.inf
    for bad in (-0.1, math.inf):
        with pytest.raises(ValueError, match="rate must be finite"):
            PoissonSchedule(bad, random.Random(1))


# ----------------------------------------------------------------------------- topology and paths


def mixed_topology() -> Topology:
    return Topology.from_nodes(
        [
            node("a1", 1, "onion"), node("b1", 1, "i2p"),
            node("a2", 2, "onion"),
            node("a3", 3, "onion", "i2p"),
            node("p", 0, "i2p"),
        ]
    )


def test_topology_groups_by_layer_in_id_order():
    topology = Topology.from_nodes([node("z1", 1), node("a1", 1), node("m2", 2), node("x3", 3), node("p", 0)])
    assert [n.name for n in topology.layers[0]] == ["a1", "z1"]
    assert [n.name for n in topology.providers] == ["p"]
    assert topology.node(node("m2", 2).node_id).name == "m2"
    assert topology.node(b"\xff" * 16) is None


def test_topology_refuses_unknown_layers():
    with pytest.raises(PathError, match="node bad claims layer 4; topology has 1..3"):
        Topology.from_nodes([node("bad", 4)])


def test_path_has_one_node_per_layer():
    topology = Topology.from_nodes([node(f"m{layer}{i}", layer) for layer in (1, 2, 3) for i in range(3)])
    for seed in range(20):
        path = choose_path(random.Random(seed), topology)
        assert [n.layer for n in path] == [1, 2, 3]


def test_mixed_transports_only_chain_hops_that_share_one():
    topology = mixed_topology()
    provider = topology.providers[0]
    for seed in range(30):
        path = choose_path(random.Random(seed), topology, egress=provider)
        assert [n.name for n in path] == ["a1", "a2", "a3"]
    # Without an egress constraint layer 1 may still not use b1: layer 2 speaks onion only.
    chosen = {choose_path(random.Random(seed), topology)[0].name for seed in range(30)}
    assert chosen == {"a1"}


def test_path_error_names_the_hop_without_a_common_transport():
    topology = mixed_topology()
    with pytest.raises(PathError, match="no node of mix layer 1 shares a transport with the ingress provider"):
        choose_path(random.Random(1), topology, ingress=node("in", 0, "i2p"))
    with pytest.raises(PathError, match="no node of mix layer 3 shares a transport with the egress provider"):
        choose_path(random.Random(1), topology, egress=node("out", 0, "tcp"))
    split = Topology.from_nodes([node("a1", 1, "onion"), node("a2", 2, "i2p"), node("a3", 3, "i2p")])
    with pytest.raises(PathError, match="no node of mix layer 1 shares a transport with mix layer 2"):
        choose_path(random.Random(1), split)


def test_empty_layer_is_a_path_error():
    topology = Topology.from_nodes([node("a1", 1), node("a3", 3)])
    with pytest.raises(PathError, match="mix layer 2 has no nodes in the consensus"):
        choose_path(random.Random(1), topology)


def test_weights_steer_the_choice():
    topology = Topology.from_nodes(
        [node("heavy", 1, weight=1.0), node("never", 1, weight=0.0), node("m2", 2), node("m3", 3)]
    )
    names = {choose_path(random.Random(seed), topology)[0].name for seed in range(50)}
    assert names == {"heavy"}
    # All weights zero: uniform rather than nothing.
    zero = Topology.from_nodes([node("x", 1, weight=0), node("y", 1, weight=0), node("m2", 2), node("m3", 3)])
    assert {choose_path(random.Random(s), zero)[0].name for s in range(50)} == {"x", "y"}


def test_path_choice_is_reproducible_and_roughly_uniform():
    topology = Topology.from_nodes([node(f"m{layer}{i}", layer) for layer in (1, 2, 3) for i in range(4)])
    a = [n.name for n in choose_path(random.Random(11), topology)]
    assert a == [n.name for n in choose_path(random.Random(11), topology)]
    rng = random.Random(12)
    counts: dict[str, int] = {}
    for _ in range(4000):
        first = choose_path(rng, topology)[0].name
        counts[first] = counts.get(first, 0) + 1
    assert all(850 < c < 1150 for c in counts.values()) and len(counts) == 4


# ----------------------------------------------------------------------------- loop routes


def full_topology(providers: bool = True) -> Topology:
    nodes = [node(f"m{layer}{i}", layer) for layer in (1, 2, 3) for i in range(2)]
    if providers:
        nodes.append(node("prov", 0))
    return Topology.from_nodes(nodes)


@pytest.mark.parametrize(
    "layer, shape",
    [(1, [2, 3, 0, 1]), (2, [3, 0, 1, 2]), (3, [0, 1, 2, 3])],
)
def test_loop_route_passes_every_later_layer_a_provider_and_earlier_layers(layer, shape):
    topology = full_topology()
    me = topology.layers[layer - 1][0]
    for seed in range(10):
        route = loop_route(random.Random(seed), topology, me)
        assert [n.layer for n in route] == shape
        assert route[-1] is me


def test_provider_loop_goes_through_every_layer_straight_back_to_itself():
    nodes = [node(f"m{layer}{i}", layer) for layer in (1, 2, 3) for i in range(2)]
    topology = Topology.from_nodes([*nodes, node("alpha", 0), node("beta", 0)])
    me = next(p for p in topology.providers if p.name == "alpha")
    for seed in range(50):
        route = loop_route(random.Random(seed), topology, me)
        # Never via the other provider (a provider-to-provider link carries only loops),
        # never to itself as a first hop.
        assert [n.layer for n in route] == [1, 2, 3, 0] and route[-1] is me


def test_provider_loop_respects_transports():
    topology = Topology.from_nodes(
        [node("a1", 1, "onion"), node("b1", 1, "i2p"), node("a2", 2, "onion", "i2p"),
         node("a3", 3, "onion"), node("b3", 3, "i2p"), node("p", 0, "i2p")]
    )
    for seed in range(20):
        route = loop_route(random.Random(seed), topology, topology.providers[0])
        assert [n.name for n in route] == ["b1", "a2", "b3", "p"]


@pytest.mark.parametrize("layer, shape", [(1, [2, 3, 1]), (2, [3, 1, 2]), (3, [1, 2, 3])])
def test_loop_route_without_providers(layer, shape):
    topology = full_topology(providers=False)
    me = topology.layers[layer - 1][1]
    route = loop_route(random.Random(3), topology, me)
    assert [n.layer for n in route] == shape and route[-1] is me


def test_loop_route_respects_transports():
    topology = Topology.from_nodes(
        [node("a1", 1, "onion"), node("b1", 1, "i2p"), node("a2", 2, "onion"), node("b2", 2, "i2p"),
         node("a3", 3, "i2p"), node("p", 0, "i2p")]
    )
    me = topology.layers[1][1]  # b2, i2p only
    for seed in range(20):
        route = loop_route(random.Random(seed), topology, me)
        assert [n.name for n in route] == ["a3", "p", "b1", "b2"]


def test_loop_route_passes_over_a_provider_that_cannot_be_chained():
    topology = Topology.from_nodes(
        [node("a1", 1, "onion"), node("a2", 2, "onion"), node("a3", 3, "onion"),
         node("pi", 0, "i2p"), node("po", 0, "onion")]
    )
    for layer in (1, 2, 3):
        me = topology.layers[layer - 1][0]
        for seed in range(10):
            route = loop_route(random.Random(seed), topology, me)
            assert "pi" not in [n.name for n in route] and route[-1] is me


def test_loop_route_checks_the_hop_back_to_the_mix():
    # Layer 1 speaks onion; the only provider speaks i2p: the provider cannot feed it.
    topology = Topology.from_nodes(
        [node("a1", 1, "onion"), node("a2", 2, "onion", "i2p"), node("a3", 3, "onion", "i2p"), node("p", 0, "i2p")]
    )
    with pytest.raises(PathError, match="no loop route for a1 through any provider .*p and a1 share no transport"):
        loop_route(random.Random(1), topology, topology.layers[0][0])
    # Without providers, the last layer must reach back to layer 1.
    split = Topology.from_nodes([node("a1", 1, "onion"), node("a2", 2, "onion", "i2p"), node("a3", 3, "i2p")])
    with pytest.raises(PathError, match="mix layer 3 shares a transport with the egress provider"):
        loop_route(random.Random(1), split, split.layers[0][0])
