"""Sanity checks on the bootstrap / CI / torrc files at the repository root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ci_run_is_executable_and_runs_make_test() -> None:
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    lines = [ln.strip() for ln in ci.read_text().splitlines()]
    assert lines[0] == "#!/usr/bin/env bash"
    assert "make test" in lines


def test_bootstrap_is_executable_and_parses() -> None:
    script = ROOT / "scripts" / "bootstrap.sh"
    assert os.access(script, os.X_OK)
    assert "set -euo pipefail" in script.read_text()
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    subprocess.run([bash, "-n", str(script)], check=True)


def test_torrc_example_binds_loopback_only() -> None:
    port_lines = [
        ln.split()
        for ln in (ROOT / "torrc.example").read_text().splitlines()
        if re.match(r"\s*(ControlPort|SocksPort)\b", ln)
    ]
    assert {words[0] for words in port_lines} == {"ControlPort", "SocksPort"}
    for words in port_lines:
        assert words[1].startswith("127.0.0.1:"), words


def test_test_tmpdir_prefers_tmpfs_and_falls_back(tmp_path) -> None:
    """``make test`` puts TMPDIR where the script says: a writable dir, /dev/shm only if usable."""
    script = ROOT / "scripts" / "test-tmpdir.sh"
    assert os.access(script, os.X_OK)
    chosen = subprocess.run([str(script)], capture_output=True, text=True, check=True).stdout.strip()
    assert Path(chosen).is_dir() and os.access(chosen, os.W_OK)
    if chosen != "/dev/shm":  # fell back: it says TMPDIR (or /tmp)
        assert chosen == os.environ.get("TMPDIR", "/tmp")
    assert not list(Path(chosen).glob("anonmail-probe.*"))  # its probe is gone
    assert "TMPDIR=$(TEST_TMPDIR)" in (ROOT / "Makefile").read_text()
