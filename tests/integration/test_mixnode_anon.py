"""A mix node that serves only an onion address and an I2P destination, on real tor and i2pd.

The directory authority runs in-process on loopback tcp (test mode); the mix listens only on
``onion://`` and ``i2p://``; the next hop (a sink registered as a provider) serves only an onion
address. Packets injected over Tor and over I2P both cross the mix and reach the sink.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from dataclasses import replace

import anyio
import anyio.abc
import pytest

from anonmail.core import sphinx
from anonmail.core.keys import IdentityKey
from anonmail.keyfiles import write_key_file
from anonmail.core.linkauth import generate_link_secret, link_public
from anonmail.core.pki import epoch_at, sign_descriptor
from anonmail.core.wire import Packet, encode_frame
from anonmail.clients.directory import DirectoryClient, upload_descriptor
from anonmail.net.framed import FramedStream
from anonmail.net.i2p import I2PTransport
from anonmail.net.router import Router
from anonmail.net.tcp import TcpTransport
from anonmail.net.tor import OnionTransport
from mixnode.authority import Authority, AuthorityConfig
from mixnode.authority.admission import Admission, admit
from anonmail.daemon.identity import load_or_create_identity
from mixnode.handshake import initiate, respond
from mixnode.decisions import DropReason
from mixnode.node import MixNode
from tests.network.mixnode.harness import mix_config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.tor,
    pytest.mark.i2p,
    pytest.mark.filterwarnings("ignore:setDaemon\\(\\) is deprecated:DeprecationWarning"),
]

EPOCH = 3600


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_mix_serves_onion_and_i2p_and_forwards_to_an_onion_peer(tor_clients, i2p_network, tmp_path):
    server_tor, client_tor = tor_clients
    identity = IdentityKey.generate()
    (tmp_path / "auth").mkdir()
    write_key_file(tmp_path / "auth" / "identity.key", identity.seed)
    auth_config = AuthorityConfig(
        name="auth", data_dir=tmp_path / "auth", key_file=tmp_path / "auth" / "identity.key",
        listen=("tcp://127.0.0.1:0",), threshold=1, epoch_seconds=EPOCH, test_mode=True,
        bootstrap_nodes=3,  # sink, source and mix: the epoch's consensus lists all three
    )
    arrivals: list[bytes] = []
    arrived = anyio.Event()
    sink_secret, sink_public = sphinx.generate_node_keypair()
    sink_link, source_link = generate_link_secret(), generate_link_secret()

    async def sink(stream: anyio.abc.ByteStream) -> None:
        nonlocal arrived
        framed = FramedStream(stream)
        await framed.expect_hello()
        await respond(framed, sink_link)  # the layer-3 mix proves itself, and we prove we are the sink
        while (frame := await framed.receive()) is not None:
            if isinstance(frame, Packet):
                result = sphinx.process(frame.data, sink_secret)
                assert isinstance(result, sphinx.Deliver)
                arrivals.append(result.mailbox_id)
                arrived.set()
                arrived = anyio.Event()

    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        auth_tcp = await stack.enter_async_context(TcpTransport())
        authority = Authority(auth_config, Router([auth_tcp], production=False), identity=identity, write_status=False)
        (auth_address,) = await tg.start(authority.run)

        # The sink: onion only, registered first so it is in the epoch's consensus.
        sink_onion = await stack.enter_async_context(OnionTransport(server_tor.settings(), data_dir=tmp_path / "sink"))
        (sink_address,) = await sink_onion.listen(sink)
        assert sink_address.startswith("onion://")
        client_tcp = await stack.enter_async_context(TcpTransport(None))
        router = Router([client_tcp], production=False)
        epoch = epoch_at(time.time(), EPOCH)
        sink_identity = IdentityKey.generate()
        (tmp_path / "mix-anon").mkdir(parents=True, exist_ok=True)
        admit(auth_config.data_dir, Admission("mix-anon", "mix", 3, load_or_create_identity(tmp_path / "mix-anon").public))
        # The injector is a layer-2 node (the only layer a layer-3 mix hears); the sink a provider.
        for name, role, layer, key, link in (("sink", "provider", 0, sink_identity, sink_link),
                                              ("source", "mix", 2, IdentityKey.generate(), source_link)):
            admit(auth_config.data_dir, Admission(name, role, layer, key.public))  # the operator's step
            for target in (epoch, epoch + 1):
                descriptor = sign_descriptor(
                    key, name=name, role=role, layer=layer, epoch=target, sphinx_key=sink_public,
                    addresses=[sink_address], production=False, link_key=link_public(link),
                )
                assert await upload_descriptor(router, [auth_address], descriptor) == 1
        directory = DirectoryClient(router, [(auth_address, identity.public)], 1, production=False, epoch_seconds=EPOCH)

        # The mix: listens on onion and I2P only (tcp only to reach the test authority).
        config = replace(
            mix_config(tmp_path, "mix-anon", 3, [(auth_address, identity.public)]),
            threshold=1, epoch_seconds=EPOCH, workers=2,
        )
        transports = [
            TcpTransport(None),
            OnionTransport(client_tor.settings(connect_timeout=90.0), data_dir=tmp_path / "mix-anon" / "tor"),
            I2PTransport(tmp_path / "mix-anon" / "i2p", i2p_network.settings(0)),
        ]
        mix = MixNode(config, transports)
        with anyio.fail_after(240):
            await tg.start(mix.run)
            while mix.directory.current() is None or not mix.status()["in_consensus"]:
                await anyio.sleep(0.5)
        consensus = await directory.fetch(epoch)
        assert consensus.by_name("sink") is not None and consensus.by_name("mix-anon") is not None
        schemes = sorted(a.split("://")[0] for a in mix.addresses)
        assert schemes == ["i2p", "onion"]
        onion_address = next(a for a in mix.addresses if a.startswith("onion://"))
        i2p_address = next(a for a in mix.addresses if a.startswith("i2p://"))

        route = [sphinx.Hop(mix.node_id, mix.keys.public(epoch), 0), sphinx.Hop(sink_identity_id(sink_identity), sink_public, 0)]
        injectors = {
            onion_address: await stack.enter_async_context(OnionTransport(client_tor.settings(connect_timeout=90.0))),
            i2p_address: await stack.enter_async_context(I2PTransport(None, i2p_network.settings(1))),
        }
        for n, (address, transport) in enumerate(injectors.items()):
            mailbox = bytes([n + 1]) * 16
            packet = sphinx.build_forward(route, mailbox, b"over " + address.split(":")[0].encode())
            with anyio.fail_after(240):
                stream = await transport.connect(address)
                async with stream:
                    await initiate(FramedStream(stream), source_link, consensus.by_name("mix-anon").link_key)
                    await stream.send(encode_frame(Packet(packet)))
                    while mailbox not in arrivals:
                        await arrived.wait()
        assert arrivals == [b"\x01" * 16, b"\x02" * 16]
        assert mix.stats.received == 2 and mix.stats.forwarded == 2
        # Loop cover has no route in this three-node consensus (no layer 1): those are the only drops allowed.
        assert sum(n for reason, n in mix.stats.dropped.items() if reason is not DropReason.LOOP_NO_PATH) == 0
        assert mix.status()["inbound_links"] == {} or set(mix.status()["inbound_links"]) <= {"source"}
        assert mix.status()["links"]["sink"]["authenticated"] is True


def sink_identity_id(identity: IdentityKey) -> bytes:
    """The routing id of the sink."""
    from anonmail.core.keys import node_id

    return node_id(identity.public)
