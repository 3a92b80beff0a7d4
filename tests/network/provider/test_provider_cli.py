"""``anonmail provider init|run|status`` as a process: files, clean stop on SIGTERM, status exit codes."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.network

# A stand-alone driver: the lead hooks add_provider_parser/run_provider_command into anonmail.cli.
DRIVER = """
import argparse, sys
from anonmail.provider.cli import add_provider_parser, run_provider_command
from anonmail.daemon.cli import run_command
parser = argparse.ArgumentParser(prog="anonmail")
parser.add_argument("--debug", action="store_true")
add_provider_parser(parser.add_subparsers(dest="command"))
args = parser.parse_args(sys.argv[1:])
sys.exit(run_command("anonmail", run_provider_command, args))
"""
KEY = base64.b64encode(bytes(range(32))).decode()


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-c", DRIVER, *args], capture_output=True, text=True, timeout=60, **kw)


def test_init_run_status_and_clean_stop(tmp_path):
    home = tmp_path / "alpha"
    done = cli("provider", "init", "--dir", str(home), "--name", "alpha", "--authority", f"tcp://127.0.0.1:9={KEY}",
               "--listen", "tcp://127.0.0.1:0")
    assert done.returncode == 0, done.stderr
    assert (home / "provider.toml").exists()
    assert stat.S_IMODE(os.stat(home / "identity.key").st_mode) == 0o600
    assert "# " in (home / "provider.toml").read_text()  # commented
    again = cli("provider", "init", "--dir", str(home), "--name", "alpha", "--authority", f"tcp://127.0.0.1:9={KEY}",
                "--listen", "tcp://127.0.0.1:0")
    assert again.returncode == 1 and "--force" in again.stderr
    bad = cli("provider", "init", "--dir", str(tmp_path / "b"), "--name", "Bad.Name", "--authority",
              f"tcp://127.0.0.1:9={KEY}", "--listen", "tcp://127.0.0.1:0")
    assert bad.returncode == 1 and "provider.name" in bad.stderr

    assert cli("provider", "status", "--dir", str(home)).returncode == 3  # never ran

    proc = subprocess.Popen([sys.executable, "-c", DRIVER, "provider", "run", "--dir", str(home)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        started = json.loads(line)
        assert started["name"] == "alpha" and started["addresses"][0].startswith("tcp://127.0.0.1:")
        deadline = time.monotonic() + 20
        while True:
            status = cli("provider", "status", "--dir", str(home), "--json")
            if status.returncode == 0:
                break
            assert time.monotonic() < deadline, status.stderr
            time.sleep(0.3)
        data = json.loads(status.stdout)
        assert data["role"] == "provider" and data["accounts"] == 0 and data["running"]
        assert cli("provider", "status", "--dir", str(home)).returncode == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert cli("provider", "status", "--dir", str(home), "--json").returncode == 3
