"""The whole user path with real processes over loopback tcp (test mode).

An authority runs in-process; 3 mix nodes (`mixnode run`), 2 providers (`anonmail provider run`)
and 2 agents (`anonmail agent`) are separate processes configured only through their own
`init` commands; users talk to their agents through `anonmail send` / `inbox` / `read` and watch
them with `anonmail status`. No process logs a user address.
"""

from __future__ import annotations

import base64
import functools
import imaplib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import anyio
import pytest

from anonmail.core.fragments import fragment_count
from anonmail.core.keys import IdentityKey
from anonmail.core.params import NetworkParams
from anonmail.keyfiles import write_key_file
from anonmail.net.router import Router
from anonmail.net.tcp import TcpTransport
from mixnode.authority import Authority, AuthorityConfig
from anonmail.daemon.cli import EXIT_NOT_RUNNING as NOT_RUNNING
from anonmail.daemon.identity import load_or_create_identity
from mixnode.authority.admission import Admission, admit

pytestmark = [pytest.mark.network, pytest.mark.slow]

PASSPHRASE = "a long enough passphrase"


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


FAST = {"lambda_payload": 10.0, "lambda_loop": 1.0, "fetch_interval": 0.5, "delay_mean": 0.02}
#: What the authority publishes: the fast agents' own rates (agents may be stricter, never weaker).
PARAMS = NetworkParams(**FAST)


def fast_agent(home: Path) -> None:
    """Quick rates for a test: many packets per second, short delays, frequent fetches."""
    path = home / "agent.toml"
    text = path.read_text()
    for key, value in {**FAST, "ack_timeout": 5.0}.items():
        text = re.sub(rf"^{key} = [^#\n]*", f"{key} = {value} ", text, count=1, flags=re.M)
    path.write_text(text)


def enable_bridge(home: Path) -> int:
    """Turn on the agent's SMTP/IMAP bridge on free loopback ports; returns the IMAP port."""
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    path = home / "agent.toml"
    text = path.read_text()
    text = re.sub(r"^enabled = false", "enabled = true", text, count=1, flags=re.M)
    text = re.sub(r"^smtp_port = \d+", f"smtp_port = {ports[0]}", text, count=1, flags=re.M)
    text = re.sub(r"^imap_port = \d+", f"imap_port = {ports[1]}", text, count=1, flags=re.M)
    path.write_text(text)
    return ports[1]


@pytest.mark.anyio
async def test_users_send_and_read_mail_through_processes(tmp_path):
    identity = IdentityKey.generate()
    (tmp_path / "auth").mkdir()
    write_key_file(tmp_path / "auth" / "identity.key", identity.seed)
    config = AuthorityConfig(
        name="auth", data_dir=tmp_path / "auth", key_file=tmp_path / "auth" / "identity.key",
        listen=("tcp://127.0.0.1:0",), threshold=1, epoch_seconds=3600, test_mode=True,
        bootstrap_nodes=5, round_seconds=1, sync_delay=0, params=PARAMS,
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
                admit(config.data_dir, Admission(f"mix-{layer}", "mix", layer, load_or_create_identity(d).public))
                start(stack, "mixnode.cli", "run", "--config", str(d / "mixnode.toml"), log=tmp_path / f"mix{layer}.log")
            for name in ("alpha", "beta"):
                d = tmp_path / name
                run("anonmail.cli", "provider", "init", "--dir", str(d), "--name", name,
                    "--listen", "tcp://127.0.0.1:0", "--authority", pin)
                admit(config.data_dir, Admission(name, "provider", 0, load_or_create_identity(d).public))
                start(stack, "anonmail.cli", "provider", "run", "--dir", str(d), log=tmp_path / f"{name}.log")

            def listed() -> bool:
                status = [json.loads((tmp_path / n / "status.json").read_text())
                          for n in ("alpha", "beta") if (tmp_path / n / "status.json").exists()]
                return len(status) == 2 and all(s.get("in_consensus") for s in status)

            await wait_for(listed, 60, "the consensus")
            homes, agents = {}, {}
            for user, provider in (("alice", "alpha"), ("bob", "beta")):
                home = tmp_path / "users" / user
                proc = await arun("anonmail.cli", "init", "--test-mode", "--authority", pin, "--provider", provider,
                           "--kdf", "interactive", home=home)
                homes[user] = home
                assert f"@{provider}" in proc.stdout.decode()
                fast_agent(home)
                if user == "bob":  # bob's agent also serves his mail client (the bridge), with init's login
                    bridge_password = re.search(r"password:\s+(\S+)", proc.stdout.decode()).group(1)
                    imap_port = enable_bridge(home)
                agents[user] = start(stack, "anonmail.cli", "agent", home=home, log=tmp_path / f"{user}.log")
            alice_address = (await arun("anonmail.cli", "whoami", home=homes["alice"])).stdout.decode().strip()
            bob_address = (await arun("anonmail.cli", "whoami", home=homes["bob"])).stdout.decode().strip()
            await arun("anonmail.cli", "contact", "add", "bob", bob_address, home=homes["alice"])
            body = os.urandom(20_000).hex().encode()  # 40 KB: several packets
            await arun("anonmail.cli", "send", "--to", "bob", "--subject", "over processes", "-", home=homes["alice"],
                stdin=body)

            def arrived() -> bool:
                inbox = run("anonmail.cli", "inbox", "--json", home=homes["bob"]).stdout.decode().splitlines()
                return len(inbox) == 1

            await wait_for(arrived, 120, "bob's inbox")

            def imap_message() -> bytes | None:
                # The bridge's IMAP view follows the store on its own schedule: a new session may
                # come a moment before the message is in it, as a mail client's next poll would.
                imap = imaplib.IMAP4("127.0.0.1", imap_port, timeout=30)
                try:
                    imap.login(bob_address, bridge_password)
                    imap.select("INBOX")
                    _typ, fetched = imap.fetch("1", "(BODY.PEEK[])")
                finally:
                    imap.logout()
                return fetched[0][1] if fetched and isinstance(fetched[0], tuple) else None

            message = None
            with anyio.fail_after(60):
                while message is None:
                    message = await anyio.to_thread.run_sync(imap_message)
                    if message is None:
                        await anyio.sleep(1)
            assert b"Subject: over processes" in message and body in message
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

            # `anonmail status`: the agents' status files, while they run and after a clean stop.
            def agent_status(user: str) -> tuple[int, dict, str]:
                proc = run("anonmail.cli", "status", "--json", home=homes[user], check=False)
                return proc.returncode, json.loads(proc.stdout or b"null"), proc.stderr.decode()

            packets = fragment_count(len(body))
            code, alice, err = await anyio.to_thread.run_sync(agent_status, "alice")
            assert code == 0, err
            assert alice["role"] == "agent" and alice["running"] and alice["connected"] and alice["provider"] == "alpha"
            assert alice["pid"] == agents["alice"].pid and alice["started"] <= alice["updated"]
            assert alice["packets_sent"] > 0 and alice["loops_sent"] > 0 and alice["fetches"] > 0
            # While it runs, the real/cover split is as of the agent's start (refreshed every 10 minutes).
            assert alice["packets_real"] == alice["acks"] == 0 and alice["detail_as_of"] <= alice["started"] + 2
            code, bob, err = await anyio.to_thread.run_sync(agent_status, "bob")
            assert code == 0, err
            assert bob["provider"] == "beta" and bob["fragments_received"] == 0
            for user in ("alice", "bob"):
                text = (homes[user] / "status.json").read_text()
                assert alice_address.split("@")[0] not in text and bob_address.split("@")[0] not in text

            def grew() -> bool:
                now = json.loads((homes["alice"] / "status.json").read_text())
                return (now["updated"] > alice["updated"] and now["packets_sent"] > alice["packets_sent"]
                        and now["loops_returned"] >= alice["loops_returned"])

            await wait_for(grew, 10, "alice's counters to grow")
            agents["alice"].send_signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(functools.partial(agents["alice"].wait, timeout=20)) == 0
            stopped = json.loads((homes["alice"] / "status.json").read_text())
            assert stopped["running"] is False and stopped["packets_sent"] > alice["packets_sent"]
            # A clean stop writes the split as it is.
            assert stopped["packets_real"] >= packets and stopped["packets_cover"] > 0
            assert stopped["packets_sent"] == stopped["packets_real"] + stopped["packets_cover"]
            assert stopped["acks"] >= packets and stopped["entries_fetched"] >= stopped["acks"]
            assert (stopped["outbox_queued"], stopped["outbox_acknowledged"], stopped["outbox_failed"]) == (0, 1, 0)
            assert (homes["alice"] / "status.json").stat().st_mode & 0o777 == 0o600
            code, _, err = await anyio.to_thread.run_sync(agent_status, "alice")
            assert code == NOT_RUNNING and "no agent is running" in err and "it stopped" in err

            # No user address in any process's log (agents, providers, mixes).
            for log in sorted(tmp_path.glob("*.log")):
                text = log.read_text(errors="replace")
                for address in (alice_address, bob_address):
                    assert address.split("@")[0] not in text, (log.name, address)
            tg.cancel_scope.cancel()
