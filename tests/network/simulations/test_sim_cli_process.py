"""The simulator's command line as a user runs it: a separate `python -m simulations` process."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.network


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
