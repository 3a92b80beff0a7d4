"""The user's command line against a running in-memory network: a new user's path, and bad input."""

from __future__ import annotations

import os
import random
import re
import time
from contextlib import AsyncExitStack

import anyio
import pytest

from anonmail.agent import account
from anonmail.agent.cli import init_user
from anonmail.agent.config import load_agent_config, render_agent_config
from anonmail.agent.enroll import enroll
from anonmail.agent.service import Agent, AgentSettings
from anonmail.agent.store import AgentStore
from anonmail.cli import main
from anonmail.core.keys import EncryptionKey, IdentityKey, certify_encryption_key
from anonmail.keyfiles import load_identity
from anonmail.clients.directory import DirectoryClient
from anonmail.errors import PassphraseError
from anonmail.testnet.memory import LOCAL_RULES_PARAMS, MemoryMixnet

pytestmark = pytest.mark.network

PASSPHRASE = "correct horse battery"
FAST = AgentSettings(provider="alpha", lambda_payload=20.0, lambda_loop=1.0, fetch_interval=0.3, delay_mean=0.02,
                     transport_slack=1.0, poll_interval=0.2, threads=False)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def write_config(home, provider: str, net, **agent_lines: object) -> None:
    """An agent.toml for the in-memory network (what `anonmail init` writes, with test_mode)."""
    import base64

    text = render_agent_config(provider=provider, threshold=2, test_mode=True,
                               authorities=[(a, base64.b64encode(k).decode()) for a, k in net.pins])
    for key, value in agent_lines.items():
        text = re.sub(rf"^{key} = [^#\n]*", f"{key} = {value} ", text, count=1, flags=re.M)
    (home / account.CONFIG_FILE).write_text(text)


async def run_agent(tg, net, home, identity, settings):
    store = AgentStore(home / account.STORE_FILE)
    router = net.client_router(home.name)
    directory = DirectoryClient(router, net.pins, net.threshold, production=False, epoch_seconds=net.epoch_seconds)
    agent = Agent(identity=identity, store=store, router=router, directory=directory, settings=settings,
                  rng=random.Random(home.name))
    await tg.start(agent.run)
    return agent


async def wait_until(predicate, timeout=120.0):
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.1)


@pytest.mark.anyio
async def test_a_new_user_from_init_to_reading_a_reply(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANONMAIL_PASSPHRASE", PASSPHRASE)
    async with AsyncExitStack() as stack:
        net = await stack.enter_async_context(MemoryMixnet.start(tmp_path / "net", mix_overrides={"lambda_loop": 0.0},
                                                                 params=LOCAL_RULES_PARAMS))
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        alice_home = tmp_path / "alice"
        steps: list[str] = []
        address, provider, _pinned = await init_user(
            alice_home, net.client_router("init"), pins=net.pins, threshold=2, epoch_seconds=net.epoch_seconds,
            production=False, provider=None, passphrase=PASSPHRASE, kdf="interactive", progress=steps.append)
        assert provider in ("alpha", "beta") and str(address).endswith("@" + provider)
        assert any("registering" in s for s in steps)
        assert oct((alice_home / account.IDENTITY_FILE).stat().st_mode & 0o777) == "0o600"
        write_config(alice_home, provider, net)
        load_agent_config(alice_home)
        identity = load_identity(alice_home / account.IDENTITY_FILE, PASSPHRASE)
        code, out, _ = cli(capsys, "whoami", "--home", str(alice_home))
        assert code == 0 and out.strip() == str(address)

        bob_home = tmp_path / "bob"
        bob_identity = IdentityKey.generate()
        bob_store, bob_address = await enroll(bob_home, bob_identity, "beta", net.client_router("bob"),
                                              net.provider_address("beta"), now=int(time.time()))
        bob_store.close()
        write_config(bob_home, "beta", net)
        (bob_home / account.IDENTITY_FILE).write_bytes(b"")  # marks the home as initialised for the CLI

        assert cli(capsys, "contact", "add", "bob", str(bob_address), "--home", str(alice_home))[0] == 0
        code, out, _ = cli(capsys, "contact", "list", "--home", str(alice_home))
        assert out.strip() == f"bob\t{bob_address}\tunverified"
        body = tmp_path / "letter.txt"
        body.write_text("Dear Bob,\nthe mixnet works.\n")
        code, out, _ = cli(capsys, "send", "--to", "bob", "--subject", "hello", str(body), "--home", str(alice_home))
        assert code == 0 and "queued" in out
        code, out, _ = cli(capsys, "outbox", "--home", str(alice_home))
        assert "queued" in out and "hello" in out

        # The agents run while the CLI keeps working on the same stores.
        alice = await run_agent(tg, net, alice_home, identity, AgentSettings(**{**FAST.__dict__, "provider": provider}))
        bob = await run_agent(tg, net, bob_home, bob_identity, AgentSettings(**{**FAST.__dict__, "provider": "beta"}))
        await wait_until(lambda: len(bob.store.inbox()) == 1 and alice.store.outbox()[0].state == "acknowledged")
        code, out, _ = cli(capsys, "outbox", "--home", str(alice_home))
        assert "acknowledged" in out and "[############] 1/1" in out
        code, out, _ = cli(capsys, "inbox", "--home", str(bob_home))
        assert code == 0 and "hello" in out and "*" in out
        code, out, _ = cli(capsys, "read", "1", "--home", str(bob_home))
        assert "the mixnet works." in out and f"From:     {address}" in out
        # Bob answers to the address he read; Alice reads the reply.
        reply = tmp_path / "reply.txt"
        reply.write_text("Hi Alice, got it.\n")
        assert cli(capsys, "send", "--to", str(address), "--subject", "re: hello", str(reply),
                   "--home", str(bob_home))[0] == 0
        await wait_until(lambda: len(alice.store.inbox()) == 1)
        code, out, _ = cli(capsys, "read", "1", "--home", str(alice_home))
        assert "Hi Alice, got it." in out and "(bob)" in out
        assert cli(capsys, "delete", "1", "--home", str(alice_home))[0] == 0
        code, _, err = cli(capsys, "inbox", "--home", str(alice_home))
        assert "inbox is empty" in err


@pytest.mark.anyio
async def test_bad_input_is_one_line_and_stores_nothing(tmp_path, capsys, monkeypatch):
    async with AsyncExitStack() as stack:
        net = await stack.enter_async_context(MemoryMixnet.start(tmp_path / "net", mix_overrides={"lambda_loop": 0.0},
                                                                 params=LOCAL_RULES_PARAMS))
        home = tmp_path / "alice"
        identity = IdentityKey.generate()
        store, _ = await enroll(home, identity, "alpha", net.client_router("alice"), net.provider_address("alpha"),
                                now=int(time.time()))
        from anonmail.keyfiles import save_identity

        save_identity(home / account.IDENTITY_FILE, identity, PASSPHRASE, opslimit=2, memlimit=64 * 1024 * 1024)
        write_config(home, "alpha", net, outbox_quota=100_000)
        bob = IdentityKey.generate()
        from anonmail.core.address import Address

        bob_address = str(Address.for_key(bob.public, "beta"))
        assert cli(capsys, "contact", "add", "bob", bob_address, "--home", str(home))[0] == 0
        small = tmp_path / "small.txt"
        small.write_text("hi")
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(150_000))
        huge = tmp_path / "huge.bin"
        huge.write_bytes(b"x" * (4 * 1024 * 1024 + 1))
        wrong = tmp_path / "wrong-passphrase"
        wrong.write_text("not the passphrase")
        cases = [
            (["send", "--to", "carol", str(small)], "unknown contact 'carol'"),
            (["send", "--to", "AAAA@beta", str(small)], "address"),
            (["contact", "add", "eve", bob_address[:-9] + "x@beta"], "address"),
            (["contact", "add", "bob2", "no-at-sign"], "address"),
            (["send", "--to", "bob", str(huge)], "limit"),
            (["send", "--to", "bob", str(big)], "outbox full"),
            (["read", "7"], "no message 7"),
            (["send", "--to", "bob", str(tmp_path / "missing.txt")], "cannot read"),
            (["agent", "--passphrase-file", str(wrong)], "wrong passphrase"),
        ]
        for argv, fragment in cases:
            code, out, err = cli(capsys, *argv, "--home", str(home))
            assert code != 0, argv
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("anonmail: error: "), (argv, err)
            assert fragment in lines[0], (argv, lines[0])
        assert store.outbox() == []
        # An expired key: refused with a warning that says what to do; nothing queued.
        expired = certify_encryption_key(bob, EncryptionKey.generate().public, not_before=int(time.time()) - 10_000, lifetime_s=100)
        store.add_contact_certs(Address.for_key(bob.public, "beta").fingerprint, bob.public,
                                [(expired.to_bytes(), expired.not_before, expired.not_after)])
        code, _, err = cli(capsys, "send", "--to", "bob", str(small), "--home", str(home))
        assert code == 1 and "expired" in err and "re-announce" in err and "contact refresh bob" in err
        assert store.outbox() == []
        assert cli(capsys, "contact", "refresh", "bob", "--home", str(home))[0] == 0
        code, _, _ = cli(capsys, "send", "--to", "bob", str(small), "--home", str(home))
        assert code == 0 and len(store.outbox()) == 1
        with pytest.raises(PassphraseError):
            load_identity(home / account.IDENTITY_FILE, "not the passphrase")
        store.close()
