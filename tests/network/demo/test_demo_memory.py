"""The in-memory demo as the issue states its guarantee: nothing lost, nothing twice, under loss and a killed mix."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.network, pytest.mark.slow]


def test_200_messages_with_loss_and_a_killed_mix_arrive_exactly_once():
    proc = subprocess.run(
        [sys.executable, "-m", "anonmail.cli", "demo", "--network", "memory", "--messages", "200", "--loss", "0.1",
         "--kill-mix", "1", "--json", "--seed", "7"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["delivered"] == result["sent"] == 200
    assert result["duplicates"] == 0
    assert result["acknowledged"] == 200 and result["reply_delivered"]
    # The hostile parts really happened: packets were lost, a mix died, fragments were resent
    # and some copies arrived twice and were merged.
    assert result["packets_lost_on_links"] > 0 and len(result["mixes_killed"]) == 1
    assert result["retransmissions"] > 0
    assert result["packets_cover"] > result["packets_real"] > 0
    for key in ("latency_mean_s", "latency_p95_s"):
        assert result[key] > 0
