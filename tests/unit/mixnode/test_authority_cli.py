"""``mixnode authority init|status``, the authority config and its build schedule."""

from __future__ import annotations

import argparse
import base64
import json
import os
import stat
import time

import pytest

from anonmail.core.keys import IdentityKey
from anonmail.keyfiles import read_key_file
from anonmail.errors import ConfigError
from mixnode.authority import build_points, load_authority_config, next_build_point
from anonmail.daemon.cli import EXIT_NOT_RUNNING, run_command
from mixnode.authority.cli import add_authority_parser, run_authority_command

PEER_KEY = base64.b64encode(IdentityKey.from_seed(b"\x05" * 32).public).decode()


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mixnode")
    add_authority_parser(parser.add_subparsers(dest="command"))
    parser.add_argument("--debug", action="store_true")
    return run_command("mixnode", run_authority_command, parser.parse_args(["authority", *argv]))


def init(tmp_path, *extra: str) -> tuple[int, object]:
    directory = tmp_path / "auth"
    code = cli("init", "--dir", str(directory), "--name", "auth-1", "--listen", "tcp://127.0.0.1:7301",
               "--peer", f"tcp://127.0.0.1:7302={PEER_KEY}", "--epoch-seconds", "60", *extra)
    return code, directory


def test_init_writes_a_0600_key_and_a_config_that_loads(tmp_path, capsys):
    code, directory = init(tmp_path)
    assert code == 0
    key_file = directory / "identity.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    identity = IdentityKey.from_seed(read_key_file(key_file))
    out = capsys.readouterr().out
    public = base64.b64encode(identity.public).decode()
    assert f"public key: {public}" in out
    assert f"--authority tcp://127.0.0.1:7301={public}" in out
    config = load_authority_config(directory / "authority.toml")
    assert config.name == "auth-1" and config.test_mode and config.listen == ("tcp://127.0.0.1:7301",)
    assert config.threshold == 2 and config.epoch_seconds == 60
    assert config.peers[0].address == "tcp://127.0.0.1:7302"
    assert base64.b64encode(config.peers[0].public_key).decode() == PEER_KEY
    assert config.key_file == key_file.resolve() and config.data_dir == directory.resolve()
    assert "# " in (directory / "authority.toml").read_text()  # commented for the operator


def test_init_refuses_to_overwrite_and_keeps_the_key(tmp_path, capsys):
    init(tmp_path)
    key = read_key_file(tmp_path / "auth" / "identity.key")
    code, _ = init(tmp_path)
    assert code == 1 and "already exists; use --force" in capsys.readouterr().err
    code, _ = init(tmp_path, "--force")
    assert code == 0 and read_key_file(tmp_path / "auth" / "identity.key") == key


def test_init_needs_a_transport(tmp_path, capsys):
    assert cli("init", "--dir", str(tmp_path / "a")) == 1
    assert "choose a transport" in capsys.readouterr().err


def test_init_rejects_a_bad_peer_argument(tmp_path):
    with pytest.raises(SystemExit):
        cli("init", "--dir", str(tmp_path / "a"), "--listen", "tcp://127.0.0.1:1", "--peer", "tcp://127.0.0.1:2=xyz")


def write_config(tmp_path, body: str):
    path = tmp_path / "authority.toml"
    path.write_text(body)
    return path


BASE = 'name = "a1"\ntest_mode = true\nlisten = ["tcp://127.0.0.1:7301"]\n'


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path):
    path = write_config(tmp_path, BASE + "treshold = 2\n")
    with pytest.raises(ConfigError, match=f"{path}: unknown key treshold"):
        load_authority_config(path)


def test_unknown_key_in_a_peer_table(tmp_path):
    path = write_config(tmp_path, BASE + f'[[peers]]\naddress = "tcp://127.0.0.1:2"\npublic_key = "{PEER_KEY}"\nport = 1\n')
    with pytest.raises(ConfigError, match=r"unknown key peers\[0\]\.port"):
        load_authority_config(path)


@pytest.mark.parametrize(
    "body, message",
    [
        ('name = "a1"\nlisten = ["tcp://127.0.0.1:7301"]\n', "listen: .*for tests only"),
        (BASE.replace('"a1"', '"A 1"'), "name: must be 1-63 characters"),
        ('name = "a1"\ntest_mode = true\n', "listen: configure a transport"),
        (BASE + "threshold = 2\n", "threshold: must be <= 1"),
        (BASE + "epoch_seconds = 5\n", "epoch_seconds: must be >= 10"),
        (BASE + "round_seconds = 2\nsync_delay = 2\n", "sync_delay: must be <= 1"),
        (BASE + '[[peers]]\naddress = "tcp://127.0.0.1:2"\npublic_key = "abc"\n', r"peers\[0\]\.public_key: is not valid base64"),
        (BASE + f'[[peers]]\naddress = "tcp://10.0.0.1:2"\npublic_key = "{PEER_KEY}"\n', r"peers\[0\]\.address: .*loopback"),
        (BASE + "schema_version = 7\n", "schema_version 7 is not supported"),
        (BASE + "[tor]\ncontrol_port = 0\n", r"tor\.control_port: must be >= 1"),
    ],
)
def test_config_errors_name_the_key(tmp_path, body, message):
    path = write_config(tmp_path, body)
    with pytest.raises(ConfigError, match=message) as info:
        load_authority_config(path)
    assert str(path) in str(info.value)


def test_production_config_with_tor_and_defaults(tmp_path):
    path = write_config(tmp_path, 'name = "a1"\n[tor]\n[i2p]\nsam_port = 7657\n')
    config = load_authority_config(path)
    assert config.production and config.listen == ()
    assert (config.tor.control_port, config.tor.socks_port, config.tor.launch) == (9051, None, False)
    assert (config.i2p.sam_host, config.i2p.sam_port, config.i2p.inbound_length) == ("127.0.0.1", 7657, 3)
    assert config.threshold == 1 and config.epoch_seconds == 3600 and config.lead == 900


def test_status_says_when_the_authority_is_not_running(tmp_path, capsys):
    _, directory = init(tmp_path)
    capsys.readouterr()
    config = str(directory / "authority.toml")
    assert cli("status", "--config", config) == EXIT_NOT_RUNNING
    out, err = capsys.readouterr()
    assert out == "" and "authority auth-1 is not running (no status file)" in err
    assert "mixnode authority run --config" in err
    status = {"running": True, "pid": os.getpid(), "updated_at": time.time() - 60, "name": "auth-1",
              "epochs": {"5": {"descriptors": 2, "consensus": True, "digest": "ab", "signatures": 2}},
              "peers": {"tcp://127.0.0.1:7302": {"up": False, "last_ok": None, "last_error": "ConnectError"}}}
    (directory / "status.json").write_text(json.dumps(status))
    assert cli("status", "--config", config) == EXIT_NOT_RUNNING
    out, err = capsys.readouterr()
    assert "authority auth-1 is not running (no update for 60 s)" in err
    assert "epoch 5" in out and "2 descriptors, consensus ab with 2 signatures" in out  # the last known state
    status["updated_at"] = time.time()
    (directory / "status.json").write_text(json.dumps(status))
    assert cli("status", "--config", config) == 0
    out = capsys.readouterr().out
    assert f"running (pid {os.getpid()})" in out and "peer tcp://127.0.0.1:7302" in out and "down (ConnectError)" in out
    assert cli("status", "--dir", str(directory), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["running"] is True and shown["age_s"] < 5  # the same keys as every daemon's status


# ----------------------------------------------------------------------------- schedule


def test_build_points_start_a_lead_before_the_epoch_and_repeat_until_it_ends():
    points = list(build_points(10, 60, 15, 5))
    assert points[0] == 10 * 60 - 15 and points[-1] == 11 * 60 - 5
    assert all(b - a == 5 for a, b in zip(points, points[1:]))


def test_next_build_point():
    assert next_build_point(10, 60, 15, 5, after=0) == 585
    assert next_build_point(10, 60, 15, 5, after=585) == 585
    assert next_build_point(10, 60, 15, 5, after=585.5) == 590
    assert next_build_point(10, 60, 15, 5, after=655.1) is None


def test_init_rejects_a_bad_peer_address(tmp_path):
    with pytest.raises(SystemExit):
        cli("init", "--dir", str(tmp_path / "a"), "--listen", "tcp://127.0.0.1:1", "--peer", f"nowhere={PEER_KEY}")


def test_init_writes_nothing_when_the_config_would_not_load(tmp_path, capsys):
    code, directory = init(tmp_path, "--threshold", "3")
    assert code == 1
    assert "threshold: must be <= 2" in capsys.readouterr().err
    assert sorted(p.name for p in directory.iterdir()) == []
