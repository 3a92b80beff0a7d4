"""anonmail.testnet.processes: PID checks and readiness read from a process's status file."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from anonmail.testnet.plan import NodeSpec
from anonmail.testnet.processes import NodeProcess, process_alive, process_ready

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------- process_alive

def test_process_alive():
    assert process_alive(os.getpid()) is True
    assert process_alive(None) is False
    assert process_alive(0) is False
    child = subprocess.Popen(["true"])
    child.wait()
    assert process_alive(child.pid) is False  # reaped: gone (a recycled PID is very unlikely this fast)


def test_process_alive_is_false_for_a_zombie():
    child = subprocess.Popen(["true"])
    try:
        # Not waited for: it exits and stays a zombie until reaped.
        for _ in range(200):
            with open(f"/proc/{child.pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        assert process_alive(child.pid) is False
    finally:
        child.wait()


def test_an_agent_is_ready_only_once_its_provider_session_is_up(tmp_path: Path):
    popen = subprocess.Popen(["sleep", "30"])
    try:
        proc = NodeProcess(NodeSpec("alice", "agent", (), provider="alpha"), tmp_path, ["sleep"], tmp_path / "log", popen)
        assert not process_ready(proc, consensus=False)  # no status file yet
        status = {"role": "agent", "pid": popen.pid, "running": True, "connected": False}
        (tmp_path / "status.json").write_text(json.dumps(status))
        assert not process_ready(proc, consensus=False)  # running, still connecting
        (tmp_path / "status.json").write_text(json.dumps({**status, "connected": True}))
        assert process_ready(proc, consensus=False)
        (tmp_path / "status.json").write_text(json.dumps({**status, "connected": True, "pid": popen.pid + 1}))
        assert not process_ready(proc, consensus=False)  # an earlier run's file
    finally:
        popen.kill()
        popen.wait()
