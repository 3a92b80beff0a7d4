"""A sweep on a Dask cluster (a scheduler and two workers on 127.0.0.1) gives byte for byte the local sweep's results."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anonmail.errors import ConfigError
from simulations.sweep import run_sweep

pytestmark = [pytest.mark.network, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
SWEEP = """
schema_version = 1
seeds = [1, 2]
[base]
clients = 16
duration = 8.0
mixes_per_layer = 2
entropy_samples = 20
[[sweep]]
name = "delay"
x = "delay_mean"
grid = { delay_mean = [0.05, 0.5], compromised = [0.0, 0.5] }
plots = ["entropy_bits_mean"]
"""


@pytest.fixture
def cluster(tmp_path):
    """A ``dask scheduler`` and two ``dask worker`` processes on loopback; yields the scheduler address."""
    info = tmp_path / "scheduler.json"
    procs = []
    base = dict(cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                      "--port", "0", "--no-dashboard", "--scheduler-file", str(info)], **base))
        deadline = time.monotonic() + 60
        while not info.exists() or not info.read_text().strip():
            assert time.monotonic() < deadline, "dask scheduler did not start"
            assert procs[0].poll() is None, "dask scheduler exited"
            time.sleep(0.2)
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                          str(info), "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
                                          "--no-dashboard"], **base))
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            assert len(client.scheduler_info()["workers"]) == 2
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_cluster_sweep_is_byte_identical_to_local_sweep(tmp_path, cluster):
    config = tmp_path / "s.toml"
    config.write_text(SWEEP)
    local = run_sweep(config, tmp_path / "local", workers=1, plots=False, progress=False)
    remote = run_sweep(config, tmp_path / "remote", scheduler=cluster, plots=False, progress=False)
    assert len(remote) == len(local) == 2 * 2 * 2
    for name in ("results.csv", "results.json"):
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    # Not trivially equal: the points differ from each other.
    entropies = [r["entropy_bits_mean"] for r in local]
    assert len(set(entropies)) > 4
    timings = (tmp_path / "remote" / "timings.csv").read_text().splitlines()
    assert timings[0] == "sweep,seed,wall_s,events_per_s" and len(timings) == 9


def test_unreachable_scheduler_is_a_config_error(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text(SWEEP)
    with pytest.raises(ConfigError, match="--scheduler tcp://127.0.0.1:9: cannot reach"):
        run_sweep(config, tmp_path / "o", scheduler="tcp://127.0.0.1:9", plots=False, progress=False,
                  scheduler_timeout=3.0)
