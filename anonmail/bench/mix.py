"""Throughput of one real ``mixnode run`` process over loopback tcp (``mix_pps`` in the bench).

Set-up, all on 127.0.0.1: this process runs a one-member directory authority, a *sink* (a node
registered as a provider that only counts the frames reaching it) and the load generator (a
node registered as a layer-2 mix); the mix node is a separate layer-3 ``mixnode run`` process
started from a config written by :func:`mixnode.config.render_mix_config`. The authority builds
the consensus once all three are registered, so every link is authenticated against it as in
a real network: the generator's link to the mix and the mix's link to the sink each start with
the Noise handshake. Packets are built in advance with a path ``mix (delay 0) → sink``, so the
mix does exactly the contract's work for each one: receive, unwrap, replay check (durable),
zero delay, forward. The source stands for the whole previous layer, so the mix's per-neighbour
rate bound (``peer_rate``, 5,000/s by default) is raised for it; it is checked per packet still.
The generator keeps a bounded window of
packets in flight (sent but not yet at the sink) below the mix's inbound queue, so the figure is
throughput, not drops: ``delivered / (last arrival - first send)``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc

from anonmail.core import sphinx
from anonmail.core.keys import IdentityKey
from anonmail.core.params import NetworkParams
from anonmail.keyfiles import write_key_file
from anonmail.core.linkauth import generate_link_secret, link_public
from anonmail.core.pki import epoch_at, sign_descriptor
from anonmail.core.wire import Packet, encode_frame
from anonmail.clients.directory import DirectoryClient, upload_descriptor
from anonmail.errors import AnonmailError
from anonmail.net.framed import FramedStream
from anonmail.net.router import Router
from anonmail.net.tcp import TcpTransport

__all__ = ["measure_mix_pps"]

EPOCH_SECONDS = 3600
#: The mix's per-neighbour rate bound in the bench: the one source stands for the whole previous
#: layer, so it may send as fast as the mix can take (the bound is still checked per packet).
SOURCE_PEER_RATE = 1_000_000.0


def _write_authority(tmp: Path) -> tuple[object, IdentityKey]:
    from mixnode.authority import AuthorityConfig

    identity = IdentityKey.generate()
    data_dir = tmp / "authority"
    data_dir.mkdir(mode=0o700)
    write_key_file(data_dir / "identity.key", identity.seed)
    config = AuthorityConfig(
        name="bench-authority",
        data_dir=data_dir,
        key_file=data_dir / "identity.key",
        listen=("tcp://127.0.0.1:0",),
        threshold=1,
        epoch_seconds=EPOCH_SECONDS,
        test_mode=True,
        round_seconds=1,
        sync_delay=0,
        params=NetworkParams(mix_lambda_loop=0.0),  # no loop cover: the mix does only the measured work
        bootstrap_nodes=3,
    )
    return config, identity


async def _run(packets: int, window: int, say: Callable[[str], None]) -> dict:
    from mixnode.authority import Authority
    from mixnode.authority.admission import Admission, admit
    from anonmail.daemon.identity import load_or_create_identity
    from mixnode.config import render_mix_config

    tmp = Path(tempfile.mkdtemp(prefix="anonmail-mixbench-"))
    config, identity = _write_authority(tmp)
    arrived = 0
    last_arrival = 0.0
    done = anyio.Event()

    sink_secret, source_secret = generate_link_secret(), generate_link_secret()
    handshake_s = 0.0

    async def sink(stream: anyio.abc.ByteStream) -> None:
        from mixnode.handshake import respond

        nonlocal arrived, last_arrival
        framed = FramedStream(stream)
        try:
            await framed.expect_hello()
            await respond(framed, sink_secret)
            while (frames := await framed.receive_batch()) is not None:
                count = sum(1 for f in frames if isinstance(f, Packet))
                if count:
                    arrived += count
                    last_arrival = time.perf_counter()
                    if arrived >= packets:
                        done.set()
        except AnonmailError:
            return

    process: subprocess.Popen | None = None
    async with TcpTransport() as auth_tcp, TcpTransport() as sink_tcp, TcpTransport() as client_tcp:
        router = Router([client_tcp], production=False)
        authority = Authority(config, Router([auth_tcp], production=False), identity=identity, write_status=False)
        async with anyio.create_task_group() as tg:
            (auth_address,) = await tg.start(authority.run)
            (sink_address,) = await sink_tcp.listen(sink)
            key = base64.b64encode(identity.public).decode()
            mix_dir = tmp / "mix"
            mix_dir.mkdir(mode=0o700)
            text = render_mix_config(
                name="bench-mix", layer=3, authorities=[(auth_address, key)], threshold=1,
                epoch_seconds=EPOCH_SECONDS, test_mode=True, tcp_listen="tcp://127.0.0.1:0", lambda_loop=0.0,
                peer_rate=SOURCE_PEER_RATE,
            )
            (mix_dir / "mixnode.toml").write_text(text)
            # The operator's step: admit every node. Sink and source register first; the authority
            # builds once the mix has too.
            admit(config.data_dir, Admission("bench-mix", "mix", 3, load_or_create_identity(mix_dir).public))
            _secret, public = sphinx.generate_node_keypair()
            epoch = epoch_at(time.time(), EPOCH_SECONDS)
            for name, role, layer, secret in (("bench-sink", "provider", 0, sink_secret),
                                              ("bench-source", "mix", 2, source_secret)):
                node_identity = IdentityKey.generate()
                admit(config.data_dir, Admission(name, role, layer, node_identity.public))
                for target in (epoch, epoch + 1):
                    descriptor = sign_descriptor(
                        node_identity, name=name, role=role, layer=layer, epoch=target, sphinx_key=public,
                        addresses=[sink_address], production=False, link_key=link_public(secret),
                    )
                    await upload_descriptor(router, [auth_address], descriptor)
            client = DirectoryClient(router, [(auth_address, identity.public)], 1, production=False,
                                     epoch_seconds=EPOCH_SECONDS)
            say("starting a mixnode process")
            process = subprocess.Popen(
                [sys.executable, "-m", "mixnode.cli", "run", "--config", str(mix_dir / "mixnode.toml"),
                 "--log-level", "INFO"],
                stdout=subprocess.PIPE, stderr=(tmp / "mix.log").open("wb"), text=True,
            )
            try:
                line = await anyio.to_thread.run_sync(process.stdout.readline)
                if not line:
                    raise AnonmailError("the mixnode process exited before it listened")
                mix_address = json.loads(line)["addresses"][0]
                say("waiting for the consensus that lists the mix, and for the mix to hold it")
                with anyio.fail_after(60):
                    while True:
                        try:
                            consensus = await client.fetch(epoch)
                        except AnonmailError:
                            consensus = None
                        if consensus is not None and consensus.by_name("bench-mix") is not None:
                            break
                        await anyio.sleep(0.2)
                    while not _mix_status(mix_dir).get("in_consensus"):
                        await anyio.sleep(0.2)
                sink_d, mix_d = consensus.by_name("bench-sink"), consensus.by_name("bench-mix")
                say(f"building {packets} packets")
                route = [sphinx.Hop(mix_d.node_id, mix_d.sphinx_key, 0), sphinx.Hop(sink_d.node_id, sink_d.sphinx_key, 0)]
                frames = [encode_frame(Packet(sphinx.build_forward(route, bytes(16), b"bench"))) for _ in range(packets)]
                say("sending")
                from mixnode.handshake import initiate

                stream = await router.connect(mix_address)
                async with stream:
                    handshake_start = time.perf_counter()
                    await initiate(FramedStream(stream), source_secret, mix_d.link_key)
                    handshake_s = time.perf_counter() - handshake_start
                    cpu_start = (_cpu_seconds(process.pid), time.process_time())
                    start = time.perf_counter()
                    sent = 0
                    with anyio.fail_after(120):
                        while sent < packets:
                            room = window - (sent - arrived)
                            if room <= 0:
                                await anyio.sleep(0.0005)
                                continue
                            chunk = frames[sent : sent + min(room, 256)]
                            await stream.send(b"".join(chunk))
                            sent += len(chunk)
                        with anyio.move_on_after(30):
                            await done.wait()
                elapsed = (last_arrival or time.perf_counter()) - start
                cpu = (_cpu_seconds(process.pid), time.process_time())
            finally:
                if process.poll() is None:
                    process.terminate()
                    await anyio.to_thread.run_sync(process.wait)
                tg.cancel_scope.cancel()
    status = _mix_status(tmp / "mix")
    shutil.rmtree(tmp, ignore_errors=True)
    mix_cpu = cpu[0] - cpu_start[0] if cpu[0] is not None and cpu_start[0] is not None else None
    return {
        # CPU of the mix process while it carried the packets: per packet, and in cores (2.0 on two
        # busy cores); on a loaded machine mix_pps falls while the CPU per packet stays put.
        "mix_cpu_us_per_packet": round(mix_cpu / arrived * 1e6, 1) if mix_cpu is not None and arrived else None,
        "mix_cores": round(mix_cpu / elapsed, 2) if mix_cpu is not None and elapsed > 0 else None,
        # CPU of this process (source and sink) meanwhile, in cores: is the bench the bottleneck?
        "mix_bench_cores": round((cpu[1] - cpu_start[1]) / elapsed, 2) if elapsed > 0 else None,
        "mix_pps": round(arrived / elapsed, 1) if arrived and elapsed > 0 else 0.0,
        "mix_packets": packets,
        "mix_delivered": arrived,
        "mix_dropped": status.get("dropped_total"),
        "mix_dropped_by_reason": status.get("dropped", {}),
        "mix_exit_code": process.returncode if process is not None else None,
        "link_handshake_ms": round(handshake_s * 1000, 2),
    }


def _cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mix_status(mix_dir: Path) -> dict:
    try:
        return json.loads((mix_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def measure_mix_pps(
    packets: int = 20000, *, window: int = 2048, progress: Callable[[str], None] | None = None
) -> dict:
    """Packets per second through one ``mixnode run`` process; also delivered/dropped counts."""
    say = progress or (lambda _m: None)
    return anyio.run(_run, packets, window, say)
