"""`mixnode run` as a real process: it registers, `mixnode status` reads it live, SIGTERM stops it."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys

import anyio
import pytest

from anonmail.core.keys import IdentityKey
from anonmail.keyfiles import write_key_file
from anonmail.daemon.cli import EXIT_NOT_RUNNING
from anonmail.net.router import Router
from anonmail.net.tcp import TcpTransport
from mixnode.authority import Authority, AuthorityConfig
from mixnode.authority.admission import Admission, admit
from anonmail.daemon.identity import load_or_create_identity
from mixnode.cli import main

pytestmark = pytest.mark.network


def status(config) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "mixnode.cli", "status", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=60,
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else {}


@pytest.mark.anyio
async def test_run_status_and_clean_stop(tmp_path):
    identity = IdentityKey.generate()
    (tmp_path / "auth").mkdir()
    write_key_file(tmp_path / "auth" / "identity.key", identity.seed)
    config = AuthorityConfig(
        name="auth", data_dir=tmp_path / "auth", key_file=tmp_path / "auth" / "identity.key",
        listen=("tcp://127.0.0.1:0",), threshold=1, epoch_seconds=3600, test_mode=True,
    )
    async with TcpTransport() as transport, anyio.create_task_group() as tg:
        authority = Authority(config, Router([transport], production=False), identity=identity, write_status=False)
        (address,) = await tg.start(authority.run)
        key = base64.b64encode(identity.public).decode()
        assert main(["init", "--dir", str(tmp_path / "mix"), "--name", "mix-p", "--layer", "1",
                     "--tcp-listen", "tcp://127.0.0.1:0", "--authority", f"{address}={key}"]) == 0
        admit(config.data_dir, Admission("mix-p", "mix", 1, load_or_create_identity(tmp_path / "mix").public))
        mix_config = tmp_path / "mix" / "mixnode.toml"
        code, _ = await anyio.to_thread.run_sync(status, mix_config)
        assert code == EXIT_NOT_RUNNING  # never ran: not running, as for every daemon
        proc = subprocess.Popen(
            [sys.executable, "-m", "mixnode.cli", "run", "--config", str(mix_config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert json.loads(line)["addresses"][0].startswith("tcp://127.0.0.1:")
            with anyio.fail_after(30):
                while True:
                    code, live = await anyio.to_thread.run_sync(status, mix_config)
                    if code == 0 and live.get("consensus_epoch") is not None:
                        break
                    await anyio.sleep(0.3)
            assert live["running"] is True and live["name"] == "mix-p"
            assert {"received", "forwarded", "dropped", "queue_length", "epoch", "loops_lost"} <= live.keys()
            proc.send_signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.stderr.close()
        code, after = await anyio.to_thread.run_sync(status, mix_config)
        assert code == 3 and after["running"] is False
        tg.cancel_scope.cancel()


def test_run_without_a_reachable_tor_is_a_one_line_error(tmp_path):
    import socket

    from anonmail.core.uri import onion_address_from_key

    onion = f"onion://{onion_address_from_key(bytes(32))}:7000"
    key = base64.b64encode(IdentityKey.generate().public).decode()
    assert main(["init", "--dir", str(tmp_path / "mix"), "--name", "mix-a", "--layer", "2", "--tor",
                 "--authority", f"{onion}={key}"]) == 0
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "mix" / "mixnode.toml"
    path.write_text(path.read_text().replace("control_port = 9051 ", f"control_port = {port} "))
    proc = subprocess.run([sys.executable, "-m", "mixnode.cli", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"mixnode: error: cannot reach tor's control port 127.0.0.1:{port}: Connection refused; "
        "is tor running with this ControlPort?"
    ]
