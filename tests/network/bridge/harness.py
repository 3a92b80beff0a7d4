"""Alice and Bob with agents and bridges on an in-memory network, run in a background thread.

The tests are ordinary blocking code, as mail clients are: ``smtplib``, ``imaplib`` and real
programs (swaks, neomutt, fetchmail) talk to the bridges over 127.0.0.1 while the network,
both agents and both bridges run on their own asyncio event loop in a thread.
"""

from __future__ import annotations

import email
import email.policy
import functools
import imaplib
import smtplib
import random
import threading
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.lowlevel

from anonmail.agent import account
from anonmail.agent.enroll import enroll
from anonmail.agent.service import Agent, AgentSettings
from anonmail.agent.store import AgentStore
from anonmail.bridge.config import BridgeSettings
from anonmail.bridge.credentials import create_login
from anonmail.bridge.server import serve_bridge
from anonmail.core.keys import IdentityKey
from anonmail.clients.directory import DirectoryClient
from anonmail.testnet.memory import LOCAL_RULES_PARAMS, MemoryMixnet

FAST = dict(lambda_payload=80.0, lambda_loop=1.0, fetch_interval=0.2, delay_mean=0.01, transport_slack=2.0,
            poll_interval=0.2)


@dataclass
class User:
    """What a mail client needs to know about one user, and where their store is."""

    name: str
    home: Path
    address: str
    password: str
    smtp_port: int = 0
    imap_port: int = 0

    def store(self) -> AgentStore:
        """The user's agent store, opened from the test's thread (close it after use)."""
        return AgentStore(self.home / account.STORE_FILE)

    def imap(self) -> imaplib.IMAP4:
        """A logged-in imaplib client."""
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        client.login(self.address, self.password)
        return client


class BridgeNet:
    """The running network; ``users['alice']``, ``users['bob']``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.users: dict[str, User] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token = None
        self._stop: anyio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="bridge-net", daemon=True)

    def __enter__(self) -> BridgeNet:
        self._thread.start()
        if not self._ready.wait(180):
            raise TimeoutError("the in-memory network with two bridges did not come up in 180 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc) -> None:
        if self._token is not None and self._stop is not None:
            anyio.from_thread.run_sync(self._stop.set, token=self._token)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            anyio.run(self._main)
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = anyio.lowlevel.current_token()
        self._stop = anyio.Event()
        async with AsyncExitStack() as stack:
            net = await stack.enter_async_context(MemoryMixnet.start(
                self.root / "net", rng_seed=7, mix_overrides={"lambda_loop": 0.5}, provider_overrides={"lambda_loop": 0.2},
                params=LOCAL_RULES_PARAMS))
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            stores = {}
            for seed, (name, provider) in enumerate((("alice", "alpha"), ("bob", "beta"))):
                home = self.root / name
                identity = IdentityKey.generate()
                router = net.client_router(name)
                store, address = await enroll(home, identity, provider, router, net.provider_address(provider),
                                              now=int(time.time()))
                stack.callback(store.close)
                stores[name] = store
                user = User(name, home, str(address), create_login(home, str(address)))
                directory = DirectoryClient(router, net.pins, net.threshold, production=False,
                                            epoch_seconds=net.epoch_seconds)
                agent = Agent(identity=identity, store=store, router=router, directory=directory,
                              settings=AgentSettings(provider=provider, **FAST), rng=random.Random(seed))
                await tg.start(agent.run)
                ports = await tg.start(functools.partial(
                    serve_bridge, home, BridgeSettings(enabled=True, smtp_port=0, imap_port=0), quota=None))
                user.smtp_port, user.imap_port = ports.smtp_port, ports.imap_port
                self.users[name] = user
            stores["alice"].add_contact("bob", self.users["bob"].address, now=time.time())
            stores["bob"].add_contact("alice", self.users["alice"].address, now=time.time())
            self._ready.set()
            await self._stop.wait()


def wait_for(predicate, timeout: float = 240.0, step: float = 0.3, what: str = "condition"):
    """Poll ``predicate`` until it returns something true; its value (TimeoutError naming ``what``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout:.0f} s")
        time.sleep(step)


def messages(user, folder: str = "INBOX") -> list[bytes]:
    """Every message in a folder, as bytes (BODY.PEEK: nothing is marked read)."""
    client = user.imap()
    try:
        client.select(folder)
        _typ, data = client.uid("SEARCH", None, "ALL")
        out = []
        for uid in data[0].split():
            _typ, got = client.uid("FETCH", uid, "(BODY.PEEK[])")
            out += [part[1] for part in got if isinstance(part, tuple)][:1]  # skip unsolicited FLAGS lines
        return out
    finally:
        client.logout()


def find(user, needle: str, folder: str = "INBOX"):
    """The parsed message in ``folder`` whose Subject contains ``needle`` (or None)."""
    for raw in messages(user, folder):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        if needle in str(msg["Subject"] or ""):
            return msg
    return None


def submit(user, msg) -> None:
    """Send an EmailMessage through the user's bridge with smtplib."""
    with smtplib.SMTP("127.0.0.1", user.smtp_port, timeout=60) as smtp:
        smtp.login(user.address, user.password)
        smtp.send_message(msg)
