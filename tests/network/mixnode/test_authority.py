"""Three directory authorities over ``mem`` in virtual time: upload, agree, sign, fetch, survive.

Runs on trio's MockClock (an epoch of 60 virtual seconds passes in milliseconds); the wall
clock every component sees is ``T0 + anyio.current_time()``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from anonmail.core import dirproto, pki, sphinx
from anonmail.core.keys import IdentityKey
from anonmail.core.wire import MAX_DIRECTORY_CONTROL_BYTES, Role
from anonmail.clients.directory import DirectoryClient, request_authority, upload_descriptor
from anonmail.errors import DirectoryError, LinkBrokenError, LinkEndedError
from anonmail.net.framed import FramedStream
from anonmail.net.memory import MemoryNetwork
from anonmail.net.router import Router
from anonmail.net.tcp import TcpTransport
from mixnode.authority import Authority, AuthorityConfig, PeerAuthority
from mixnode.authority.admission import ADMISSION_FILE, Admission, admit
from mixnode.authority.voting import Vote, make_vote

pytestmark = [pytest.mark.network, pytest.mark.anyio, pytest.mark.virtual_time]

EPOCH = 60
T0 = 60 * 29_000_000 + 10  # 10 s into an epoch
E0 = pki.epoch_at(T0, EPOCH)


def wall_clock() -> float:
    return T0 + anyio.current_time()


async def consensus_reply(router: Router, address: str, epoch: int = E0) -> dirproto.ConsensusReply | None:
    """What one authority holds for an epoch, or None while it has no document."""
    try:
        return await request_authority(router, address, dirproto.GetConsensus(epoch), dirproto.ConsensusReply)
    except DirectoryError as exc:
        if exc.reason != "not_ready":
            raise
        return None


class Net:
    """Three authorities and helpers, all on one MemoryNetwork."""

    def __init__(self, tmp_path: Path, count: int = 3, threshold: int = 2) -> None:
        self.network = MemoryNetwork()
        self.tmp_path = tmp_path
        self.keys = [IdentityKey.from_seed(bytes([i + 1]) * 32) for i in range(count)]
        self.names = [f"auth-{i}" for i in range(count)]
        self.addresses = [f"mem://{n}" for n in self.names]
        self.threshold = threshold
        self.scopes: dict[int, anyio.CancelScope] = {}
        self.authorities: dict[int, Authority] = {}

    def config(self, i: int) -> AuthorityConfig:
        peers = tuple(
            PeerAuthority(self.addresses[j], self.keys[j].public) for j in range(len(self.keys)) if j != i
        )
        return AuthorityConfig(
            name=self.names[i],
            data_dir=self.tmp_path / self.names[i],
            key_file=self.tmp_path / self.names[i] / "identity.key",
            listen=(self.addresses[i],),
            peers=peers,
            threshold=self.threshold,
            epoch_seconds=EPOCH,
            test_mode=True,
            freeze_lead=15,
            round_seconds=5,
            sync_delay=2,
            gossip_seconds=10,
            vote_seconds=2,
        )

    @property
    def pinned(self) -> list[tuple[str, bytes]]:
        return [(a, k.public) for a, k in zip(self.addresses, self.keys)]

    async def start(self, tg, i: int, *, write_status: bool = False, cls: type[Authority] = Authority) -> Authority:
        """Run authority ``i`` (with its own transport) until :meth:`stop`."""

        data_dir = self.config(i).data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        if not (data_dir / ADMISSION_FILE).exists():  # the operators admitted nodes 0..9 (node-i, layer i % 3 + 1)
            for n in range(10):
                admit(data_dir, Admission(f"node-{n}", "mix", n % 3 + 1, node_key(n).public))
            admit(data_dir, Admission("alpha", "provider", 0, PROVIDER_KEY.public))

        async def serve(task_status=anyio.TASK_STATUS_IGNORED):
            with anyio.CancelScope() as scope:
                self.scopes[i] = scope
                async with self.network.transport(self.names[i]) as transport:
                    authority = cls(
                        self.config(i), Router([transport], production=False),
                        identity=self.keys[i], wall_clock=wall_clock, write_status=write_status,
                    )
                    self.authorities[i] = authority
                    await authority.run(task_status=task_status)

        await tg.start(serve)
        return self.authorities[i]

    def stop(self, i: int) -> None:
        self.scopes[i].cancel()

    @contextlib.asynccontextmanager
    async def client(self, name: str = "client"):
        async with self.network.transport(name) as transport:
            yield Router([transport], production=False)

    def directory(self, router: Router, **kwargs) -> DirectoryClient:
        return DirectoryClient(
            router, self.pinned, self.threshold, production=False, wall_clock=wall_clock,
            epoch_seconds=EPOCH, **kwargs,
        )


def node_key(i: int) -> IdentityKey:
    return IdentityKey.from_seed(bytes([100 + i]) * 32)


PROVIDER_KEY = IdentityKey.from_seed(b"\xa1" * 32)


def descriptor(i: int, epoch: int, *, role: str = "mix", layer: int | None = None, name: str | None = None,
               identity: IdentityKey | None = None) -> pki.NodeDescriptor:
    return pki.sign_descriptor(
        identity or node_key(i),
        name=name or f"node-{i}",
        role=role,
        layer=(i % 3 + 1) if layer is None and role == "mix" else (layer or 0),
        epoch=epoch,
        sphinx_key=sphinx.generate_node_keypair()[1],
        addresses=[f"mem://node-{i}"],
        production=False,
    )


async def upload_all(router: Router, addresses, epoch: int, count: int = 4) -> list[int]:
    return [await upload_descriptor(router, addresses, descriptor(i, epoch)) for i in range(count)]


async def test_bootstrap_two_of_three_and_next_epoch_ahead_of_time(tmp_path):
    net = Net(tmp_path)
    changes = []
    async with anyio.create_task_group() as tg:
        for i in range(3):
            await net.start(tg, i)
        async with net.client() as router:
            assert await upload_all(router, net.addresses, E0) == [3, 3, 3, 3]
            directory = net.directory(router, on_change=changes.append)
            await tg.start(directory.run)
            with anyio.fail_after(20):
                first = await directory.wait_for(E0)
            assert len(first.nodes) == 4 and first.epoch == E0
            assert directory.current() == first
            # Everybody signed the same document and exchanged signatures.
            with anyio.fail_after(10):
                while True:
                    reply = await consensus_reply(router, net.addresses[0])
                    if reply is not None and len(reply.signatures) == 3:
                        break
                    await anyio.sleep(1)
            # Uploads for the epoch whose consensus exists are refused as too late.
            with pytest.raises(DirectoryError) as info:
                await upload_descriptor(router, net.addresses, descriptor(9, E0))
            assert info.value.reason == "too_late"
            # The next epoch: nodes upload early; the client has it before the current one ends.
            assert await upload_all(router, net.addresses, E0 + 1, count=3) == [3, 3, 3]
            with anyio.fail_after(EPOCH):
                second = await directory.wait_for(E0 + 1)
            assert wall_clock() < pki.epoch_start(E0 + 1, EPOCH)
            assert len(second.nodes) == 3
            assert [c.epoch for c in changes] == [E0, E0 + 1]
            tg.cancel_scope.cancel()


async def test_one_authority_down_network_still_works(tmp_path):
    net = Net(tmp_path)
    async with anyio.create_task_group() as tg:
        for i in range(3):
            await net.start(tg, i)
        net.network.set_down(net.names[2])
        async with net.client() as router:
            assert await upload_all(router, net.addresses, E0) == [2, 2, 2, 2]
            directory = net.directory(router)
            with anyio.fail_after(20):
                while True:
                    try:
                        consensus = await directory.fetch(E0)
                        break
                    except DirectoryError:
                        await anyio.sleep(1)
            assert len(consensus.nodes) == 4
            # Stopping a second one after the fact: the survivor still serves 2 signatures.
            net.stop(1)
            await anyio.sleep(1)
            fresh = net.directory(router)
            assert (await fresh.fetch(E0)).digest() == consensus.digest()
            tg.cancel_scope.cancel()


async def test_too_few_signatures_is_a_clear_error(tmp_path):
    net = Net(tmp_path, threshold=3)
    async with anyio.create_task_group() as tg:
        await net.start(tg, 0)
        await net.start(tg, 1)  # the third never comes up
        async with net.client() as router:
            assert await upload_all(router, net.addresses, E0, count=2) == [2, 2]
            await anyio.sleep(20)
            reply = await consensus_reply(router, net.addresses[0])
            assert reply is not None and len(reply.signatures) == 2
            with pytest.raises(DirectoryError) as info:
                await net.directory(router).fetch(E0)
            assert info.value.reason == "too_few_signatures"
            assert "needs 3 of 3" in str(info.value)
            assert "mem://auth-2: unreachable" in str(info.value)
            tg.cancel_scope.cancel()


async def test_a_lone_authority_makes_no_document(tmp_path):
    """One authority of three cannot list nodes by itself: a majority of votes must carry them."""
    net = Net(tmp_path)
    async with anyio.create_task_group() as tg:
        await net.start(tg, 0)  # its peers never come up
        async with net.client() as router:
            assert await upload_all(router, net.addresses, E0, count=2) == [1, 1]
            await anyio.sleep(20)
            assert await consensus_reply(router, net.addresses[0]) is None
            tg.cancel_scope.cancel()


async def test_client_rejects_a_consensus_whose_epoch_ended(tmp_path):
    net = Net(tmp_path)
    async with anyio.create_task_group() as tg:
        for i in range(3):
            await net.start(tg, i)
        async with net.client() as router:
            await upload_all(router, net.addresses, E0, count=3)
            directory = net.directory(router)
            with anyio.fail_after(20):
                while True:
                    try:
                        await directory.fetch(E0)
                        break
                    except DirectoryError:
                        await anyio.sleep(1)
            await anyio.sleep(pki.epoch_start(E0 + 1, EPOCH) - wall_clock() + 1)
            with pytest.raises(DirectoryError, match="which ended") as info:
                await net.directory(router).fetch(E0)
            assert info.value.reason == "stale"
            assert directory.get(E0) is not None and directory.current() is directory.get(E0) and directory.in_grace
            tg.cancel_scope.cancel()


async def raw_request(router: Router, address: str, payload: bytes | None = None, message: dict | None = None):
    stream = await router.connect(address)
    async with stream:
        framed = FramedStream(stream, max_control_bytes=MAX_DIRECTORY_CONTROL_BYTES)
        await framed.hello(Role.CLIENT)
        await framed.expect_hello()
        if payload is not None:
            await stream.send(payload)
            return await framed.receive()
        return await framed.request(message)


async def test_bad_requests_get_errors_and_serving_continues(tmp_path):
    net = Net(tmp_path)
    async with anyio.create_task_group() as tg:
        await net.start(tg, 0)
        address = net.addresses[0]
        async with net.client() as router:
            reply = await raw_request(router, address, message={"type": "launch_rockets"})
            assert reply == {"type": "error", "reason": "unknown_request", "message": "unknown request type 'launch_rockets'"}
            reply = await raw_request(router, address, message={"type": "get_consensus", "epoch": "soon"})
            assert reply["reason"] == "bad_request"
            reply = await raw_request(router, address, message={"type": "upload_descriptor", "descriptor": {"x": 1}})
            assert reply["reason"] == "malformed"
            forged = descriptor(1, E0).to_dict()
            forged["addresses"] = ["mem://elsewhere"]
            reply = await raw_request(router, address, message={"type": "upload_descriptor", "descriptor": forged})
            assert reply["reason"] == "bad_descriptor"
            for epoch, reason in ((E0 - 1, "stale"), (E0 + 2, "future")):
                reply = await raw_request(
                    router, address, message={"type": "upload_descriptor", "descriptor": descriptor(1, epoch).to_dict()}
                )
                assert reply["reason"] == reason
            reply = await raw_request(router, address, message={"type": "get_signature", "epoch": E0, "digest": "00" * 32})
            assert reply["reason"] == "not_ready"
            # Garbage instead of a frame: the authority drops that connection only.
            assert await raw_request(router, address, payload=b"\xff" * 64) is None
            # A client that never speaks is dropped after the serve timeout.
            stream = await router.connect(address)
            with anyio.fail_after(30):
                with pytest.raises((LinkEndedError, LinkBrokenError)):
                    await stream.receive()
            # Still serving.
            assert await upload_descriptor(router, [address], descriptor(1, E0)) == 1
            reply = await raw_request(router, address, message={"type": "get_descriptors", "epoch": E0})
            assert [d["name"] for d in reply["descriptors"]] == ["node-1"]
            tg.cancel_scope.cancel()


async def test_restart_keeps_state(tmp_path):
    net = Net(tmp_path)
    async with anyio.create_task_group() as tg:
        for i in range(3):
            await net.start(tg, i)
        async with net.client() as router:
            await upload_all(router, net.addresses, E0)
            directory = net.directory(router)
            with anyio.fail_after(20):
                while True:
                    reply = await consensus_reply(router, net.addresses[0])
                    if reply is not None and len(reply.signatures) == 3:
                        break
                    await anyio.sleep(1)
            before = await directory.fetch(E0)
            await upload_descriptor(router, net.addresses, descriptor(7, E0 + 1))
            for i in range(3):
                net.stop(i)
            await anyio.sleep(1)
            for i in range(3):
                await net.start(tg, i)
            # Straight after the restart (no time for a new round) the old state is served.
            reply = await consensus_reply(router, net.addresses[1])
            assert reply is not None and len(reply.signatures) == 3
            assert (await net.directory(router).fetch(E0)).digest() == before.digest()
            listed = await request_authority(router, net.addresses[2], dirproto.GetDescriptors(E0 + 1), dirproto.DescriptorsReply)
            assert [d["name"] for d in listed.descriptors] == ["node-7"]
            tg.cancel_scope.cancel()


async def test_late_authority_adopts_the_agreed_document(tmp_path):
    net = Net(tmp_path)
    async with anyio.create_task_group() as tg:
        await net.start(tg, 0)
        await net.start(tg, 1)
        async with net.client() as router:
            await upload_all(router, net.addresses[:2], E0)
            with anyio.fail_after(20):
                while True:
                    reply = await consensus_reply(router, net.addresses[0])
                    if reply is not None and len(reply.signatures) == 2:
                        break
                    await anyio.sleep(1)
            await net.start(tg, 2)  # comes up late, with nothing of its own
            with anyio.fail_after(20):
                while True:
                    reply = await consensus_reply(router, net.addresses[2])
                    if reply is not None:
                        break
                    await anyio.sleep(1)
            assert len(reply.signatures) >= 2
            directory = net.directory(router)
            assert len((await directory.fetch(E0)).nodes) == 4
            tg.cancel_scope.cancel()


async def test_status_file_is_written(tmp_path):
    net = Net(tmp_path, count=1, threshold=1)
    async with anyio.create_task_group() as tg:
        await net.start(tg, 0, write_status=True)
        async with net.client() as router:
            await upload_descriptor(router, net.addresses, descriptor(1, E0))
            await anyio.sleep(25)
            status = json.loads((tmp_path / "auth-0" / "status.json").read_text())
            assert status["running"] is True and status["epoch"] == E0
            assert status["epochs"][str(E0)] == {
                "descriptors": 1, "consensus": True, "digest": status["epochs"][str(E0)]["digest"], "signatures": 1,
            }
            net.stop(0)
            await anyio.sleep(0.1)
            status = json.loads((tmp_path / "auth-0" / "status.json").read_text())
            assert status["running"] is False
            tg.cancel_scope.cancel()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_authority_run_process_serves_and_stops_on_sigint(tmp_path, anyio_backend):
    """``mixnode authority run`` over loopback tcp: serves, reports status, exits 0 on SIGINT."""

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    directory = tmp_path / "auth"
    command = [sys.executable, "-m", "mixnode.cli", "authority"]
    init = subprocess.run([*command, "init", "--dir", str(directory), "--listen", address, "--epoch-seconds", "600"],
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    public = init.stdout.split("public key: ")[1].split()[0]
    config = str(directory / "authority.toml")
    with open(config, "a") as file:  # no [tables] in this config: these stay top-level
        file.write("round_seconds = 2\nsync_delay = 1\nvote_seconds = 1\n")
    node = base64.b64encode(node_key(1).public).decode()
    admitted = subprocess.run([*command, "admit", "--config", config, "node-1", "mix", "1", node],
                              capture_output=True, text=True, timeout=60)
    assert admitted.returncode == 0, admitted.stderr
    listed = subprocess.run([*command, "list", "--config", config], capture_output=True, text=True, timeout=60)
    assert listed.stdout.split() == ["node-1", "mix", "1", node]
    proc = subprocess.Popen([*command, "run", "--config", config], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        started = json.loads(await anyio.to_thread.run_sync(proc.stdout.readline))  # as every daemon's run
        assert started == {"name": "auth", "addresses": [address], "public_key": public}
        async with TcpTransport() as transport:
            router = Router([transport], production=False)
            epoch = pki.epoch_at(time.time(), 600)
            if pki.epoch_start(epoch + 1, 600) - time.time() < 20:
                epoch += 1  # real time, near an epoch's end: register for the next (built ahead)
            d = descriptor(1, epoch, layer=1)
            assert await upload_descriptor(router, [address], d) == 1
            directory_client = DirectoryClient(router, [(address, base64.b64decode(public))], 1, production=False,
                                               epoch_seconds=600)
            with anyio.fail_after(15):
                while True:
                    try:
                        consensus = await directory_client.fetch(d.epoch)
                        break
                    except DirectoryError:
                        await anyio.sleep(0.5)
            assert consensus.nodes == (d,)
        status = subprocess.run([*command, "status", "--config", config], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "running" in status.stdout, status.stdout
        as_json = subprocess.run([*command, "status", "--config", config, "--json"], capture_output=True, text=True,
                                 timeout=60)
        assert json.loads(as_json.stdout)["admitted"] == [
            {"name": "node-1", "role": "mix", "layer": 1, "identity_key": node}]
        proc.send_signal(signal.SIGINT)
        assert await anyio.to_thread.run_sync(lambda: proc.wait(timeout=20)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    status = subprocess.run([*command, "status", "--config", config], capture_output=True, text=True, timeout=60)
    assert status.returncode == 3 and "not running (it stopped)" in status.stderr


# ----------------------------------------------------------------------------- attacks on admission


def smaller_key_than(victim: bytes) -> IdentityKey:
    """A fresh key that sorts before ``victim`` (what won a name under the old key-order rule)."""
    seed = 0
    while True:
        key = IdentityKey.from_seed(seed.to_bytes(32, "big"))
        if key.public < victim:
            return key
        seed += 1


async def refused(router: Router, addresses, item: dict) -> set[str]:
    """The reasons every authority gives for refusing an upload."""
    reasons = set()
    for address in addresses:
        with pytest.raises(DirectoryError) as info:
            await request_authority(router, address, dirproto.UploadDescriptor(item), dirproto.Accepted, role=Role.MIX)
        reasons.add(info.value.reason)
    return reasons


async def test_attack_strangers_cannot_take_a_providers_name_join_as_mixes_or_plant_weak_keys(tmp_path):
    net = Net(tmp_path)
    target = E0 + 1
    async with anyio.create_task_group() as tg:
        for i in range(3):
            await net.start(tg, i)
        async with net.client() as router:
            assert await upload_all(router, net.addresses, target) == [3, 3, 3, 3]
            real = descriptor(50, target, role="provider", name="alpha", identity=PROVIDER_KEY)
            assert await upload_descriptor(router, net.addresses, real) == 3
            # A stranger whose key sorts before the provider's claims its name.
            thief = descriptor(60, target, role="provider", name="alpha", identity=smaller_key_than(PROVIDER_KEY.public))
            assert await refused(router, net.addresses, thief.to_dict()) == {"not_admitted"}
            # A stranger adds a mix under a new name.
            sybil = descriptor(61, target, layer=1, name="mix-evil", identity=IdentityKey.generate())
            assert await refused(router, net.addresses, sybil.to_dict()) == {"not_admitted"}
            # An admitted key claims another name or layer than it was admitted with.
            assert await refused(router, net.addresses, descriptor(4, target, name="node-5").to_dict()) == {"wrong_name"}
            assert await refused(router, net.addresses, descriptor(4, target, layer=3).to_dict()) == {"wrong_layer"}
            # An admitted key publishes a small-order Sphinx key (signed correctly by its own key).
            body = {**descriptor(5, target).to_dict(), "sphinx_key": base64.b64encode(bytes(32)).decode()}
            del body["signature"]
            body["signature"] = base64.b64encode(
                node_key(5).sign(pki.canonical_json(body), context=b"anonmail descriptor v1")).decode()
            assert await refused(router, net.addresses, body) == {"bad_descriptor"}
            listed = await request_authority(router, net.addresses[0], dirproto.GetDescriptors(target),
                                             dirproto.DescriptorsReply)
            assert sorted(d["name"] for d in listed.descriptors) == ["alpha", "node-0", "node-1", "node-2", "node-3"]
            with anyio.fail_after(EPOCH):
                consensus = await fetch_when_ready(net, router, target)
            assert sorted(d.name for d in consensus.nodes) == ["alpha", "node-0", "node-1", "node-2", "node-3"]
            assert consensus.by_name("alpha").identity_key == PROVIDER_KEY.public
            assert wall_clock() < pki.epoch_start(target, EPOCH)
            tg.cancel_scope.cancel()


async def fetch_when_ready(net: Net, router: Router, epoch: int) -> pki.Consensus:
    """Poll until the authorities serve an acceptable document for ``epoch``."""
    while True:
        try:
            return await net.directory(router).fetch(epoch)
        except DirectoryError:
            await anyio.sleep(1)


class Equivocator(Authority):
    """Signs a different vote for every asker (one admits a stranger), and relays garbage."""

    stranger = IdentityKey.from_seed(b"\x99" * 32)
    asked = 0

    def own_vote(self, epoch: int, point: int) -> Vote:
        if self.now() < point:
            return super().own_vote(epoch, point)
        Equivocator.asked += 1
        admissions = self.admissions
        descriptors = self.store.descriptors(epoch, before=point)
        if Equivocator.asked % 2:
            admissions = admissions.with_entry(Admission("node-66", "mix", 1, self.stranger.public))
            descriptors = [*descriptors, descriptor(66, epoch, layer=1, identity=self.stranger)]
        else:
            descriptors = descriptors[:1]
        return make_vote(self.identity, epoch, point, admissions, descriptors)

    def held_votes(self, epoch: int, point: int) -> list[Vote]:
        return [self.own_vote(epoch, point), self.own_vote(epoch, point)]


class Silent(Authority):
    """Accepts connections and never answers."""

    async def handle(self, stream) -> None:
        await anyio.sleep_forever()


@pytest.mark.parametrize("bad", [Equivocator, Silent], ids=["equivocating", "silent"])
async def test_one_bad_authority_of_three_cannot_stop_or_bend_the_consensus(tmp_path, bad):
    net = Net(tmp_path)
    target = E0 + 1
    async with anyio.create_task_group() as tg:
        await net.start(tg, 0)
        await net.start(tg, 1)
        await net.start(tg, 2, cls=bad)
        async with net.client() as router:
            for i in range(4):
                assert await upload_descriptor(router, net.addresses[:2], descriptor(i, target)) == 2
                if bad is Equivocator:
                    assert await upload_descriptor(router, net.addresses[2:], descriptor(i, target)) == 1
            with anyio.fail_after(EPOCH):
                while True:
                    replies = [await consensus_reply(router, a, target) for a in net.addresses[:2]]
                    if all(r is not None and len(r.signatures) >= 2 for r in replies):
                        break
                    await anyio.sleep(1)
            assert wall_clock() < pki.epoch_start(target, EPOCH)  # on time: before the epoch starts
            documents = [pki.consensus_from_dict(r.document, production=False) for r in replies]
            assert documents[0] == documents[1]
            assert sorted(d.name for d in documents[0].nodes) == ["node-0", "node-1", "node-2", "node-3"]
            tg.cancel_scope.cancel()


async def test_the_last_consensus_stays_in_use_for_a_bounded_grace_period(tmp_path):
    net = Net(tmp_path)
    async with anyio.create_task_group() as tg:
        for i in range(3):
            await net.start(tg, i)
        async with net.client() as router:
            await upload_all(router, net.addresses, E0)
            directory = net.directory(router)
            with anyio.fail_after(30):
                while directory.current() is None:
                    with contextlib.suppress(DirectoryError):
                        await directory.fetch(E0)
                    await anyio.sleep(1)
            assert not directory.in_grace
            for i in range(3):  # no document for the next epoch will ever come
                net.stop(i)
            await anyio.sleep(pki.epoch_start(E0 + 1, EPOCH) + 5 - wall_clock())
            assert directory.current().epoch == E0 and directory.in_grace
            await anyio.sleep(directory.grace_seconds)
            assert directory.current() is None and not directory.in_grace
            tg.cancel_scope.cancel()
