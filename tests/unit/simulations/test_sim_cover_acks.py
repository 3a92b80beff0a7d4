"""--cover-acks: the simulator models issue 15's cover scheme (every client packet returns an ACK)."""

from __future__ import annotations

import statistics

import pytest

from simulations.engine import ACK, Simulation
from simulations.metrics import summarize
from simulations.model import SimConfig

pytestmark = pytest.mark.unit

SMALL = SimConfig(clients=40, providers=2, mixes_per_layer=2, duration=40.0, entropy_samples=60)


def test_every_client_packet_is_answered_once_and_only_drop_and_real_acks_reach_a_mailbox():
    sim = Simulation(SMALL.with_(cover_acks=True)).run()
    out = summarize(sim)
    sent, delivered = out["packets_sent"], out["packets_delivered"]
    answered = delivered["real"] + delivered["drop"] + delivered["loop"]
    assert sent["ack"] == answered > 0
    assert delivered["ack"] == sent["ack"]  # no loss: every ACK arrives somewhere
    # Without the scheme no ACK exists at all (the model before issue 15).
    assert "ack" not in summarize(Simulation(SMALL).run())["packets_sent"]


def test_an_ack_is_held_by_the_answering_provider_for_the_senders_exp_delay():
    sim = Simulation(SMALL.with_(cover_acks=True, delay_mean=0.4))
    holds = []
    travel = sim._travel

    def watch(pkt, t, leaving):
        if pkt.kind == ACK and pkt.pos == 0 and not leaving:  # an ACK starting at its answering provider
            holds.append(pkt.delays[0])
        return travel(pkt, t, leaving)

    sim._travel = watch
    sim.run()
    assert len(holds) > 500
    assert statistics.fmean(holds) == pytest.approx(0.4, rel=0.1)
    assert sum(1 for h in holds if h == 0.0) < 0.01 * len(holds)  # never "at once"


def test_acks_in_the_pools_raise_entropy_and_leave_latency_alone():
    before = [summarize(Simulation(SMALL.with_(seed=s)).run()) for s in (1, 2, 3)]
    after = [summarize(Simulation(SMALL.with_(seed=s, cover_acks=True)).run()) for s in (1, 2, 3)]
    entropy = [statistics.fmean(r["entropy_bits_mean"] for r in runs) for runs in (before, after)]
    latency = [statistics.fmean(r["latency_mean_s"] for r in runs) for runs in (before, after)]
    assert entropy[1] > entropy[0] + 0.3, entropy
    assert latency[1] == pytest.approx(latency[0], rel=0.15), latency
