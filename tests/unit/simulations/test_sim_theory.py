"""The simulator against theory: Erlang latency, entropy bounds and trends, linking, determinism."""

from __future__ import annotations

import json
import math
import random

import pytest

from simulations.engine import Simulation
from simulations.metrics import TIMING_FIELDS, summarize
from simulations.model import SimConfig
from simulations.stats import erlang_cdf, ks_test

pytestmark = pytest.mark.unit

NO_COVER = dict(lambda_payload=0.0, lambda_loop=0.0, lambda_drop=0.0, lambda_mix=0.0)


def run(**kw) -> tuple[Simulation, dict]:
    sim = Simulation(SimConfig(**kw)).run()
    return sim, summarize(sim)


def latencies(sim: Simulation) -> list[float]:
    return sim.latencies_s


# ----------------------------------------------------------------------------- latency


def test_latency_is_erlang_of_the_mix_delays():
    # 3 hops of Exp(0.2 s), nothing else adds time: latency ~ Erlang(3, mean 0.2), mean 0.6 s.
    sim, s = run(clients=50, real_rate=4.0, duration=50, delay_mean=0.2, entropy_samples=0, **NO_COVER)
    lat = latencies(sim)
    assert s["messages_delivered"] == s["messages_sent"] == len(lat) > 9000
    assert s["latency_mean_s"] == pytest.approx(3 * 0.2, rel=0.02)
    d, p = ks_test(lat, lambda x: erlang_cdf(x, 3, 0.2))
    assert p > 0.01, (d, p)
    # The same samples are not mistaken for a nearby distribution (the test has power).
    assert ks_test(lat, lambda x: erlang_cdf(x, 3, 0.22))[1] < 0.01
    assert ks_test(lat, lambda x: erlang_cdf(x, 2, 0.3))[1] < 0.01


def test_link_latency_adds_one_fixed_delay_per_link():
    # client -> ingress -> L1 -> L2 -> L3 -> egress: 5 links.
    sim, s = run(clients=20, real_rate=2.0, duration=50, delay_mean=0.1, link_latency=0.05,
                 entropy_samples=0, **NO_COVER)
    lat = latencies(sim)
    assert min(lat) >= 5 * 0.05 - 1e-9
    d, p = ks_test([x - 0.25 for x in lat], lambda x: erlang_cdf(x, 3, 0.1))
    assert p > 0.01, (d, p)


def test_payload_slot_wait_is_part_of_latency():
    # One payload slot per second and rare messages: the wait is ~Exp(1 s) on top of the mixing.
    _, s = run(clients=40, real_rate=0.05, duration=200, delay_mean=0.1, lambda_payload=1.0,
               lambda_loop=0.0, lambda_drop=0.0, lambda_mix=0.0, entropy_samples=0)
    assert s["latency_mean_s"] == pytest.approx(0.3 + 1.0, rel=0.12)
    assert s["cover_ratio"] > 10  # the empty slots went out as drop cover


# ----------------------------------------------------------------------------- entropy


def test_entropy_never_exceeds_its_bounds():
    for kw in (dict(**NO_COVER, real_rate=0.5), dict(lambda_drop=1.0, delay_mean=1.0), dict(compromised=0.5)):
        sim, s = run(clients=16, duration=40, entropy_samples=60, **kw)
        results = sim.adversary.results
        assert results and s["entropy_targets"] == len(results)
        for r in results:
            # over packets: at most log2 of how many packets carried any of the mass
            assert r.entropy <= math.log2(r.exits) + 1e-9
            # over recipients (the anonymity set of possible recipients): at most log2(#clients)
            assert r.recipient_entropy <= math.log2(16) + 1e-9
            assert r.truncated < 1e-3


def test_entropy_rises_with_mean_delay():
    values = [run(clients=40, duration=60, real_rate=0.2, delay_mean=d, **NO_COVER)[1]["entropy_bits_mean"]
              for d in (0.02, 0.2, 1.0)]
    assert values[0] < values[1] < values[2], values


def test_entropy_rises_with_active_clients():
    values = [run(clients=c, duration=60, real_rate=0.2, delay_mean=0.3, **NO_COVER)[1]["entropy_bits_mean"]
              for c in (5, 20, 80)]
    assert values[0] < values[1] < values[2], values


def test_cover_traffic_raises_entropy_at_equal_real_load():
    base = dict(clients=30, duration=60, real_rate=0.1, delay_mean=0.2, lambda_payload=0.0, lambda_mix=0.0)
    low = run(lambda_loop=0.0, lambda_drop=0.0, **base)[1]
    high = run(lambda_loop=0.5, lambda_drop=1.0, **base)[1]
    assert high["entropy_bits_mean"] > low["entropy_bits_mean"] + 1
    assert high["linking_success_rate"] < low["linking_success_rate"]


# ----------------------------------------------------------------------------- linking


def test_zero_delay_without_cover_links_every_message():
    _, s = run(clients=30, duration=30, real_rate=0.5, delay_mean=0.0, **NO_COVER)
    assert s["entropy_targets"] > 100
    assert s["linking_success_rate"] >= 0.99
    assert s["entropy_bits_mean"] < 0.05


def test_long_delays_defeat_linking_and_compromised_mixes_restore_it():
    kw = dict(clients=40, duration=40, real_rate=0.2, delay_mean=1.0)
    honest = run(compromised=0.0, **kw)[1]
    owned = run(compromised=1.0, **kw)[1]
    assert honest["linking_success_rate"] < 0.3
    assert owned["linking_success_rate"] == 1.0 and owned["entropy_bits_mean"] == 0.0
    assert honest["entropy_bits_mean"] > 5


# ----------------------------------------------------------------------------- determinism


def _stable(summary: dict) -> str:
    return json.dumps({k: v for k, v in summary.items() if k not in TIMING_FIELDS}, indent=2)


def test_same_seed_same_json_other_seed_other_json():
    kw = dict(clients=30, duration=20, compromised=0.3)
    a, b = run(seed=5, **kw)[1], run(seed=5, **kw)[1]
    assert _stable(a) == _stable(b)
    assert _stable(run(seed=6, **kw)[1]) != _stable(a)


def test_crypto_mode_agrees_with_opaque_mode():
    kw = dict(clients=8, providers=2, mixes_per_layer=2, duration=8, lambda_payload=0.5, lambda_loop=0.2,
              lambda_drop=0.2, lambda_mix=0.3, real_rate=0.2, delay_mean=0.2, link_latency=0.01, seed=3)
    opaque = Simulation(SimConfig(**kw)).run()
    crypto = Simulation(SimConfig(crypto=True, **kw)).run()
    assert sum(crypto.sent) > 50  # enough packets to mean something
    a, b = summarize(opaque), summarize(crypto)
    assert (a.pop("mode"), b.pop("mode")) == ("opaque", "crypto")
    a["config"].pop("crypto"), b["config"].pop("crypto")
    assert _stable(a) == _stable(b)


def test_ks_test_accepts_the_true_distribution_and_rejects_a_wrong_one():
    rng = random.Random(4)
    xs = [rng.expovariate(1.0) for _ in range(2000)]
    assert ks_test(xs, lambda x: 1 - math.exp(-x))[1] > 0.01
    assert ks_test(xs, lambda x: 1 - math.exp(-x / 1.15))[1] < 0.01
