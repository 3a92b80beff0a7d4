"""The adversary's truncation of small pool masses must not eat the distribution of a big network."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from simulations.adversary import Adversary
from simulations.engine import Simulation, compiled_loop
from simulations.metrics import summarize
from simulations.model import SimConfig

pytestmark = pytest.mark.unit

#: Pools of ~5,000 packets (1,400 packets/s over 3 mixes per layer, held 10 s), spread over 3 mixes:
#: every second-layer pool receives a traced message's mass in pieces of ~1/5,000, one at a time.
BIG_POOLS = SimConfig(clients=1000, mixes_per_layer=3, delay_mean=10.0, duration=42.0, warmup=40.0, drain=20.0,
                      entropy_samples=5)


def _packet():
    return SimpleNamespace(mass=None, tid=-1, dest=-1)


def test_a_big_pool_keeps_a_share_it_has_just_received():
    # Two honest mixes of 5,000 packets each: the traced packet leaves the first with 1/5,000 of the
    # message, which is everything the second pool holds of it when its next packet leaves.
    adv = Adversary(n_nodes=2, tracked=[True, True], last_layer=[False, True], samples=1)
    traced = _packet()
    adv.start_target(traced, SimpleNamespace(recipient=0), 0.0)
    adv.enter(0, traced)
    hop = _packet()
    adv.leave_pool(0, 5000, hop)
    assert hop.mass == {0: pytest.approx(1 / 5000)}
    adv.enter(1, hop)
    out = _packet()
    adv.leave_pool(1, 5000, out)
    assert adv.targets[0].truncated == 0.0
    assert out.mass == {0: pytest.approx(1 / 5000 / 5000)}
    assert adv.pools[1][0] == pytest.approx(1 / 5000 * 4999 / 5000)


def test_a_pool_still_drops_a_negligible_mass():
    adv = Adversary(n_nodes=1, tracked=[True], last_layer=[True], samples=1)
    traced = _packet()
    adv.start_target(traced, SimpleNamespace(recipient=0), 0.0)
    traced.mass = {0: 1e-12}
    adv.enter(0, traced)
    adv.leave_pool(0, 10, _packet())
    assert adv.targets[0].truncated == pytest.approx(1e-12)
    assert adv.pools[0] == {}


@pytest.fixture(params=["pure", "compiled"])
def loop(request, monkeypatch):
    if request.param == "pure":
        monkeypatch.setenv("ANONMAIL_SIM_PURE", "1")
    else:
        monkeypatch.delenv("ANONMAIL_SIM_PURE", raising=False)
        if compiled_loop() is None:
            pytest.skip("compiled loop not built (no C compiler at install time)")
    return request.param


def test_big_pools_lose_no_mass_to_truncation(loop):
    summary = summarize(Simulation(BIG_POOLS).run())
    assert summary["entropy_targets"] == BIG_POOLS.entropy_samples
    assert summary["entropy_mass_truncated_mean"] < 1e-3
    # ~68,000 packets leave the last layer with some of each message's mass: ~16 bits, not ~14.
    assert summary["entropy_exit_packets_mean"] > 50_000
    assert summary["entropy_bits_mean"] > 15.5
