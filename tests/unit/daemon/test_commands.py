"""One ``init`` / ``run`` / ``status`` for every daemon: the same exit codes and the same answers."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import pytest

from anonmail.cli import main as anonmail_main
from anonmail.core.keys import IdentityKey
from anonmail.daemon.cli import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE
from anonmail.daemon.status import write_status
from mixnode.cli import main as mixnode_main

KEY = base64.b64encode(IdentityKey.from_seed(b"\x07" * 32).public).decode()
AUTHORITY = f"tcp://127.0.0.1:9={KEY}"


def init_all(tmp_path) -> dict[str, tuple[list[str], object]]:
    """Initialise a mix node, a provider and an authority; their status commands by name."""
    assert mixnode_main(["init", "--dir", str(tmp_path / "mix"), "--name", "mix-a", "--layer", "1",
                         "--authority", AUTHORITY, "--tcp-listen", "tcp://127.0.0.1:0"]) == EXIT_OK
    assert anonmail_main(["provider", "init", "--dir", str(tmp_path / "alpha"), "--name", "alpha",
                          "--authority", AUTHORITY, "--listen", "tcp://127.0.0.1:0"]) == EXIT_OK
    assert mixnode_main(["authority", "init", "--dir", str(tmp_path / "auth"), "--name", "auth-a",
                         "--listen", "tcp://127.0.0.1:7301"]) == EXIT_OK
    return {
        "mix node mix-a": (["status", "--dir", str(tmp_path / "mix")], mixnode_main),
        "provider alpha": (["provider", "status", "--dir", str(tmp_path / "alpha")], anonmail_main),
        "authority auth-a": (["authority", "status", "--dir", str(tmp_path / "auth")], mixnode_main),
        f"no agent is running for {tmp_path / 'home'}": (["status", "--home", str(tmp_path / "home")], anonmail_main),
    }


def test_a_daemon_that_never_ran_is_not_running_for_every_role(tmp_path, capsys):
    commands = init_all(tmp_path)
    capsys.readouterr()
    for who, (argv, main) in commands.items():
        for extra in ([], ["--json"]):
            assert main([*argv, *extra]) == EXIT_NOT_RUNNING, who
            out, err = capsys.readouterr()
            assert out == "" and who in err and "(no status file); start it with `" in err, (who, err)


def test_a_stopped_daemon_shows_its_last_state_and_exits_3_for_every_role(tmp_path, capsys):
    commands = init_all(tmp_path)
    dirs = {"mix node mix-a": tmp_path / "mix", "provider alpha": tmp_path / "alpha",
            "authority auth-a": tmp_path / "auth"}
    dirs[next(w for w in commands if w.startswith("no agent"))] = tmp_path / "home"
    capsys.readouterr()
    for who, (argv, main) in commands.items():
        dirs[who].mkdir(exist_ok=True)
        write_status(dirs[who], {"running": False, "pid": os.getpid(), "updated_at": time.time(), "counter": 7})
        assert main([*argv, "--json"]) == EXIT_NOT_RUNNING, who
        out, err = capsys.readouterr()
        shown = json.loads(out)
        assert shown["running"] is False and shown["counter"] == 7 and shown["age_s"] < 5, who
        assert f"{who} is not running (it stopped)" in err or f"{who} (it stopped)" in err, (who, err)
        write_status(dirs[who], {"running": True, "pid": os.getpid(), "updated_at": time.time()})
        assert main(argv) == EXIT_OK, who
        out, err = capsys.readouterr()
        assert f"running (pid {os.getpid()})" in out and err == "", who


def test_init_makes_a_private_directory_and_refuses_to_overwrite(tmp_path, capsys):
    init_all(tmp_path)
    for name, config in (("mix", "mixnode.toml"), ("alpha", "provider.toml"), ("auth", "authority.toml")):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(tmp_path / name / "identity.key").st_mode) == 0o600
        assert (tmp_path / name / config).exists()
    capsys.readouterr()
    again = mixnode_main(["init", "--dir", str(tmp_path / "mix"), "--name", "mix-a", "--layer", "1",
                          "--authority", AUTHORITY, "--tcp-listen", "tcp://127.0.0.1:0"])
    assert again == EXIT_ERROR and "already exists; use --force" in capsys.readouterr().err


@pytest.mark.parametrize("main", [mixnode_main, anonmail_main])
def test_usage_errors_exit_2(main, capsys):
    assert main([]) == EXIT_USAGE  # no command: the help, on stderr
    with pytest.raises(SystemExit) as info:
        main(["--no-such-option"])
    assert info.value.code == EXIT_USAGE
    capsys.readouterr()
