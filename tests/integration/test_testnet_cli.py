"""``anonmail testnet up|status|down`` as a user runs them, with nodes on Tor only, I2P only and both.

The smallest mixed network (1 mix per layer, providers alpha on Tor and beta on I2P): mail from
alice@alpha to bob@beta must cross from Tor-only to I2P-only nodes. ``down`` must leave no
process behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anonmail.daemon.status import pid_alive
from anonmail.testnet.processes import read_state

pytestmark = [pytest.mark.integration, pytest.mark.tor, pytest.mark.i2p]


def _anonmail(*args: str, input_text: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anonmail.cli", *args], capture_output=True, text=True,
                          input=input_text, timeout=timeout)


@pytest.mark.timeout(900)
def test_up_status_send_down_on_a_mixed_tor_and_i2p_network(tmp_path: Path):
    from anonmail.testnet.i2p import find_i2pd

    find_i2pd()  # a clear error naming `make bootstrap` when there is no usable i2pd
    directory = tmp_path / "net"
    up = _anonmail("testnet", "up", "--tor", "--i2p", "--mixes-per-layer", "1", "--providers", "2", "--users", "2",
                   "--dir", str(directory), timeout=900)
    try:
        assert up.returncode == 0, f"testnet up failed:\n{up.stderr[-3000:]}"
        assert "testnet ready" in up.stderr
        assert "authorities: 3 serving" in up.stderr  # progress was shown

        status = _anonmail("testnet", "status", "--dir", str(directory), "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        rows = {row["name"]: row for row in report["processes"]}
        assert set(rows) == {"auth1", "auth2", "auth3", "mix1a", "mix2a", "mix3a", "alpha", "beta", "alice", "bob"}
        assert all(row["up"] for row in rows.values()), {n: r["up"] for n, r in rows.items()}
        kinds = {tuple(row["serves"]) for row in rows.values() if row["role"] != "agent"}
        assert kinds == {("tor",), ("i2p",), ("tor", "i2p")}
        for row in rows.values():
            schemes = sorted(a.split("://")[0] for a in row["addresses"])
            expected = sorted({"tor": "onion", "i2p": "i2p"}[s] for s in row["serves"])
            assert schemes == expected, row  # each node serves exactly what it was told, nothing else
        assert sorted(report["daemons"]) == ["i2pd", "tor"]
        running = read_state(directory)
        pids = [p["pid"] for p in running["processes"]] + [pid for g in running["daemons"].values() for pid in g]
        assert len(pids) == 10 + 7 + 3 and all(pid_alive(pid) for pid in pids)  # nodes, tors, i2pds

        alice, bob = directory / "users" / "alice", directory / "users" / "bob"
        sent = _anonmail("send", "--home", str(alice), "--to", "bob", "--subject", "across Tor and I2P",
                         input_text="Hello Bob, from a Tor-only provider to an I2P-only one.\n")
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 300
        subjects: list[str] = []
        while time.monotonic() < deadline:
            inbox = _anonmail("inbox", "--home", str(bob), "--json")
            subjects = [json.loads(line)["subject"] for line in inbox.stdout.splitlines() if line.strip()]
            if subjects:
                break
            time.sleep(2)
        assert subjects == ["across Tor and I2P"]
    finally:
        down = _anonmail("testnet", "down", "--dir", str(directory), timeout=180)
    assert down.returncode == 0, down.stderr
    state = read_state(directory)
    assert state is not None and state["phase"] == "stopped"
    assert not [pid for pid in pids if pid_alive(pid)]
    assert _anonmail("testnet", "status", "--dir", str(directory)).returncode == 3
