"""`python -m simulations run|sweep`: the §8 JSON contract, one-line errors, sweep outputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

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


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--lambda-loop", "-1"], "--lambda-loop: must be >= 0"),
        (["run", "--compromised", "1.5"], "--compromised: must be a fraction"),
        (["run", "--frobnicate", "1"], "unrecognized arguments: --frobnicate"),
        (["run", "--clients", "many"], "--clients: invalid int value"),
    ],
)
def test_bad_options_are_one_line_errors(args, needle):
    proc = subprocess.run([sys.executable, "-m", "simulations", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


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


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[base]\nclientz = 3\n[[sweep]]\nname = "a"\ngrid = { delay_mean = [1] }\n', "unknown key base.clientz"),
        ('[[sweep]]\nname = "a"\ngrid = { delay_meen = [1] }\n', "sweep[0].grid: must vary at least one"),
        ('[[sweep]]\nname = "a"\ngrid = { delay_mean = [1], bogus = [2] }\n', "unknown key sweep[0].grid.bogus"),
        ('[[sweep]]\nname = "a"\ngrid = { delay_mean = "fast" }\n', "sweep[0].grid.delay_mean: must be a non-empty list"),
        ('[[sweep]]\nname = "a"\ngrid = { delay_mean = [-1] }\n', "--delay-mean: must be >= 0"),
        ('[[sweep]]\nname = "a"\nplots = ["speed"]\ngrid = { delay_mean = [1] }\n', "unknown metric 'speed'"),
        ('seeds = []\n[[sweep]]\nname = "a"\ngrid = { delay_mean = [1] }\n', "seeds: must be a non-empty list"),
        ("[[sweep]\n", "invalid TOML"),
        ("", "no [[sweep]] table"),
    ],
)
def test_sweep_config_errors_name_file_and_key(tmp_path, text, needle):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "simulations", "sweep", str(config), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert str(config) in proc.stderr and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_example_config_is_valid():
    spec = load_sweep("simulations/example.toml")
    names = {(s.name, s.x) for s in spec.sweeps}
    assert {x for _, x in names} >= {"delay_mean", "clients", "compromised", "lambda_drop"}
