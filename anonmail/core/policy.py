"""Traffic policy shared by agents, providers, mix nodes and the simulator (sans-IO).

Everything that decides *when* a packet is sent and *which way* it goes lives here, so the
simulator measures the very code the nodes run:

* :class:`PoissonSchedule` — emission deadlines at rate λ, each drawn from the previous
  deadline (not from "now"), so a late loop iteration does not lower the rate;
* :func:`sample_delay_ms` — the sender-chosen per-hop delay, Exp(mean);
* :class:`Topology` and :func:`choose_path` — a stratified route (one node per mix layer,
  weighted uniformly unless the consensus gives weights), chaining only hops that share a
  transport scheme (docs/design.md, "Transports"); :func:`loop_route` for a mix's own loop cover.

Randomness is a :class:`random.Random` passed in (seed it for reproducible runs); nothing here
reads the clock or touches the network.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from anonmail.errors import PathError

__all__ = [
    "MAX_DELAY_MS",
    "PoissonSchedule",
    "exponential",
    "sample_delay_ms",
    "sample_delays_ms",
    "NodeRef",
    "Topology",
    "choose_path",
    "PathPlanner",
    "loop_route",
]

#: Largest per-hop delay a routing command can carry (u32 milliseconds).
MAX_DELAY_MS = 2**32 - 1


def exponential(rng: random.Random, mean: float) -> float:
    """One Exp(mean) sample; ``mean == 0`` gives 0 (no delay)."""
    if mean < 0 or not math.isfinite(mean):
        raise ValueError(f"mean must be finite and >= 0, got {mean!r}")
    return rng.expovariate(1.0 / mean) if mean > 0 else 0.0


def sample_delay_ms(rng: random.Random, mean_s: float, max_ms: int = MAX_DELAY_MS) -> int:
    """One sender-chosen per-hop delay in whole milliseconds, Exp(mean_s), capped at ``max_ms``.

    Pass the consensus's ``max_delay``: mixes drop a packet that asks for a longer hold.
    """
    return min(max_ms, MAX_DELAY_MS, round(exponential(rng, mean_s) * 1000))


def sample_delays_ms(rng: random.Random, hops: int, mean_s: float) -> list[int]:
    """Delays for ``hops`` mix hops (providers get 0: mixing is the mix layers' job)."""
    return [sample_delay_ms(rng, mean_s) for _ in range(hops)]


class PoissonSchedule:
    """Deadlines of a Poisson process at ``rate`` per second, starting after ``start``.

    ``next()`` returns the next deadline; it advances from the previous deadline, so a caller
    that wakes up late still emits at the long-run rate. ``rate == 0`` never fires (``inf``).
    """

    __slots__ = ("rate", "_rng", "deadline")

    def __init__(self, rate: float, rng: random.Random, start: float = 0.0) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be finite and >= 0, got {rate!r}")
        self.rate = rate
        self._rng = rng
        self.deadline = start

    def next(self) -> float:
        """Advance to and return the next deadline (seconds on the caller's clock)."""
        if self.rate == 0:
            self.deadline = math.inf
        else:
            self.deadline += self._rng.expovariate(self.rate)
        return self.deadline

    def __iter__(self) -> PoissonSchedule:
        return self

    def __next__(self) -> float:
        return self.next()


@dataclass(frozen=True)
class NodeRef:
    """What path selection needs to know of a node: id, layer, transports, weight."""

    node_id: bytes
    name: str
    layer: int  # 1..n for mixes, 0 for providers
    schemes: frozenset[str]
    weight: float = 1.0
    data: object = field(default=None, compare=False, repr=False)  # e.g. the descriptor


@dataclass(frozen=True)
class Topology:
    """A stratified topology: mix layers in order, and the providers."""

    layers: tuple[tuple[NodeRef, ...], ...]
    providers: tuple[NodeRef, ...] = ()

    @classmethod
    def from_nodes(cls, nodes: Iterable[NodeRef], layers: int = 3) -> Topology:
        """Group nodes by layer (0 = provider), each group in a stable order (by node id)."""
        by_layer: dict[int, list[NodeRef]] = {i: [] for i in range(layers + 1)}
        for node in nodes:
            if node.layer not in by_layer:
                raise PathError(f"node {node.name} claims layer {node.layer}; topology has 1..{layers}")
            by_layer[node.layer].append(node)
        ordered = {k: tuple(sorted(v, key=lambda n: n.node_id)) for k, v in by_layer.items()}
        return cls(tuple(ordered[i] for i in range(1, layers + 1)), ordered[0])

    def node(self, node_id: bytes) -> NodeRef | None:
        """The node with this id, or None."""
        for group in (*self.layers, self.providers):
            for node in group:
                if node.node_id == node_id:
                    return node
        return None


def _shares(a: NodeRef | None, b: NodeRef) -> bool:
    return a is None or bool(a.schemes & b.schemes)


def _weighted_choice(rng: random.Random, nodes: Sequence[NodeRef]) -> NodeRef:
    weights = [max(0.0, n.weight) for n in nodes]
    if not any(weights):
        return nodes[rng.randrange(len(nodes))]
    return rng.choices(nodes, weights=weights, k=1)[0]


def _feasible(
    topology: Topology, egress: NodeRef | None, layers: Sequence[int] | None
) -> tuple[list[int], list[list[NodeRef]]]:
    """The layer order and, per layer, the nodes that can still reach ``egress`` (backward pass)."""
    order = list(layers) if layers is not None else list(range(1, len(topology.layers) + 1))
    groups = []
    for layer in order:
        if not 1 <= layer <= len(topology.layers) or not topology.layers[layer - 1]:
            raise PathError(f"mix layer {layer} has no nodes in the consensus")
        groups.append(topology.layers[layer - 1])
    feasible: list[list[NodeRef]] = [[] for _ in groups]
    after: list[NodeRef] | None = [egress] if egress is not None else None
    for i in range(len(groups) - 1, -1, -1):
        feasible[i] = [n for n in groups[i] if after is None or any(_shares(n, m) for m in after)]
        if not feasible[i]:
            nxt = "the egress provider" if i == len(groups) - 1 else f"mix layer {order[i + 1]}"
            raise PathError(f"no node of mix layer {order[i]} shares a transport with {nxt}")
        after = feasible[i]
    return order, feasible


def choose_path(
    rng: random.Random,
    topology: Topology,
    *,
    ingress: NodeRef | None = None,
    egress: NodeRef | None = None,
    layers: Sequence[int] | None = None,
) -> list[NodeRef]:
    """One node per mix layer (in ``layers`` order, default all), each sharing a transport
    with its neighbours (``ingress`` before the first, ``egress`` after the last).

    Returns only the mix nodes. Raises PathError naming the hop that has no common transport.
    """
    order, feasible = _feasible(topology, egress, layers)
    # Forward pass: sample among nodes reachable from the previous hop.
    path: list[NodeRef] = []
    previous = ingress
    for i, candidates in enumerate(feasible):
        reachable = [n for n in candidates if _shares(previous, n)]
        if not reachable:
            before = "the ingress provider" if i == 0 else f"mix layer {order[i - 1]} ({previous.name})"
            raise PathError(f"no node of mix layer {order[i]} shares a transport with {before}")
        previous = _weighted_choice(rng, reachable)
        path.append(previous)
    return path


def _segment(
    rng: random.Random, topology: Topology, start: NodeRef, end: NodeRef, layers: Sequence[int]
) -> list[NodeRef]:
    """Mixes of ``layers`` from ``start`` to ``end``; with no layers, start must reach end directly."""
    if not layers:
        if not _shares(start, end):
            raise PathError(f"{start.name} and {end.name} share no transport")
        return []
    return choose_path(rng, topology, ingress=start, egress=end, layers=layers)


def loop_route(rng: random.Random, topology: Topology, me: NodeRef) -> list[NodeRef]:
    """The hops of a node's loop cover packet, ending at the node itself.

    From layer ``l`` it goes through the later layers, a provider (which feeds layer 1, as
    for any user packet) when the topology has one, the earlier layers, and back to ``me``;
    so every link it uses also carries ordinary traffic. A provider (layer 0) sends its loops
    through every layer straight back to itself: never through another provider (no user
    packet crosses a provider-to-provider link) nor to itself as a first hop (a node cannot
    always reach its own address, e.g. over I2P). Every hop shares a transport with the next;
    a provider that cannot be chained is passed over. Raises PathError if no route exists.
    """
    count = len(topology.layers)
    later = list(range(me.layer + 1, count + 1))
    earlier = list(range(1, me.layer))
    if not topology.providers or me.layer == 0:
        return [*_segment(rng, topology, me, me, later + earlier), me]
    candidates = list(topology.providers)
    problem = ""
    while candidates:
        provider = _weighted_choice(rng, candidates)
        try:
            first = _segment(rng, topology, me, provider, later)
            second = _segment(rng, topology, provider, me, earlier)
        except PathError as exc:
            problem = str(exc)
            candidates.remove(provider)
            continue
        return [*first, provider, *second, me]
    raise PathError(f"no loop route for {me.name} through any provider (last problem: {problem})")


class PathPlanner:
    """:func:`choose_path` for one fixed topology, with its per-hop candidate lists cached.

    ``planner.choose(rng, ingress=, egress=)`` returns exactly what ``choose_path(rng, topology,
    ingress=, egress=)`` returns and consumes the same random draws (a test checks this draw for
    draw); it only skips recomputing which nodes can reach which, so a simulator (or a busy agent)
    can draw millions of paths. Build a new planner when the consensus changes.
    """

    __slots__ = ("topology", "_plans")

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._plans: dict[tuple, list[_Step]] = {}

    def choose(
        self,
        rng: random.Random,
        *,
        ingress: NodeRef | None = None,
        egress: NodeRef | None = None,
        layers: Sequence[int] | None = None,
    ) -> list[NodeRef]:
        """One node per mix layer, as :func:`choose_path`; raises the same PathError."""
        key = (
            None if ingress is None else ingress.node_id,
            None if egress is None else egress.node_id,
            None if layers is None else tuple(layers),
        )
        plan = self._plans.get(key)
        if plan is None:
            order, feasible = _feasible(self.topology, egress, layers)
            plan = self._plans[key] = [_Step(order, i, c) for i, c in enumerate(feasible)]
        path: list[NodeRef] = []
        previous = ingress
        for step in plan:
            nodes, cum_weights = step.reachable(previous)
            if cum_weights is None:
                previous = nodes[rng.randrange(len(nodes))]
            else:
                previous = rng.choices(nodes, cum_weights=cum_weights, k=1)[0]
            path.append(previous)
        return path


class _Step:
    """One hop of a cached plan: the feasible nodes, and per previous hop the reachable ones."""

    __slots__ = ("order", "index", "candidates", "cache")

    def __init__(self, order: list[int], index: int, candidates: list[NodeRef]) -> None:
        self.order = order
        self.index = index
        self.candidates = candidates
        self.cache: dict[bytes | None, tuple[list[NodeRef], list[float] | None]] = {}

    def reachable(self, previous: NodeRef | None) -> tuple[list[NodeRef], list[float] | None]:
        key = None if previous is None else previous.node_id
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        reachable = [n for n in self.candidates if _shares(previous, n)]
        if not reachable:
            i = self.index
            before = "the ingress provider" if i == 0 else f"mix layer {self.order[i - 1]} ({previous.name})"
            raise PathError(f"no node of mix layer {self.order[i]} shares a transport with {before}")
        weights = [max(0.0, n.weight) for n in reachable]
        hit = self.cache[key] = (reachable, list(itertools.accumulate(weights)) if any(weights) else None)
        return hit
