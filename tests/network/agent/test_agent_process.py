"""The whole user path with real processes over loopback tcp (test mode).

An authority runs in-process; 3 mix nodes (`mixnode run`), 2 providers (`anonmail provider run`)
and 2 agents (`anonmail agent`) are separate processes configured only through their own
`init` commands; users talk to their agents through `anonmail send` / `inbox` / `read`.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import anyio
import pytest

from anonmail.core.keys import IdentityKey, write_key_file
from anonmail.net.router import Router
from anonmail.net.tcp import TcpTransport
from mixnode.authority import Authority, AuthorityConfig

pytestmark = [pytest.mark.network, pytest.mark.slow]

PASSPHRASE = "a long enough passphrase"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def run(*argv: str, home: Path | None = None, check: bool = True, stdin: bytes | None = None):
    env = dict(os.environ, ANONMAIL_PASSPHRASE=PASSPHRASE)
    cmd = [sys.executable, "-m", argv[0], *argv[1:]]
    if home is not None:
        cmd += ["--home", str(home)]
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=120, input=stdin)
    if check:
        assert proc.returncode == 0, (argv, proc.stderr.decode()[-2000:])
    return proc


async def arun(*argv: str, **kwargs):
    """`run` in a thread, so the in-process authority keeps answering meanwhile."""
    return await anyio.to_thread.run_sync(functools.partial(run, *argv, **kwargs))


def start(stack: ExitStack, *argv: str, home: Path | None = None, log: Path) -> subprocess.Popen:
    env = dict(os.environ, ANONMAIL_PASSPHRASE=PASSPHRASE)
    cmd = [sys.executable, "-m", argv[0], *argv[1:]] + (["--home", str(home)] if home else [])
    out = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    stack.callback(out.close)

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    stack.callback(stop)
    return proc


async def wait_for(predicate, timeout: float, what: str) -> None:
    with anyio.fail_after(timeout):
        while not await anyio.to_thread.run_sync(predicate):
            await anyio.sleep(0.5)


def fast_agent(home: Path) -> None:
    """Quick rates for a test: many packets per second, short delays, frequent fetches."""
    path = home / "agent.toml"
    text = path.read_text()
    for key, value in {"lambda_payload": 10.0, "lambda_loop": 1.0, "fetch_interval": 0.5, "delay_mean": 0.02,
                       "ack_timeout": 5.0}.items():
        text = re.sub(rf"^{key} = [^#\n]*", f"{key} = {value} ", text, count=1, flags=re.M)
    path.write_text(text)


@pytest.mark.anyio
async def test_users_send_and_read_mail_through_processes(tmp_path):
    identity = IdentityKey.generate()
    (tmp_path / "auth").mkdir()
    write_key_file(tmp_path / "auth" / "identity.key", identity.seed)
    config = AuthorityConfig(
        name="auth", data_dir=tmp_path / "auth", key_file=tmp_path / "auth" / "identity.key",
        listen=("tcp://127.0.0.1:0",), threshold=1, epoch_seconds=3600, test_mode=True,
        bootstrap_nodes=5, round_seconds=1, sync_delay=0,
    )
    with ExitStack() as stack:
        async with TcpTransport() as transport, anyio.create_task_group() as tg:
            authority = Authority(config, Router([transport], production=False), identity=identity,
                                  write_status=False)
            (address,) = await tg.start(authority.run)
            pin = f"{address}={base64.b64encode(identity.public).decode()}"
            for layer in (1, 2, 3):
                d = tmp_path / f"mix{layer}"
                run("mixnode.cli", "init", "--dir", str(d), "--name", f"mix-{layer}", "--layer", str(layer),
                    "--tcp-listen", "tcp://127.0.0.1:0", "--authority", pin)
                start(stack, "mixnode.cli", "run", "--config", str(d / "mixnode.toml"), log=tmp_path / f"mix{layer}.log")
            for name in ("alpha", "beta"):
                d = tmp_path / name
                run("anonmail.cli", "provider", "init", "--dir", str(d), "--name", name,
                    "--listen", "tcp://127.0.0.1:0", "--authority", pin)
                start(stack, "anonmail.cli", "provider", "run", "--dir", str(d), log=tmp_path / f"{name}.log")

            def listed() -> bool:
                status = [json.loads((tmp_path / n / "status.json").read_text())
                          for n in ("alpha", "beta") if (tmp_path / n / "status.json").exists()]
                return len(status) == 2 and all(s.get("in_consensus") for s in status)

            await wait_for(listed, 60, "the consensus")
            homes = {}
            for user, provider in (("alice", "alpha"), ("bob", "beta")):
                home = tmp_path / "users" / user
                proc = await arun("anonmail.cli", "init", "--test-mode", "--authority", pin, "--provider", provider,
                           "--kdf", "interactive", home=home)
                homes[user] = home
                assert f"@{provider}" in proc.stdout.decode()
                fast_agent(home)
                start(stack, "anonmail.cli", "agent", home=home, log=tmp_path / f"{user}.log")
            bob_address = (await arun("anonmail.cli", "whoami", home=homes["bob"])).stdout.decode().strip()
            await arun("anonmail.cli", "contact", "add", "bob", bob_address, home=homes["alice"])
            body = os.urandom(20_000).hex().encode()  # 40 KB: several packets
            await arun("anonmail.cli", "send", "--to", "bob", "--subject", "over processes", "-", home=homes["alice"],
                stdin=body)

            def arrived() -> bool:
                inbox = run("anonmail.cli", "inbox", "--json", home=homes["bob"]).stdout.decode().splitlines()
                return len(inbox) == 1

            await wait_for(arrived, 120, "bob's inbox")
            read = (await arun("anonmail.cli", "read", "1", home=homes["bob"])).stdout
            assert body in read and b"Subject:  over processes" in read

            def acknowledged() -> bool:
                rows = [json.loads(line) for line in
                        run("anonmail.cli", "outbox", "--json", home=homes["alice"]).stdout.decode().splitlines()]
                return rows and rows[0]["state"] == "acknowledged"

            await wait_for(acknowledged, 120, "the ACK")
            status = json.loads((await arun("anonmail.cli", "provider", "status", "--dir", str(tmp_path / "beta"),
                                           "--json")).stdout)
            assert status["running"] and status["acks_sent"] >= 1
            tg.cancel_scope.cancel()
