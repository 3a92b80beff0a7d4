"""The simulator models issue 15's cover scheme by default (every client packet returns one ACK).

``cover_scheme="acks"`` is what the agent does (anonmail/agent/packets.py): a payload slot's real
fragment or drop cover is answered by the provider it reaches with an ACK to the sender's
mailbox, a loop's ACK goes to a random mailbox; each ACK is held Exp(delay_mean) at the
answering provider. ``"legacy"`` is the model before, kept for the before/after comparison.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter

import pytest

from anonmail.errors import ConfigError
from simulations.__main__ import main
from simulations.engine import ACK, DROP, LOOP, MIX_LOOP, REAL, Simulation
from simulations.metrics import TIMING_FIELDS, summarize
from simulations.model import DEFAULTS, SimConfig

pytestmark = pytest.mark.unit

SMALL = SimConfig(clients=40, providers=2, mixes_per_layer=2, duration=40.0, entropy_samples=60)
LEGACY = SMALL.with_(cover_scheme="legacy")


def _run_cli(capsys, *options: str) -> dict:
    assert main(["run", "--json", "--clients", "20", "--duration", "10", "--entropy-samples", "5", *options]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_default_is_the_agents_scheme_and_legacy_must_be_asked_for(capsys):
    # Fails if the default silently reverts to the model before issue 15.
    assert DEFAULTS.cover_scheme == "acks" and SimConfig().cover_acks
    default = _run_cli(capsys)
    assert default["config"]["cover_scheme"] == "acks"
    sent = default["packets_sent"]
    assert sent["ack"] == sent["real"] + sent["loop"] + sent["drop"] > 0
    legacy = _run_cli(capsys, "--cover-scheme", "legacy")
    assert legacy["config"]["cover_scheme"] == "legacy"
    assert "ack" not in legacy["packets_sent"]
    # the old flag still means the (now default) scheme
    again = _run_cli(capsys, "--cover-acks")
    assert {k: v for k, v in again.items() if k not in TIMING_FIELDS} == {
        k: v for k, v in default.items() if k not in TIMING_FIELDS}


def test_an_unknown_scheme_is_one_line_naming_the_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--cover-scheme", "nym"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--cover-scheme" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="--cover-scheme: must be acks or legacy"):
        SimConfig(cover_scheme="nym").checked()


@pytest.mark.parametrize("acks", [False, True], ids=["no-retransmission", "with---acks"])
def test_every_client_packet_is_answered_with_exactly_one_ack(acks, monkeypatch):
    monkeypatch.setenv("ANONMAIL_SIM_PURE", "1")  # the loop whose methods can be watched
    sim = Simulation(SMALL.with_(acks=acks, fetch_interval=1.0 if acks else 0.0))
    answered: Counter[int] = Counter()  # id of the answered packet -> ACKs made for it
    alive: list = []  # keeps the answered packets alive, so no id is reused
    to_mailbox: Counter[int] = Counter()  # client -> ACKs sent to its mailbox (-1: a loop's, elsewhere)
    sent_by: Counter[int] = Counter()  # client -> payload-slot and drop-stream packets it sent
    loops = 0
    emit, answer, stored_with_acks = sim._emit, sim._answer, sim._stored_with_acks

    def watch_emit(pkt, t):
        nonlocal loops
        if pkt.kind in (REAL, DROP):
            sent_by[pkt.origin] += 1
        loops += pkt.kind == LOOP
        emit(pkt, t)

    def watch_answer(pkt, node, t):
        answered[id(pkt)] += 1
        alive.append(pkt)
        to_mailbox[pkt.origin if pkt.kind != LOOP else -1] += 1
        answer(pkt, node, t)

    def watch_stored(pkt, msg, node, t):
        if pkt.kind == REAL:
            answered[id(pkt)] += 1
            alive.append(pkt)
            to_mailbox[msg.sender] += 1
        stored_with_acks(pkt, msg, node, t)

    sim._emit, sim._answer, sim._stored_with_acks = watch_emit, watch_answer, watch_stored
    sim.run()
    delivered = sim.delivered_packets
    assert delivered[REAL] + delivered[LOOP] + delivered[DROP] == len(answered) > 1000
    assert set(answered.values()) == {1}  # every delivered client packet answered exactly once
    assert sim.sent[ACK] == len(answered) == delivered[ACK]  # no loss: each ACK arrives
    # each client's mailbox gets one ACK per payload-slot (or drop-stream) packet it sent; loops' go elsewhere
    assert {c: n for c, n in to_mailbox.items() if c >= 0} == sent_by
    assert to_mailbox[-1] == loops == delivered[LOOP]
    assert delivered[MIX_LOOP] > 0 and sim.sent[MIX_LOOP] == delivered[MIX_LOOP]  # mix loops: not answered


def test_the_compiled_loop_answers_every_client_packet_too():
    out = summarize(Simulation(SMALL).run())  # the compiled loop when it is built (test_sim_engine: same JSON)
    sent, delivered = out["packets_sent"], out["packets_delivered"]
    assert sent["ack"] == delivered["real"] + delivered["drop"] + delivered["loop"] > 0
    assert delivered["ack"] == sent["ack"]
    assert "ack" not in summarize(Simulation(LEGACY).run())["packets_sent"]


def test_an_ack_is_held_by_the_answering_provider_for_the_senders_exp_delay(monkeypatch):
    monkeypatch.setenv("ANONMAIL_SIM_PURE", "1")  # the loop whose methods can be watched
    sim = Simulation(SMALL.with_(delay_mean=0.4))
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
    before = [summarize(Simulation(LEGACY.with_(seed=s)).run()) for s in (1, 2, 3)]
    after = [summarize(Simulation(SMALL.with_(seed=s)).run()) for s in (1, 2, 3)]
    entropy = [statistics.fmean(r["entropy_bits_mean"] for r in runs) for runs in (before, after)]
    latency = [statistics.fmean(r["latency_mean_s"] for r in runs) for runs in (before, after)]
    assert entropy[1] > entropy[0] + 0.3, entropy
    assert latency[1] == pytest.approx(latency[0], rel=0.15), latency


def test_acks_are_no_candidates_for_a_messages_recipient():
    # The provider that stores an ACK handles it as a SURB reply, so the mailbox-level adversary
    # knows it is not mail: ACK cover adds exit packets (entropy) but no candidate recipients.
    for seed in (1, 2, 3):
        before = summarize(Simulation(LEGACY.with_(seed=seed)).run())
        after = summarize(Simulation(SMALL.with_(seed=seed)).run())
        assert after["entropy_exit_packets_mean"] > 1.5 * before["entropy_exit_packets_mean"]
        assert after["recipient_entropy_bits_mean"] == pytest.approx(before["recipient_entropy_bits_mean"], abs=0.25)
