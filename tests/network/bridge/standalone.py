"""A stand-alone bridge (``anonmail bridge`` without an agent) on a user store made offline."""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager

import anyio
import anyio.from_thread
import anyio.lowlevel

from anonmail.agent import account
from anonmail.agent.store import AgentStore
from anonmail.bridge.config import BridgeSettings
from anonmail.bridge.credentials import create_login
from anonmail.bridge.server import agent_refusal, serve_bridge
from anonmail.core.address import Address
from anonmail.core.keys import IdentityKey, fingerprint


@contextmanager
def standalone_bridge(home, *, as_if_agent_runs: bool = False):
    """Yield ((address, password), BridgePorts) of a bridge whose user has no agent running.

    ``as_if_agent_runs``: serve anyway (what a bridge inside the agent does), for tests of IMAP alone.
    """
    identity = IdentityKey.generate()
    address = str(Address(fingerprint(identity.public), "alpha"))
    store = AgentStore(home / account.STORE_FILE)
    store.set_meta(address=address, provider="alpha")
    store.close()
    password = create_login(home, address)
    ready, box = threading.Event(), {}

    async def main() -> None:
        box["token"], box["stop"] = anyio.lowlevel.current_token(), anyio.Event()
        async with anyio.create_task_group() as tg:
            box["ports"] = await tg.start(functools.partial(
                serve_bridge, home, BridgeSettings(smtp_port=0, imap_port=0), quota=None,
                refusal=(lambda: None) if as_if_agent_runs else agent_refusal(home)))
            ready.set()
            await box["stop"].wait()
            tg.cancel_scope.cancel()

    def run() -> None:
        try:
            anyio.run(main)
        except BaseException as exc:
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60), "the stand-alone bridge did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield (address, password), box["ports"]
    finally:
        anyio.from_thread.run_sync(box["stop"].set, token=box["token"])
        thread.join(10)
