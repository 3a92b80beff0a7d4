"""The up-front cost estimate: close to the events a run really has, and big runs refused before they start."""

from __future__ import annotations

import pytest

from simulations.__main__ import main
from simulations.engine import Simulation
from simulations.estimate import estimate
from simulations.model import SimConfig

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("scheme", ["acks", "legacy"])
@pytest.mark.parametrize("config", [
    SimConfig(clients=2000, mixes_per_layer=5, duration=30.0, entropy_samples=0),
    SimConfig(clients=500, duration=30.0, link_latency=0.02, provider_delay=0.1, entropy_samples=0, seed=3),
    SimConfig(clients=300, duration=30.0, lambda_payload=0.0, fragments=2, entropy_samples=0, seed=4),
])
def test_event_estimate_is_within_10_percent(config, scheme):
    config = config.with_(cover_scheme=scheme)
    assert estimate(config).events == pytest.approx(Simulation(config).run().events, rel=0.10)


def test_a_run_too_big_for_the_memory_limit_is_refused_up_front(capsys):
    assert main(["run", "--clients", "100000", "--mixes-per-layer", "30", "--duration", "600",
                 "--max-memory-gb", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "this run needs about 695 M events" in err  # 349 M with --cover-scheme legacy: ACKs double the packets and "more than --max-memory-gb 0.5" in err
    assert len(err.strip().splitlines()) == 1
