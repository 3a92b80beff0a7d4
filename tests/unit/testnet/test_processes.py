"""anonmail.testnet.processes: readiness read from a process's own status file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from anonmail.testnet.plan import NodeSpec
from anonmail.testnet.processes import NodeProcess, process_ready

pytestmark = pytest.mark.unit


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
