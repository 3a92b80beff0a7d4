"""An in-process anonmail network over the ``mem`` transport, in virtual time.

3 directory authorities (2-of-3 signatures), 3 layers of mix nodes, and a *sink*: a node
registered as a provider whose handler unwraps what reaches it and records when. Tests build
packets along chosen paths and inject them at a layer-1 mix.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
import anyio.abc

from anonmail.core import sphinx
from anonmail.core.keys import IdentityKey
from anonmail.core.linkauth import generate_link_secret, link_public
from anonmail.core.params import NetworkParams
from anonmail.core.pki import Consensus, epoch_at, sign_descriptor
from anonmail.core.wire import Packet, encode_frame
from anonmail.clients.directory import DirectoryClient, upload_descriptor
from anonmail.daemon.identity import load_or_create_identity
from anonmail.daemon.node_config import AuthorityPin
from anonmail.net.framed import FramedStream
from anonmail.net.memory import MemoryNetwork
from anonmail.net.router import Router
from mixnode.authority import Authority, AuthorityConfig, PeerAuthority
from mixnode.authority.admission import Admission, admit
from mixnode.config import MixConfig
from mixnode.handshake import initiate, respond
from mixnode.node import MixNode

EPOCH_SECONDS = 3600
#: The published parameters of these tests: no mix loops unless a test configures them, and
#: per-hop delays up to an hour (tests pick their packets' delays themselves).
QUIET_PARAMS = NetworkParams(mix_lambda_loop=0.0, max_delay=3600.0)
#: Virtual Unix time at which the tests' clocks start: 10 minutes into an epoch.
T0 = 1_800_000_000 - 1_800_000_000 % EPOCH_SECONDS + 600


def wall_clock() -> float:
    """Virtual Unix time: T0 plus anyio's (mock) clock."""
    return T0 + anyio.current_time()


@dataclass
class Arrival:
    time: float
    mailbox_id: bytes
    payload: bytes


@dataclass
class Sink:
    """The egress end of test paths: unwraps with its Sphinx key and records arrivals."""

    network: MemoryNetwork
    identity: IdentityKey = field(default_factory=IdentityKey.generate)
    link_secret: bytes = field(default_factory=generate_link_secret)
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    frames: int = 0
    arrived: anyio.Event = field(default_factory=anyio.Event)

    epoch_seconds: int = EPOCH_SECONDS

    def key(self, epoch: int) -> tuple[bytes, bytes]:
        if epoch not in self.keys:
            self.keys[epoch] = sphinx.generate_node_keypair()
        return self.keys[epoch]

    async def handler(self, stream: anyio.abc.ByteStream) -> None:
        framed = FramedStream(stream)
        await framed.expect_hello()
        await respond(framed, self.link_secret)  # a layer-3 mix links to us as to any provider
        while (frame := await framed.receive()) is not None:
            if isinstance(frame, Packet):
                self.frames += 1
                secret, _ = self.key(epoch_at(wall_clock(), self.epoch_seconds))
                result = sphinx.process(frame.data, secret)
                if isinstance(result, sphinx.Forward):  # relay into layer 1, as a provider does
                    await self.relay(result)
                    continue
                assert isinstance(result, sphinx.Deliver)
                self.arrivals.append(Arrival(anyio.current_time(), result.mailbox_id, result.payload))
                self.arrived.set()
                self.arrived = anyio.Event()

    async def relay(self, forward: sphinx.Forward) -> None:
        consensus = self.client.current() or await self.client.fetch(epoch_at(wall_clock(), self.epoch_seconds))
        target = consensus.by_id(forward.next_node)
        if target is None:
            return
        stream = await self.router.connect(target.addresses[0])
        async with stream:
            await initiate(FramedStream(stream), self.link_secret, target.link_key)
            await stream.send(encode_frame(Packet(forward.packet)))

    client: DirectoryClient | None = None
    router: Router | None = None


@dataclass
class TestNet:
    network: MemoryNetwork
    tmp: Path
    authorities: list[Authority]
    authority_pins: list[tuple[str, bytes]]
    mixes: dict[str, MixNode]
    sink: Sink
    client: DirectoryClient
    client_router: Router
    tg: anyio.abc.TaskGroup
    scopes: dict[str, anyio.CancelScope] = field(default_factory=dict)

    __test__ = False

    async def consensus(self, *, nodes: int) -> Consensus:
        """Wait until the consensus lists ``nodes`` nodes; return it."""
        with anyio.fail_after(600):
            while True:
                epoch = epoch_at(wall_clock(), self.sink.epoch_seconds)
                try:
                    consensus = await self.client.fetch(epoch)
                except Exception:
                    consensus = None
                if consensus is not None and len(consensus.nodes) >= nodes:
                    return consensus
                await anyio.sleep(1)

    def route(self, consensus: Consensus, names: list[str], delays_ms: list[int]) -> list[sphinx.Hop]:
        """Hops for mixes ``names`` (then the sink) with the given per-mix delays."""
        hops = []
        for name, delay in zip(names, delays_ms, strict=True):
            d = consensus.by_name(name)
            hops.append(sphinx.Hop(d.node_id, d.sphinx_key, delay))
        sink = consensus.by_name("sink")
        hops.append(sphinx.Hop(sink.node_id, sink.sphinx_key, 0))
        return hops

    async def register_sink(self, epoch: int) -> None:
        """Upload the sink's descriptor for an epoch to the authorities that are up."""
        descriptor = sign_descriptor(
            self.sink.identity, name="sink", role="provider", layer=0, epoch=epoch,
            sphinx_key=self.sink.key(epoch)[1], addresses=["mem://sink"], production=False,
            link_key=link_public(self.sink.link_secret),
        )
        up = [a.addresses[0] for a in self.authorities]
        assert await upload_descriptor(self.client_router, up, descriptor) >= 2

    async def inject(self, mix: str, packets: list[bytes]) -> None:
        """Send packets to a mix over one authenticated link, as an ingress provider (the sink) would."""
        consensus = self.client.current() or await self.client.fetch(epoch_at(wall_clock(), self.sink.epoch_seconds))
        target = consensus.by_name(mix)
        stream = await self.client_router.connect(f"mem://{mix}")
        async with stream:
            await initiate(FramedStream(stream), self.sink.link_secret, target.link_key)
            await stream.send(b"".join(encode_frame(Packet(p)) for p in packets))
            await anyio.sleep(0)

    async def start_mix(self, name: str) -> MixNode:
        """(Re)start a mix node with its config; its data dir persists across restarts."""
        config = self.mix_configs[name]
        node = MixNode(config, [self.network.transport(name)], wall_clock=wall_clock, rng=random.Random(name))
        scope = anyio.CancelScope()
        self.scopes[name] = scope

        async def run(*, task_status: anyio.abc.TaskStatus) -> None:
            with scope:
                await node.run(task_status=task_status)

        await self.tg.start(run)
        self.mixes[name] = node
        return node

    async def stop_mix(self, name: str) -> None:
        """Stop a mix (its tasks are cancelled; its data dir stays)."""
        self.scopes.pop(name).cancel()
        await anyio.sleep(0.01)

    mix_configs: dict[str, MixConfig] = field(default_factory=dict)


def mix_config(
    tmp: Path, name: str, layer: int, pins: list[tuple[str, bytes]], epoch_seconds: int = EPOCH_SECONDS,
    **overrides: object,
) -> MixConfig:
    """A test-mode mix config on the mem transport."""
    config = MixConfig(
        path=tmp / name / "mixnode.toml",
        name=name,
        layer=layer,
        data_dir=tmp / name,
        test_mode=True,
        tcp_listen=None,
        tor=None,
        i2p=None,
        authorities=tuple(AuthorityPin(a, k) for a, k in pins),
        threshold=2,
        epoch_seconds=epoch_seconds,
        queue_limit=20000,
        inbound_limit=4096,
        link_queue_limit=4096,
        workers=0,
        batch=64,
        lambda_loop=0.0,
        loop_delay_mean=0.05,
        loop_timeout=60.0,
    )
    return replace(config, **overrides)


async def start_testnet(
    stack: AsyncExitStack,
    tmp: Path,
    *,
    mixes_per_layer: int = 2,
    authorities: int = 3,
    down_authorities: int = 0,
    epoch_seconds: int = EPOCH_SECONDS,
    params: NetworkParams | Sequence[NetworkParams] = QUIET_PARAMS,
    **mix_overrides: object,
) -> TestNet:
    """Bring up authorities, mixes and the sink; return when the consensus lists them all.

    ``params``: the traffic parameters of every authority's config, or one per authority.
    """
    per_authority = [params] * authorities if isinstance(params, NetworkParams) else list(params)
    network = MemoryNetwork()
    tg = await stack.enter_async_context(anyio.create_task_group())
    stack.callback(tg.cancel_scope.cancel)
    identities = [IdentityKey.generate() for _ in range(authorities)]
    addresses = [f"mem://auth-{i}" for i in range(authorities)]
    pins = list(zip(addresses, [k.public for k in identities], strict=True))
    auths = []
    for i in range(authorities - down_authorities):
        peers = tuple(PeerAuthority(a, k) for j, (a, k) in enumerate(pins) if j != i)
        config = AuthorityConfig(
            name=f"auth-{i}",
            data_dir=tmp / f"auth-{i}",
            key_file=tmp / f"auth-{i}" / "identity.key",
            listen=(addresses[i],),
            peers=peers,
            threshold=2,
            epoch_seconds=epoch_seconds,
            test_mode=True,
            params=per_authority[i],
        )
        config.data_dir.mkdir(parents=True)
        transport = await stack.enter_async_context(network.transport(f"auth-{i}"))
        authority = Authority(
            config, Router([transport], production=False), identity=identities[i], wall_clock=wall_clock,
            write_status=False,
        )
        await tg.start(authority.run)
        auths.append(authority)

    sink = Sink(network, epoch_seconds=epoch_seconds)
    sink_transport = await stack.enter_async_context(network.transport("sink"))
    await sink_transport.listen(sink.handler)
    client_transport = await stack.enter_async_context(network.transport("client"))
    client_router = Router([client_transport], production=False)
    client = DirectoryClient(client_router, pins, 2, production=False, wall_clock=wall_clock, epoch_seconds=epoch_seconds)
    sink.client, sink.router = client, client_router
    net = TestNet(network, tmp, auths, pins, {}, sink, client, client_router, tg)
    admit_everywhere(auths, Admission("sink", "provider", 0, sink.identity.public))
    for layer in (1, 2, 3):
        for j in range(mixes_per_layer):
            name = f"mix-{layer}-{j}"
            net.mix_configs[name] = mix_config(tmp, name, layer, pins, epoch_seconds, **mix_overrides)
            (tmp / name).mkdir(parents=True, exist_ok=True)
            admit_everywhere(auths, Admission(name, "mix", layer, load_or_create_identity(tmp / name).public))
            await net.start_mix(name)
    epoch = epoch_at(wall_clock(), epoch_seconds)
    for target in (epoch, epoch + 1):
        await net.register_sink(target)
    await net.consensus(nodes=3 * mixes_per_layer + 1)
    # Give every mix time to fetch the consensus too.
    await anyio.sleep(30)
    return net


def admit_everywhere(authorities: list[Authority], entry: Admission) -> None:
    """Admit a node at every running authority, as each operator's `mixnode authority admit` does."""
    for authority in authorities:
        admit(authority.config.data_dir, entry)


def payload_for(i: int) -> bytes:
    """A recognisable payload."""
    return i.to_bytes(4, "big") + os.urandom(60)
