"""`anonmail invite`, `anonmail accept` and `anonmail contact verify` as a user runs them (in-memory network)."""

from __future__ import annotations

import re
import time
from contextlib import AsyncExitStack

import anyio
import pytest

from anonmail.agent import account, invite_cli
from anonmail.agent.enroll import enroll
from anonmail.agent.service import AgentSettings
from anonmail.cli import main
from anonmail.core.keys import IdentityKey
from anonmail.testnet.memory import LOCAL_RULES_PARAMS, MemoryMixnet
from tests.network.agent.test_user_cli import FAST, cli, run_agent, write_config

pytestmark = pytest.mark.network


async def user(net, tmp_path, name, provider):
    home = tmp_path / name
    identity = IdentityKey.generate()
    store, address = await enroll(home, identity, provider, net.client_router(name), net.provider_address(provider),
                                  now=int(time.time()))
    store.close()
    write_config(home, provider, net)
    (home / account.IDENTITY_FILE).write_bytes(b"")  # marks the home as initialised for the CLI
    return home, identity, address


@pytest.mark.anyio
async def test_invite_and_accept_on_the_command_line(tmp_path, capsys):
    async with AsyncExitStack() as stack:
        net = await stack.enter_async_context(MemoryMixnet.start(tmp_path / "net", mix_overrides={"lambda_loop": 0.0},
                                                                 params=LOCAL_RULES_PARAMS))
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        alice_home, alice_id, alice_address = await user(net, tmp_path, "alice", "alpha")
        bob_home, bob_id, bob_address = await user(net, tmp_path, "bob", "beta")
        await run_agent(tg, net, alice_home, alice_id, AgentSettings(**{**FAST.__dict__, "provider": "alpha"}))
        await run_agent(tg, net, bob_home, bob_id, AgentSettings(**{**FAST.__dict__, "provider": "beta"}))

        results = {}

        async def run(key, *argv):
            results[key] = await anyio.to_thread.run_sync(main, list(argv))  # output stays for capsys below

        tg.start_soon(run, "invite", "invite", "--name", "bob", "--home", str(alice_home))
        seen = ""
        with anyio.fail_after(60):
            while "they run: anonmail accept" not in seen:
                await anyio.sleep(0.1)
                seen += capsys.readouterr().out
        code = re.search(r"your invitation code: (\S+)", seen).group(1)
        assert re.fullmatch(r"\d{1,4}-[a-z]+-[a-z]+@alpha", code)
        tg.start_soon(run, "accept", "accept", code, "--name", "alice", "--home", str(bob_home))
        with anyio.fail_after(120):
            while len(results) < 2:
                await anyio.sleep(0.1)
                seen += capsys.readouterr().out
        seen += capsys.readouterr().out
        assert results == {"invite": 0, "accept": 0}
        assert f"bob is now your contact (verified): {bob_address}" in seen
        assert f"alice is now your contact (verified): {alice_address}" in seen
        assert cli(capsys, "contact", "list", "--home", str(alice_home))[1].strip() == \
            f"bob\t{bob_address}\tverified"
        # A used code is refused, with one line that says what to do.
        status, _out, err = await anyio.to_thread.run_sync(
            lambda: cli(capsys, "accept", code, "--home", str(bob_home)))
        assert status == 1 and "ask for a new invite" in err


@pytest.mark.anyio
async def test_a_pasted_contact_is_unverified_until_its_fingerprint_matches(tmp_path, capsys):
    async with AsyncExitStack() as stack:
        net = await stack.enter_async_context(MemoryMixnet.start(tmp_path / "net", mix_overrides={"lambda_loop": 0.0},
                                                                 params=LOCAL_RULES_PARAMS))
        alice_home, _, _ = await user(net, tmp_path, "alice", "alpha")
        bob_home, _, bob_address = await user(net, tmp_path, "bob", "beta")
        code, out, _ = cli(capsys, "contact", "add", "bob", str(bob_address), "--home", str(alice_home))
        assert code == 0 and "unverified until you compare fingerprints" in out
        assert cli(capsys, "contact", "list", "--home", str(alice_home))[1].strip().endswith("\tunverified")
        fingerprint = cli(capsys, "whoami", "--fingerprint", "--home", str(bob_home))[1].strip()
        assert len(fingerprint.split()) == 14 and fingerprint.replace(" ", "") == str(bob_address).split("@")[0]
        wrong = ("a" if fingerprint[0] != "a" else "b") + fingerprint[1:]
        status, _, err = cli(capsys, "contact", "verify", "bob", *wrong.split(), "--home", str(alice_home))
        assert status == 1 and "not bob's" in err
        assert cli(capsys, "contact", "list", "--home", str(alice_home))[1].strip().endswith("\tunverified")
        status, out, _ = cli(capsys, "contact", "verify", "bob", *fingerprint.upper().split(), "--home", str(alice_home))
        assert status == 0 and "bob is verified" in out
        assert cli(capsys, "contact", "list", "--home", str(alice_home))[1].strip().endswith("\tverified")


@pytest.mark.anyio
async def test_invite_without_a_running_agent_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(invite_cli, "PICKUP_TIMEOUT_S", 0.5)
    async with AsyncExitStack() as stack:
        net = await stack.enter_async_context(MemoryMixnet.start(tmp_path / "net", mix_overrides={"lambda_loop": 0.0},
                                                                 params=LOCAL_RULES_PARAMS))
        alice_home, _, _ = await user(net, tmp_path, "alice", "alpha")
        status, out, err = cli(capsys, "invite", "--home", str(alice_home))
        assert status == 1 and "is `anonmail agent` running" in err and "code" not in out
        status, _, err = cli(capsys, "accept", "12-orbit", "--home", str(alice_home))
        assert status == 1 and "a number and two words" in err
