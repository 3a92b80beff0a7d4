"""`python -m simulations run|sweep`: the §8 JSON contract, one-line errors, sweep outputs."""

from __future__ import annotations

import csv
import json

import pytest

from simulations.__main__ import main
from simulations.sweep import load_sweep, run_sweep

pytestmark = pytest.mark.unit

CONTRACT = ["latency_mean_s", "latency_p50_s", "latency_p95_s", "entropy_bits_mean", "linking_success_rate",
            "cover_ratio", "messages_delivered", "messages_sent", "sim_events", "wall_s"]
SMALL = ["--clients", "20", "--duration", "10", "--mixes-per-layer", "2"]


def test_run_json_has_the_contract_fields(capsys):
    assert main(["run", "--json", *SMALL, "--seed", "4", "--compromised", "0.5", "--link-latency", "0.01"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in CONTRACT:
        assert key in out and out[key] is not None, key
    assert 0 < out["messages_delivered"] <= out["messages_sent"]
    assert out["config"]["seed"] == 4 and out["config"]["compromised"] == 0.5
    assert out["compromised_mixes"] == 3  # half of 3 x 2 mixes


def test_run_human_summary(capsys):
    assert main(["run", *SMALL]) == 0
    text = capsys.readouterr().out
    assert "latency: mean" in text and "entropy mean" in text and "events/s" in text


SWEEP = """
schema_version = 1
seeds = [1, 2]
[base]
clients = 12
duration = 8.0
mixes_per_layer = 2
[[sweep]]
name = "delay"
x = "delay_mean"
grid = { delay_mean = [0.05, 0.5], lambda_drop = [0.0, 0.5] }
plots = ["entropy_bits_mean", "latency_mean_s"]
"""


def test_sweep_writes_csv_json_and_plots(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text(SWEEP)
    rows = run_sweep(config, tmp_path / "out", workers=2, progress=False)
    assert len(rows) == 2 * 2 * 2
    with (tmp_path / "out" / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["param_delay_mean"] for r in table] == [str(r["param_delay_mean"]) for r in rows]
    assert {r["seed"] for r in table} == {"1", "2"}
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [d["point"] for d in data][:2] == [{"delay_mean": 0.05, "lambda_drop": 0.0}] * 2
    for name in ("delay_entropy_bits_mean.png", "delay_latency_mean_s.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_example_config_is_valid():
    spec = load_sweep("simulations/example.toml")
    names = {(s.name, s.x) for s in spec.sweeps}
    assert {x for _, x in names} >= {"delay_mean", "clients", "compromised", "lambda_drop"}
