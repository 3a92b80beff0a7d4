"""An in-process anonmail network over the ``mem`` transport: real nodes, one process.

For tests and ``anonmail demo --network memory``: 3 directory authorities (2-of-3 signatures),
3 mix layers of ``mixes_per_layer`` :class:`~mixnode.node.MixNode` each, and one
:class:`~anonmail.provider.node.Provider` per name in ``providers``, every node with its own
data directory under ``data_dir`` (keys, replay tags and mailboxes survive a restart)::

    async with MemoryMixnet.start(tmp, providers=("alpha", "beta")) as net:
        router = net.client_router("alice")          # an agent's view of the network
        client = await ProviderClient.connect(router, net.provider_address("alpha"), identity, "alpha",
                                              op="register")
        await net.kill_mix("mix-2-0"); await net.restart_mix("mix-2-0")

``start`` returns once the current epoch's consensus lists every node and every node holds it.
It runs in real time (``wall_clock=time.time``; ``mix_overrides={"workers": 2}`` for worker
threads) and under trio's MockClock (``wall_clock = T0 + anyio.current_time()``, ``workers=0``,
the default, keeps it deterministic). Authorities build as soon as every node has registered
(``bootstrap_nodes``), checking every second, so start-up takes about a second in real time.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path

import anyio
import anyio.abc

from anonmail.clients.directory import DirectoryClient
from anonmail.core.keys import IdentityKey
from anonmail.core.params import DEFAULT_PARAMS, NetworkParams
from anonmail.core.pki import Consensus, epoch_at
from anonmail.daemon.identity import load_or_create_identity
from anonmail.daemon.node_config import AuthorityPin
from anonmail.errors import DirectoryError, TestnetError
from anonmail.net.memory import MemoryNetwork
from anonmail.net.router import Router
from anonmail.provider.config import ProviderConfig
from anonmail.provider.node import Provider
from mixnode.authority import Authority, AuthorityConfig, PeerAuthority
from mixnode.authority.admission import Admission, admit
from mixnode.config import DEFAULTS, MixConfig
from mixnode.node import MixNode

__all__ = ["MemoryMixnet", "AUTHORITIES", "THRESHOLD", "START_TIMEOUT", "LOCAL_RULES_PARAMS"]

#: Published parameters under which every node's and agent's own configured rates and delays
#: rule (each is at least as strict): for tests and demos that set their traffic themselves.
LOCAL_RULES_PARAMS = NetworkParams(lambda_payload=0.01, lambda_loop=0.0, mix_lambda_loop=0.0, delay_mean=0.0,
                                   fetch_interval=3600.0)

AUTHORITIES = 3
THRESHOLD = 2
LAYERS = 3
#: Bound on bringing the network up (virtual seconds under MockClock).
START_TIMEOUT = 120.0
_POLL = 0.2


class MemoryMixnet:
    """A running in-process network; build it with :meth:`start` (an async context manager)."""

    def __init__(
        self,
        data_dir: Path,
        network: MemoryNetwork,
        tg: anyio.abc.TaskGroup,
        *,
        epoch_seconds: int,
        wall_clock: Callable[[], float],
        loss: float,
        rng: random.Random,
    ) -> None:
        self.data_dir = data_dir
        self.network = network
        self.epoch_seconds = epoch_seconds
        self.wall_clock = wall_clock
        self.loss = loss
        self.rng = rng
        self.threshold = THRESHOLD
        self.pins: list[tuple[str, bytes]] = []
        self.authorities: list[Authority] = []
        self.mixes: dict[str, MixNode] = {}
        self.providers: dict[str, Provider] = {}
        self.mix_configs: dict[str, MixConfig] = {}
        self.provider_configs: dict[str, ProviderConfig] = {}
        self._tg = tg
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._clients = itertools.count()
        self.directory: DirectoryClient | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        data_dir: str | Path,
        *,
        mixes_per_layer: int = 2,
        providers: Sequence[str] = ("alpha", "beta"),
        epoch_seconds: int = 3600,
        wall_clock: Callable[[], float] = time.time,
        loss: float = 0.0,
        mix_overrides: Mapping[str, object] | None = None,
        provider_overrides: Mapping[str, object] | None = None,
        rng_seed: int | None = None,
        params: NetworkParams = DEFAULT_PARAMS,
    ) -> AsyncIterator[MemoryMixnet]:
        """Bring the network up; yield it once everything is in the consensus; tear it down after.

        ``params`` go into every authority's config (``[params]``), so every consensus carries them.
        """
        root = Path(data_dir)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        rng = random.Random(rng_seed) if rng_seed is not None else random.SystemRandom()
        async with AsyncExitStack() as stack:
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            net = cls(root, MemoryNetwork(), tg, epoch_seconds=epoch_seconds, wall_clock=wall_clock,
                      loss=loss, rng=rng)
            total = LAYERS * mixes_per_layer + len(providers)
            await net._start_authorities(stack, bootstrap_nodes=total, params=params)
            pins = tuple(AuthorityPin(a, k) for a, k in net.pins)
            for layer in range(1, LAYERS + 1):
                for j in range(mixes_per_layer):
                    name = f"mix-{layer}-{j}"
                    net.mix_configs[name] = replace(_mix_config(root / name, name, layer, pins, epoch_seconds),
                                                    **dict(mix_overrides or {}))
            for name in providers:
                net.provider_configs[name] = replace(_provider_config(root / name, name, pins, epoch_seconds),
                                                     **dict(provider_overrides or {}))
            for name, config in net.mix_configs.items():  # the operators admit every node's key
                net.admit(name, "mix", config.layer, _node_identity(config.data_dir).public)
            for name, config in net.provider_configs.items():
                net.admit(name, "provider", 0, _node_identity(config.data_dir).public)
            for name in net.mix_configs:
                await net._start_node(name)
            for name in net.provider_configs:
                await net._start_node(name)
            with anyio.fail_after(START_TIMEOUT):
                await net.wait_consensus()
            yield net

    def admit(self, name: str, role: str, layer: int, identity_public: bytes) -> None:
        """Admit a node at every authority, as ``mixnode authority admit`` does."""
        entry = Admission(name, role, layer, bytes(identity_public))
        for authority in self.authorities:
            admit(authority.config.data_dir, entry)

    async def _start_authorities(self, stack: AsyncExitStack, *, bootstrap_nodes: int, params: NetworkParams) -> None:
        identities = [IdentityKey.generate() for _ in range(AUTHORITIES)]
        addresses = [f"mem://auth-{i}" for i in range(AUTHORITIES)]
        self.pins = list(zip(addresses, [k.public for k in identities], strict=True))
        for i in range(AUTHORITIES):
            directory = self.data_dir / f"auth-{i}"
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            config = AuthorityConfig(
                name=f"auth-{i}",
                data_dir=directory,
                key_file=directory / "identity.key",
                listen=(addresses[i],),
                peers=tuple(PeerAuthority(a, k) for j, (a, k) in enumerate(self.pins) if j != i),
                threshold=THRESHOLD,
                epoch_seconds=self.epoch_seconds,
                test_mode=True,
                round_seconds=1,
                sync_delay=0,
                vote_seconds=1,
                gossip_seconds=5,
                bootstrap_nodes=bootstrap_nodes,
                params=params,
            )
            transport = await stack.enter_async_context(self.network.transport(f"auth-{i}"))
            authority = Authority(config, Router([transport], production=False), identity=identities[i],
                                  wall_clock=self.wall_clock, write_status=False)
            await self._tg.start(authority.run)
            self.authorities.append(authority)
        self.directory = DirectoryClient(
            self.client_router("directory"), self.pins, THRESHOLD, production=False,
            wall_clock=self.wall_clock, epoch_seconds=self.epoch_seconds,
        )

    async def _start_node(self, name: str) -> MixNode:
        """(Re)start a mix or provider from its config; its data directory persists."""
        transport = self.network.transport(name)
        node: MixNode
        if name in self.provider_configs:
            node = Provider(self.provider_configs[name], [transport], wall_clock=self.wall_clock,
                            rng=random.Random(self.rng.getrandbits(64)), link_loss=self.loss)
        else:
            node = MixNode(self.mix_configs[name], [transport], wall_clock=self.wall_clock,
                           rng=random.Random(self.rng.getrandbits(64)), link_loss=self.loss)
        scope = anyio.CancelScope()
        self._scopes[name] = scope

        async def run(*, task_status: anyio.abc.TaskStatus) -> None:
            with scope:
                await node.run(task_status=task_status)

        await self._tg.start(run)
        if isinstance(node, Provider):
            self.providers[name] = node
        else:
            self.mixes[name] = node
        return node

    # ------------------------------------------------------------------ queries

    @property
    def nodes(self) -> dict[str, MixNode]:
        """Every running mix and provider by name."""
        return {**self.mixes, **self.providers}

    def provider_address(self, name: str) -> str:
        """Where agents reach provider ``name``."""
        if name not in self.provider_configs:
            raise KeyError(f"no provider {name!r} in this network")
        return f"mem://{name}"

    def client_router(self, name: str = "agent") -> Router:
        """A Router over a fresh mem transport (connect only), for an agent or a test."""
        label = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower())[:40] or "agent"
        return Router([self.network.transport(f"client-{label}-{next(self._clients)}")], production=False)

    def epoch(self) -> int:
        """The current epoch by the network's wall clock."""
        return epoch_at(self.wall_clock(), self.epoch_seconds)

    async def wait_consensus(self, epoch: int | None = None) -> Consensus:
        """Wait until ``epoch``'s consensus (default: current) lists every node and every running node holds it."""
        assert self.directory is not None
        target = self.epoch() if epoch is None else epoch
        names = set(self.mix_configs) | set(self.provider_configs)
        while True:
            try:
                consensus = await self.directory.fetch(target)
            except DirectoryError:
                consensus = None
            if consensus is not None and names <= {d.name for d in consensus.nodes}:
                break
            await anyio.sleep(_POLL)
        for node in list(self.nodes.values()):
            while node.directory is None:
                await anyio.sleep(_POLL)
            while node.directory.get(target) is None:
                try:
                    await node.directory.fetch(target)  # rather than wait for its next retry
                except DirectoryError:
                    await anyio.sleep(_POLL)
        return consensus

    # ------------------------------------------------------------------ faults

    async def kill_mix(self, name: str) -> None:
        """Stop a mix (or provider) abruptly: its tasks are cancelled, its links break; data stays."""
        scope = self._scopes.pop(name, None)
        if scope is None:
            raise TestnetError(f"{name} is not running")
        scope.cancel()
        self.mixes.pop(name, None)
        self.providers.pop(name, None)
        while self.network.is_listening(name):
            await anyio.sleep(0.01)

    async def restart_mix(self, name: str) -> MixNode:
        """Start a stopped mix (or provider) again with the same data directory (keys, replay tags, mail)."""
        if name in self._scopes:
            raise TestnetError(f"{name} is still running; kill it first")
        if name not in self.mix_configs and name not in self.provider_configs:
            raise TestnetError(f"no node {name!r} in this network")
        node = await self._start_node(name)
        epoch = self.epoch()
        assert node.directory is not None
        with anyio.fail_after(START_TIMEOUT):
            while node.directory.get(epoch) is None:
                try:
                    await node.directory.fetch(epoch)
                except DirectoryError:
                    await anyio.sleep(_POLL)
        return node

    kill_provider = kill_mix
    restart_provider = restart_mix


def _node_identity(data_dir: Path) -> IdentityKey:
    """A node's identity key, made before the node first starts so its operator can have it admitted."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return load_or_create_identity(data_dir)


def _mix_config(data_dir: Path, name: str, layer: int, pins: tuple[AuthorityPin, ...], epoch_seconds: int) -> MixConfig:
    """A test-mode mix config (inline unwrapping, for determinism under a virtual clock)."""
    return MixConfig(
        path=data_dir / "mixnode.toml", name=name, layer=layer, data_dir=data_dir, test_mode=True,
        tcp_listen=None, tor=None, i2p=None, authorities=pins, threshold=THRESHOLD, epoch_seconds=epoch_seconds,
        queue_limit=DEFAULTS["queue_limit"], inbound_limit=DEFAULTS["inbound_limit"],
        link_queue_limit=DEFAULTS["link_queue_limit"], workers=0, batch=DEFAULTS["batch"],
        lambda_loop=DEFAULTS["lambda_loop"], loop_delay_mean=DEFAULTS["loop_delay_mean"],
        loop_timeout=DEFAULTS["loop_timeout"],
    )


def _provider_config(data_dir: Path, name: str, pins: tuple[AuthorityPin, ...], epoch_seconds: int) -> ProviderConfig:
    """A test-mode provider config with the default mailbox settings."""
    return ProviderConfig(
        path=data_dir / "provider.toml", name=name, data_dir=data_dir, test_mode=True,
        tcp_listen=None, tor=None, i2p=None, authorities=pins, threshold=THRESHOLD, epoch_seconds=epoch_seconds,
        queue_limit=DEFAULTS["queue_limit"], inbound_limit=DEFAULTS["inbound_limit"],
        link_queue_limit=DEFAULTS["link_queue_limit"], workers=0, batch=DEFAULTS["batch"],
        lambda_loop=0.1, loop_delay_mean=DEFAULTS["loop_delay_mean"], loop_timeout=DEFAULTS["loop_timeout"],
    )
