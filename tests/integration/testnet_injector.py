"""A stranger (or a node, with its link key) talking to a running testnet's nodes over Tor.

Used by the fault tests: builds Sphinx packets from the consensus and sends frames to a node.
"""

from __future__ import annotations

import os
import time
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import anyio.abc
import pytest

from anonmail.core import sphinx
from anonmail.core.fragments import KIND_DROP, encode_cover_payload
from anonmail.core.pki import epoch_at
from anonmail.core.sizes import MAILBOX_ID_BYTES
from anonmail.core.wire import PROTOCOL_VERSION, Hello, Role, encode_frame
from anonmail.clients.directory import DirectoryClient
from anonmail.errors import ConnectError
from anonmail.net.framed import FramedStream
from anonmail.net.router import Router
from anonmail.testnet.network import Testnet
from anonmail.testnet.processes import log_tail
from mixnode.handshake import LINK_KEY_FILE, initiate, load_or_create_link_secret

__all__ = ["Injector", "onion", "EPOCH"]

#: The epoch length of the fault tests' testnet.
EPOCH = 3600


class Injector:
    """Builds Sphinx packets from the consensus and sends frames to a node over Tor.

    A stranger by default; with ``as_node`` it dials with that node's link key (read from its
    data directory), i.e. over the authenticated link that node would use; with ``own_tor`` over a
    client tor of its own, sharing none with the users.
    """

    def __init__(self, net: Testnet, data_dir: Path, as_node: str | None = None, own_tor: bool = False) -> None:
        self.net = net
        self.own_tor = own_tor
        self.data_dir = data_dir
        self.link_secret = load_or_create_link_secret(net.dir_of(as_node)) if as_node else None
        assert as_node is None or (net.dir_of(as_node) / LINK_KEY_FILE).exists()

    async def __aenter__(self) -> Injector:
        self.stack = AsyncExitStack()
        transports = [await self.stack.enter_async_context(t)
                      for t in self.net.client_transports(self.data_dir, own_tor=self.own_tor)]
        self.router = Router(transports, production=True)
        directory = DirectoryClient(self.router, self.net.pins, 2, production=True, epoch_seconds=EPOCH)
        with anyio.fail_after(120):
            self.consensus = await directory.fetch(epoch_at(time.time(), EPOCH))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()

    def drop_packet(self, entry: str, delay_ms: int = 0) -> bytes:
        """A valid packet entering at mix ``entry`` (layer 1, held ``delay_ms``), through layers 2 and 3 to alpha."""
        names = [entry, "mix2a", "mix3a", "alpha"]
        hops = []
        for name in names:
            node = self.consensus.by_name(name)
            assert node is not None, f"{name} is not in the consensus"
            hops.append(sphinx.Hop(node.node_id, node.sphinx_key, delay_ms if name == entry else 0))
        return sphinx.build_forward(hops, os.urandom(MAILBOX_ID_BYTES), encode_cover_payload(KIND_DROP))

    async def connect(self, address: str, budget: float = 300.0) -> anyio.abc.ByteStream:
        """Connect as a node would: retry a failed connect until ``budget`` seconds have passed.

        One connect may exhaust its own 90 s on a small, loaded Tor network (CI once saw three
        30 s attempts time out in a row); nodes retry with backoff, and so does the injector.
        """
        deadline = time.monotonic() + budget
        failures = []
        while True:
            try:
                return await self.router.connect(address)
            except ConnectError as exc:
                failures.append(str(exc))
                print(f"injector: connect failed, retrying: {exc}", flush=True)
                if time.monotonic() > deadline:
                    users_tor = self.net.directory / "tor" / "client-users" / "notice.log"
                    pytest.fail(f"cannot reach {address} in {budget:.0f} s: {failures}; "
                                f"the users' tor log ends: {log_tail(users_tor, 15)}")
                await anyio.sleep(2.0)

    async def send(self, address: str, frames: list[bytes], to: str | None = None) -> None:
        """One connection: HELLO (and the handshake as ``as_node`` to node ``to``), then the frames."""
        stream = await self.connect(address)
        with anyio.fail_after(180):
            async with stream:
                if self.link_secret is not None and to is not None:
                    await initiate(FramedStream(stream), self.link_secret, self.consensus.by_name(to).link_key)
                else:
                    await stream.send(encode_frame(Hello(PROTOCOL_VERSION, Role.PROVIDER)))
                for i in range(0, len(frames), 50):
                    await stream.send(b"".join(frames[i:i + 50]))
                await anyio.sleep(1.0)


def onion(net: Testnet, name: str) -> str:
    return next(a for a in net.addresses(name) if a.startswith("onion://"))
