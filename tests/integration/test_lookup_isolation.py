"""Attack: a provider links a key lookup to the asker's session, or two lookups to each other.

Tor (``tests/integration/tor_fixtures.py``): a provider's onion service answers key lookups; a
user holds a session to it (as the agent holds its authenticated session) and looks two users
up. tor's own control port (stem STREAM events, what a provider running
``HiddenServiceExportCircuitID`` or watching its rendezvous circuits also sees) says which
circuit each stream rode: every lookup must ride a circuit of its own.

I2P (``tests/integration/i2p_fixtures.py``): the same over the private I2P network, where the
provider's SAM bridge names the destination every stream comes from: every lookup must come
from a destination of its own.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import anyio
import pytest

from anonmail.clients.provider import lookup_keys
from anonmail.errors import ConnectError, TransportError
from anonmail.core.address import Address
from anonmail.core.keys import EncryptionKey, IdentityKey, certify_encryption_key
from anonmail.core.mailproto import b64e
from anonmail.core.wire import Close, Control, Role
from anonmail.net.framed import FramedStream
from anonmail.net.router import Router
from anonmail.net.i2p import I2PTransport
from anonmail.net.i2p.session import SamSocket
from anonmail.net.tor import OnionTransport

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(r"ignore:setDaemon\(\) is deprecated:DeprecationWarning"),
]
needs_tor = [pytest.mark.tor, pytest.mark.skipif(shutil.which("tor") is None, reason="tor is not installed")]

PROVIDER = "alpha"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def user() -> tuple[IdentityKey, Address, bytes]:
    identity = IdentityKey.generate()
    cert = certify_encryption_key(identity, EncryptionKey.generate().public, not_before=int(time.time()) - 60,
                                  lifetime_s=86400)
    return identity, Address.for_key(identity.public, PROVIDER), cert.to_bytes()


USERS = [user() for _ in range(2)]


async def key_service(stream) -> None:
    """The lookup half of a provider: HELLO, challenge, then ``keys`` answers for USERS."""
    framed = FramedStream(stream)
    await framed.expect_hello()
    await framed.hello(Role.PROVIDER)
    await framed.send(Control({"type": "challenge", "nonce": b64e(os.urandom(32)), "provider": PROVIDER}))
    while True:
        frame = await framed.receive()
        if frame is None or isinstance(frame, Close):
            return
        if isinstance(frame, Control) and frame.message.get("type") == "keys":
            found = [u for u in USERS if str(u[1]) == frame.message.get("address")]
            identity, _, cert = found[0]
            await framed.send(Control({"type": "keys", "identity": b64e(identity.public), "certs": [b64e(cert)]}))


class StreamCircuits:
    """Which circuit each succeeded stream to an onion host rode, from tor's STREAM events."""

    def __init__(self, control_port: int) -> None:
        import stem.control

        self.circuits: list[str] = []
        self._lock = threading.Lock()
        self.controller = stem.control.Controller.from_port(port=control_port)
        self.controller.authenticate()
        self.controller.add_event_listener(self._on_stream, stem.control.EventType.STREAM)
        self.host = ""

    def _on_stream(self, event) -> None:
        if event.status == "SUCCEEDED" and event.target_address == self.host:
            with self._lock:
                self.circuits.append(event.circ_id)

    def close(self) -> None:
        self.controller.close()


@pytest.mark.anyio
@needs_tor[0]
@needs_tor[1]
async def test_attack_each_key_lookup_rides_a_circuit_of_its_own(tor_clients, tmp_path):
    server, client = tor_clients
    watcher = await anyio.to_thread.run_sync(StreamCircuits, client.control_port)
    try:
        async with OnionTransport(server.settings(), data_dir=tmp_path / "provider") as provider, \
                OnionTransport(client.settings(connect_timeout=90.0)) as connector:
            (address,) = await provider.listen(key_service)
            watcher.host = address.removeprefix("onion://").rsplit(":", 1)[0]
            router = Router([connector])
            with anyio.fail_after(240):
                session = await router.connect(address)  # the user's own session with this provider
                async with session:
                    for identity, who, _ in USERS:
                        found, certs = await lookup_keys(router, address, who, timeout=90.0)
                        assert found == identity.public and len(certs) == 1
            await anyio.sleep(1)  # the last STREAM events arrive on stem's thread
    finally:
        await anyio.to_thread.run_sync(watcher.close)
    circuits = list(watcher.circuits)
    assert len(circuits) == 3, circuits  # the session, then two lookups
    # Today all three share the session's rendezvous circuit: the provider links them.
    assert len(set(circuits)) == 3, circuits


async def retried(call, deadline_s: float = 120.0):
    """``call()``, again while it fails to connect (a new I2P session's lease set takes a while to spread)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await call()
        except (ConnectError, TransportError):
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(1.0)


@pytest.mark.i2p
@pytest.mark.anyio
async def test_attack_each_key_lookup_comes_from_an_i2p_destination_of_its_own(i2p_network, tmp_path, monkeypatch):
    peers: list[bytes] = []
    read_line = SamSocket.read_line

    async def seen_by_the_provider(self, what: str) -> bytes:
        line = await read_line(self, what)
        if what.startswith("STREAM ACCEPT (waiting"):
            peers.append(line.split()[0])  # SAM names the peer's destination first
        return line

    monkeypatch.setattr(SamSocket, "read_line", seen_by_the_provider)
    async with I2PTransport(tmp_path / "provider", i2p_network.settings(0)) as provider, \
            I2PTransport(None, i2p_network.settings(1, lookup_timeout=10.0)) as user_side:
        (address,) = await provider.listen(key_service)
        router = Router([user_side], production=False)
        with anyio.fail_after(600):
            session = await retried(lambda: router.connect(address))
            async with session:
                found: dict[bytes, bytes] = {}

                async def look_up(identity: IdentityKey, who: Address) -> None:
                    found[identity.public], _certs = await retried(
                        lambda: lookup_keys(router, address, who, timeout=90.0))

                # At once, not one after the other: each waits for its new destination's tunnels.
                async with anyio.create_task_group() as tg:
                    for identity, who, _ in USERS:
                        tg.start_soon(look_up, identity, who)
                assert found == {identity.public: identity.public for identity, _, _ in USERS}
            # Each lookup's destination outlives its stream by TRANSIENT_LINGER (i2pd 2.56 crashes when
            # a destination goes while its stream still closes), then goes: only the session's stays.
            assert len(user_side._sessions) > 1
            while len(user_side._sessions) > 1:
                await anyio.sleep(0.5)
    assert len(peers) >= 3, len(peers)  # the session, then (at least) two lookups
    assert len(set(peers)) == len(peers), f"{len(peers)} streams came from {len(set(peers))} destination(s)"
