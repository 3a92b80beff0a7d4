"""The anonmail and mixnode commands as processes: versions, the bench JSON contract, the memory demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from anonmail import __version__
from anonmail.bench.packet import run_benchmarks

pytestmark = pytest.mark.network

BENCH_KEYS = {
    "x25519_us",
    "sphinx_create_us",
    "sphinx_process_us",
    "mix_pps",
    "floor_pps",
    "payload_bytes",
    "packet_bytes",
    "link_handshake_us",
    "link_handshake_ms",
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)


def test_versions():
    assert _run("anonmail.cli", "--version").stdout.strip() == f"anonmail {__version__}"
    assert _run("mixnode.cli", "--version").stdout.strip() == f"mixnode {__version__}"


def test_bench_json_is_one_object_with_the_contract_keys():
    proc = _run("anonmail.cli", "bench", "--json", "--scale", "0.01", "--no-reference")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert BENCH_KEYS <= result.keys()
    assert result["e2e_encrypt_us"] > 0 and result["e2e_session_overhead_bytes"] < result["e2e_prekey_overhead_bytes"]
    assert result["packet_bytes"] == 4096
    # a real mixnode process forwarded every packet of the (small) run
    assert result["mix_pps"] > 0
    assert result["mix_delivered"] == result["mix_packets"]
    assert result["mix_exit_code"] == 0
    for key in ("x25519_us", "sphinx_create_us", "sphinx_process_us", "floor_pps", "link_handshake_us"):
        assert result[key] > 0
    assert result["floor_pps"] == pytest.approx(1e6 / (2 * result["x25519_us"]), rel=0.01)


def test_bench_in_process_reports_progress_and_reference():
    steps: list[str] = []
    result = run_benchmarks(scale=0.005, progress=steps.append, mix=False)
    assert result["mix_pps"] is None
    assert steps and "sphinxmix" in steps[-1]
    assert result["sphinxmix_process_us"] > 0


def test_demo_json_cli():
    proc = _run("anonmail.cli", "demo", "--json", "--seed", "1", "--messages", "2", "--size", "5000",
                "--delay-mean", "0.01")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert result["sent"] == result["delivered"] == 2 and result["duplicates"] == 0
