"""`anonmail testnet up|status|down` without a network: refusals, and status read from a state file."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from anonmail.cli import main
from anonmail.testnet.processes import STATE_FILE

pytestmark = pytest.mark.unit


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# ------------------------------------------------------------------------- no testnet / refusals

def test_status_without_a_testnet_exits_3(tmp_path, capsys):
    code, out, err = cli(capsys, "testnet", "status", "--dir", str(tmp_path))
    assert code == 3
    assert out == ""
    assert f"no testnet in {tmp_path.resolve()}" in err
    code, out, err = cli(capsys, "testnet", "status", "--dir", str(tmp_path), "--json")
    assert code == 3 and out == "" and "no testnet" in err


def test_down_without_a_testnet_exits_1(tmp_path, capsys):
    code, _, err = cli(capsys, "testnet", "down", "--dir", str(tmp_path))
    assert code == 1
    assert f"no testnet in {tmp_path.resolve()}" in err
    assert "stopped" not in err


def test_up_without_a_network_starts_nothing(tmp_path, capsys):
    directory = tmp_path / "net"
    code, _, err = cli(capsys, "testnet", "up", "--dir", str(directory))
    assert code == 1
    assert "choose the networks" in err and "--tor" in err and "--i2p" in err
    assert not (directory / STATE_FILE).exists()
    assert not directory.exists()
    assert not (directory / "testnet.log").exists()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--mixes-per-layer", "0", "must be 1..8, got 0"),
        ("--mixes-per-layer", "9", "must be 1..8, got 9"),
        ("--providers", "0", "must be 1..8, got 0"),
        ("--users", "9", "must be 0..8, got 9"),
        ("--users", "two", "expected a whole number, got 'two'"),
    ],
)
def test_up_bad_counts_are_argparse_errors(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as exc:
        main(["testnet", "up", "--tor", "--dir", str(tmp_path / "net"), option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err and message in err
    assert not (tmp_path / "net").exists()


def test_testnet_without_subcommand_exits_2(capsys):
    code, _, err = cli(capsys, "testnet")
    assert code == 2 and "choose up, status, down" in err


# ------------------------------------------------------------------------- status from a state file

def _write(path: Path, data: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "status.json").write_text(json.dumps(data))


@pytest.fixture
def fake_testnet(tmp_path) -> tuple[Path, dict]:
    """A testnet.json whose supervisor is gone, with status files for each role."""
    now = time.time()
    me, gone = os.getpid(), dead_pid()
    root = tmp_path / "net"
    dirs = {name: root / sub / name for name, sub in
            (("auth1", "authorities"), ("mix1a", "mixes"), ("mix2a", "mixes"), ("alpha", "providers"),
             ("alice", "users"))}
    _write(dirs["auth1"], {"epoch": 7, "epochs": {"6": {"consensus": True, "signatures": 1, "descriptors": 2},
                                                  "7": {"consensus": True, "signatures": 3, "descriptors": 4}},
                           "addresses": ["onion://a.onion:1"], "pid": gone, "updated_at": now - 100})
    # The one live process: this test's own PID, a fresh file that names it.
    _write(dirs["mix1a"], {"received": 120, "forwarded": 110, "queue_length": 3, "dropped": {"queue": 4, "replay": 1},
                           "in_consensus": True, "addresses": ["onion://m.onion:1", "i2p://m.b32.i2p"], "pid": me,
                           "updated_at": now, "running": True})
    _write(dirs["mix2a"], {"received": 5, "forwarded": 5, "queue_length": 0, "dropped": {}, "in_consensus": False,
                           "addresses": [], "pid": gone, "updated_at": now, "running": True})
    _write(dirs["alpha"], {"received": 50, "forwarded": 40, "queue_length": 1, "dropped": {"full": 2},
                           "in_consensus": True, "addresses": ["i2p://p.b32.i2p"], "pid": gone, "updated_at": now,
                           "running": True, "stored_entries": 6, "accounts": 2})
    _write(dirs["alice"], {"packets_sent": 30, "packets_real": 4, "packets_cover": 26, "outbox_queued": 1,
                           "entries_fetched": 9, "inbox": 2, "updated_at": now, "pid": gone})

    def proc(name: str, role: str, serves: list[str], pid: int | None, **extra) -> dict:
        return {"name": name, "role": role, "serves": serves, "pid": pid, "dir": str(dirs[name]),
                "log": str(root / "logs" / f"{name}.log"), "layer": None, "provider": None, "starts": 1, **extra}

    state = {
        "version": 1, "phase": "ready", "error": None, "directory": str(root), "supervisor_pid": gone,
        "networks": ["tor", "i2p"], "timings": {"bring_up_s": 12.5}, "steps": [],
        "processes": [
            proc("auth1", "authority", ["tor"], gone),
            proc("mix1a", "mix", ["tor", "i2p"], me, layer=1),
            proc("mix2a", "mix", ["i2p"], gone, layer=2),
            proc("alpha", "provider", ["i2p"], gone),
            proc("alice", "agent", [], gone, provider="alpha"),
        ],
        "daemons": {"tor": [gone], "i2pd": []},
        "users": {"alice": "x@alpha"},
    }
    (root / STATE_FILE).write_text(json.dumps(state))
    return root, state


def test_status_json_reads_every_status_file(fake_testnet, capsys):
    root, state = fake_testnet
    code, out, _ = cli(capsys, "testnet", "status", "--dir", str(root), "--json")
    assert code == 3  # the supervisor is gone
    result = json.loads(out)
    assert result["phase"] == "stopped"
    assert result["directory"] == str(root.resolve())
    assert result["timings"] == {"bring_up_s": 12.5}
    assert result["daemons"] == state["daemons"]
    rows = {row["name"]: row for row in result["processes"]}
    assert list(rows) == ["auth1", "mix1a", "mix2a", "alpha", "alice"]
    assert {name: row["role"] for name, row in rows.items()} == {
        "auth1": "authority", "mix1a": "mix", "mix2a": "mix", "alpha": "provider", "alice": "agent"}
    assert {name: row["up"] for name, row in rows.items()} == {
        "auth1": False, "mix1a": True, "mix2a": False, "alpha": False, "alice": False}
    assert rows["mix1a"]["pid"] == os.getpid()

    auth = rows["auth1"]
    assert (auth["epoch"], auth["consensus"], auth["signatures"], auth["descriptors"]) == (7, True, 3, 4)
    assert auth["serves"] == ["tor"] and auth["addresses"] == ["onion://a.onion:1"]

    mix = rows["mix1a"]
    assert (mix["packets_in"], mix["packets_out"], mix["queue"], mix["dropped"], mix["in_consensus"]) == \
        (120, 110, 3, 5, True)
    assert mix["serves"] == ["tor", "i2p"] and mix["addresses"] == ["onion://m.onion:1", "i2p://m.b32.i2p"]
    assert (rows["mix2a"]["dropped"], rows["mix2a"]["in_consensus"]) == (0, False)

    provider = rows["alpha"]
    assert (provider["packets_in"], provider["packets_out"], provider["queue"], provider["dropped"]) == (50, 40, 1, 2)
    assert (provider["stored"], provider["accounts"]) == (6, 2)

    agent = rows["alice"]
    assert (agent["packets_out"], agent["packets_real"], agent["packets_cover"], agent["queue"],
            agent["packets_in"], agent["inbox"], agent["provider"]) == (30, 4, 26, 1, 9, 2, "alpha")
    assert agent["serves"] == [] and agent["addresses"] == []


def test_status_row_is_down_when_the_status_file_is_stale_or_names_another_pid(fake_testnet, capsys):
    root, _ = fake_testnet
    status_path = root / "mixes" / "mix1a" / "status.json"
    status = json.loads(status_path.read_text())
    status_path.write_text(json.dumps({**status, "updated_at": time.time() - 60}))
    code, out, _ = cli(capsys, "testnet", "status", "--dir", str(root), "--json")
    assert code == 3
    assert {r["name"]: r["up"] for r in json.loads(out)["processes"]}["mix1a"] is False
    status_path.write_text(json.dumps({**status, "updated_at": time.time(), "pid": os.getpid() + 1}))
    code, out, _ = cli(capsys, "testnet", "status", "--dir", str(root), "--json")
    assert code == 3
    assert {r["name"]: r["up"] for r in json.loads(out)["processes"]}["mix1a"] is False
    status_path.write_text(json.dumps({**status, "updated_at": time.time(), "running": False}))
    code, out, _ = cli(capsys, "testnet", "status", "--dir", str(root), "--json")
    assert code == 3
    assert {r["name"]: r["up"] for r in json.loads(out)["processes"]}["mix1a"] is False
    status_path.unlink()
    code, out, _ = cli(capsys, "testnet", "status", "--dir", str(root), "--json")
    assert code == 3
    row = {r["name"]: r for r in json.loads(out)["processes"]}["mix1a"]
    assert row["up"] is False and row["packets_in"] is None and row["addresses"] == []


def test_status_with_a_live_supervisor_exits_0(fake_testnet, capsys):
    root, state = fake_testnet
    (root / STATE_FILE).write_text(json.dumps({**state, "supervisor_pid": os.getpid()}))
    code, out, _ = cli(capsys, "testnet", "status", "--dir", str(root), "--json")
    assert code == 0
    assert json.loads(out)["phase"] == "ready"
    (root / STATE_FILE).write_text(json.dumps({**state, "supervisor_pid": os.getpid(), "phase": "failed"}))
    code, out, _ = cli(capsys, "testnet", "status", "--dir", str(root), "--json")
    assert code == 3 and json.loads(out)["phase"] == "stopped"


def test_status_table_names_every_process(fake_testnet, capsys, monkeypatch):
    root, _ = fake_testnet
    monkeypatch.setenv("COLUMNS", "400")  # rich would otherwise wrap and cut cells at 80 columns
    code, out, _ = cli(capsys, "testnet", "status", "--dir", str(root))
    assert code == 3
    for text in ("auth1", "mix1a", "mix2a", "alpha", "alice", "stopped", "(client)", "tor+i2p",
                 "5 dropped", "not in consensus", "2 accounts, 6 stored", "4 real / 26 cover", "0/1 up"):
        assert text in out, text


def test_down_recognises_its_programs_by_name_not_by_substring(tmp_path):
    from anonmail.testnet.cli import _expected

    for argv, ours in ((["sleep", "30", "--", "directory-monitor-tor"], False),
                       (["python3", "-c", "import time; time.sleep(30)", "anonmail"], False)):
        proc = subprocess.Popen(argv)
        try:
            assert _expected(proc.pid) is ours, argv
        finally:
            proc.kill()
            proc.wait()
    assert _expected(os.getpid()) is False  # pytest itself is not one of ours


def test_up_refuses_a_directory_holding_an_earlier_testnet(tmp_path, capsys):
    (tmp_path / "mixes" / "mix1a").mkdir(parents=True)
    assert main(["testnet", "up", "--tor", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "holds an earlier testnet (mixes/)" in err and "another --dir" in err
    assert not (tmp_path / STATE_FILE).exists()
