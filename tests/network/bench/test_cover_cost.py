"""``python -m anonmail.bench.cover``: one idle user's costs match what the cover scheme sends."""

from __future__ import annotations

import json

import pytest

from anonmail.bench.cover import main, measure_cover_cost

pytestmark = pytest.mark.network


def test_every_slot_comes_back_once_and_each_packet_crosses_eight_links(capsys):
    seconds = 120.0
    result = measure_cover_cost(seconds, seed=3)
    p = result["params"]
    sent = result["user_packets_per_s"]
    assert sent == pytest.approx(p["lambda_payload"] + p["lambda_loop"], rel=0.25)
    # Every payload slot returns one ACK to her mailbox; every loop returns as one fragment.
    replies, fragments = result["mailbox_entries_per_s"]["reply"], result["mailbox_entries_per_s"]["fragment"]
    assert replies == pytest.approx(p["lambda_payload"], rel=0.25)
    assert fragments == pytest.approx(p["lambda_loop"], rel=0.5)
    # Out: provider → L1 → L2 → L3 → provider (4 links), and the ACK back (4 links), for every packet.
    assert result["network_packets_per_s"] == pytest.approx(8 * sent, rel=0.1)
    assert result["agent_cpu_ms_per_s"] > 0
    assert main(["--json", "--seconds", "5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["nym_defaults"]["packets_per_s"] == 55
