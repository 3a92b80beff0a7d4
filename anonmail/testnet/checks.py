"""``anonmail testnet tor-check`` and ``i2p-check``: a private network up, frame round trips over
the real transport, figures, the network down again.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anonmail.errors import AnonmailError, TestnetError
from anonmail.testnet.i2p import I2PNetwork, format_version
from anonmail.testnet.tor import TorClient, TorNetwork

__all__ = ["run_tor_check", "run_i2p_check"]

Progress = Callable[[str], None] | None


# --- shared by both checks -------------------------------------------------------------------

async def _echo(stream) -> None:
    """Answer HELLO, then send every packet back reversed (so a reflected frame cannot pass)."""
    from anonmail.core.wire import Hello, Packet, Role
    from anonmail.net.framed import FramedStream

    framed = FramedStream(stream)
    first = await framed.receive()
    if first is None:  # a stream the router opened and closed again (a retried connect)
        return
    if not isinstance(first, Hello):
        raise TestnetError(f"expected HELLO first over the link, got {type(first).__name__}")
    await framed.hello(Role.MIX)
    while (frame := await framed.receive()) is not None:
        if isinstance(frame, Packet):
            await framed.send(Packet(frame.data[::-1]))


async def _timed_round_trips(stream, count: int, on_first: Callable[[float], None]) -> list[float]:
    """Say HELLO over ``stream``, then time ``count`` packet round trips against :func:`_echo`."""
    import anyio

    from anonmail.core.sizes import PACKET_BYTES
    from anonmail.core.wire import Hello, Packet, Role
    from anonmail.net.framed import FramedStream

    rtts: list[float] = []
    async with stream:
        framed = FramedStream(stream)
        with anyio.fail_after(60):
            await framed.hello(Role.CLIENT)
            hello = await framed.receive()
        if not isinstance(hello, Hello):
            raise TestnetError(f"expected HELLO back over the link, got {type(hello).__name__}")
        for i in range(count):
            data = os.urandom(PACKET_BYTES)
            t = time.monotonic()
            with anyio.fail_after(60):
                await framed.send(Packet(data))
                reply = await framed.receive()
            rtts.append(time.monotonic() - t)
            if not isinstance(reply, Packet) or reply.data != data[::-1]:
                raise TestnetError(f"round trip {i}: the echoed packet does not match")
            if i == 0:
                on_first(rtts[0])
    return rtts


# --- tor-check ------------------------------------------------------------------------------

ROUND_TRIPS = 20


def run_tor_check(progress: Progress = None, relays: int = 4) -> dict[str, Any]:
    """Bring up a private Tor network, do onion round trips, tear it down; return the figures.

    Prints nothing itself (progress goes to ``progress``). The result has ``ok``,
    ``bootstrap_s`` (start to the first successful round trip), ``rtt_ms`` (median of
    :data:`ROUND_TRIPS` frame round trips), ``nodes`` (tor processes), and ``error`` if not ok.
    """
    import anyio

    say = progress or (lambda text: None)
    result: dict[str, Any] = {"ok": False, "relays": relays, "authorities": 1}
    start = time.monotonic()
    network = None
    try:
        network = TorNetwork(relays=relays, authorities=1, progress=say)
        network.start()
        t0 = time.monotonic()
        server, client = network.launch_clients([("server", False), ("client", True)])
        result["clients_s"] = round(time.monotonic() - t0, 2)
        result["nodes"] = network.nodes
        with tempfile.TemporaryDirectory(prefix="anonmail-torcheck-") as node_dir:
            figures = anyio.run(_round_trips, server, client, Path(node_dir), start, say)
        result.update(figures)
        result["ok"] = True
    except Exception as exc:  # the check reports any failure in its result, never a traceback
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        result["error"] = f"{type(exc).__name__}: {exc}"
        say(f"failed: {result['error']}")
    finally:
        if network is not None:
            result.setdefault("nodes", len(network.pids))
            t1 = time.monotonic()
            network.stop()
            result["teardown_s"] = round(time.monotonic() - t1, 2)
            say(f"network stopped in {result['teardown_s']:.1f} s")
        result.setdefault("nodes", 0)
        result["total_s"] = round(time.monotonic() - start, 2)
    return result


async def _round_trips(
    server: TorClient, client: TorClient, node_dir: Path, start: float, say: Callable[[str], None]
) -> dict[str, Any]:
    from anonmail.core.sizes import PACKET_BYTES
    from anonmail.net.tor import OnionTransport

    figures: dict[str, Any] = {}
    async with OnionTransport(server.settings(), data_dir=node_dir) as listener, \
            OnionTransport(client.settings()) as connector:
        t0 = time.monotonic()
        (address,) = await listener.listen(_echo)
        figures["publish_s"] = round(time.monotonic() - t0, 2)
        say(f"onion service {address[8:20]}… published in {figures['publish_s']:.1f} s")
        t1 = time.monotonic()
        stream = await connector.connect(address)
        figures["connect_s"] = round(time.monotonic() - t1, 2)
        say(f"connected through tor in {figures['connect_s']:.1f} s")

        def first(_rtt: float) -> None:
            figures["bootstrap_s"] = round(time.monotonic() - start, 2)
            say(f"first frame round trip {figures['bootstrap_s']:.1f} s after start")

        rtts = await _timed_round_trips(stream, ROUND_TRIPS, first)
        figures["rtt_ms"] = round(statistics.median(rtts) * 1000, 1)
        figures["rtt_max_ms"] = round(max(rtts) * 1000, 1)
        figures["round_trips"] = len(rtts)
        figures["frame_bytes"] = PACKET_BYTES + 5
        say(f"{len(rtts)} round trips of {PACKET_BYTES}-byte packets: median {figures['rtt_ms']} ms")
    return figures


# ----------------------------------------------------------------- i2p-check ---

CHECK_ROUND_TRIPS = 20
CHECK_CONNECT_DEADLINE = 120.0


def run_i2p_check(progress: Progress | None = None, routers: int = 3) -> dict:
    """Bring up a private I2P network, do frame round trips over the i2p transport, tear down.

    Returns ``{"ok", "bootstrap_s", "rtt_ms", "routers", ...}`` plus ``"error"`` when not ok;
    reports only through ``progress``. KeyboardInterrupt propagates after teardown.
    """
    import anyio

    say = progress or (lambda text: None)
    result: dict = {"ok": False, "routers": routers, "bootstrap_s": None, "rtt_ms": None}
    t0 = time.monotonic()
    network: I2PNetwork | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="anonmail-i2p-check-") as tmp:
            network = I2PNetwork(routers, base_dir=Path(tmp) / "net", progress=say)
            with network:
                result["i2pd_version"] = format_version(network.version or (0, 0, 0))
                result["network_s"] = round(time.monotonic() - t0, 2)
                anyio.run(_check_round_trips, network, Path(tmp) / "node", t0, result, say,
                          backend="asyncio")
                t_down = time.monotonic()
            result["teardown_s"] = round(time.monotonic() - t_down, 2)
            say(f"i2p: network stopped ({result['teardown_s']:.1f} s)")
        result["ok"] = True
    except AnonmailError as exc:
        result["error"] = str(exc)
    except OSError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if network is not None and network.pids:  # never leave a router behind
            network.stop()
    result["total_s"] = round(time.monotonic() - t0, 2)
    return result


async def _check_round_trips(network: I2PNetwork, node_dir: Path, t0: float, result: dict,
                             say: Progress) -> None:
    import anyio

    from anonmail.core.sizes import PACKET_BYTES
    from anonmail.errors import ConnectError
    from anonmail.net.i2p import I2PTransport

    listen_router, connect_router = 0, 1
    async with I2PTransport(node_dir, network.settings(listen_router)) as listener, \
            I2PTransport(None, network.settings(connect_router)) as connector:
        ts = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: listener.open_session())
            tg.start_soon(lambda: connector.open_session(listening=False))
        result["session_s"] = round(time.monotonic() - ts, 2)
        say(f"i2p: SAM sessions on routers {listen_router} and {connect_router} ready "
            f"({result['session_s']:.1f} s)")
        (address,) = await listener.listen(_echo)

        tc = time.monotonic()
        deadline = tc + CHECK_CONNECT_DEADLINE
        attempts = 0
        while True:
            attempts += 1
            try:
                stream = await connector.connect(address)
                break
            except ConnectError as exc:
                if time.monotonic() > deadline:
                    raise
                say(f"i2p: connect attempt {attempts} failed ({exc.reason}); retrying")
                await anyio.sleep(1.0)
        result["connect_s"] = round(time.monotonic() - tc, 2)
        say(f"i2p: stream to {address[:20]}... open after {attempts} attempt(s) ({result['connect_s']:.1f} s)")

        def first(rtt: float) -> None:
            result["bootstrap_s"] = round(time.monotonic() - t0, 2)
            say(f"i2p: first frame round trip {rtt * 1000:.0f} ms, "
                f"{result['bootstrap_s']:.1f} s after start")

        rtts = await _timed_round_trips(stream, CHECK_ROUND_TRIPS, first)
        result["rtt_ms"] = round(statistics.median(rtts) * 1000, 1)
        result["rtt_first_ms"] = round(rtts[0] * 1000, 1)
        result["rtt_max_ms"] = round(max(rtts) * 1000, 1)
        result["round_trips"] = len(rtts)
        say(f"i2p: {len(rtts)} round trips of {PACKET_BYTES}-byte packet frames, median "
            f"{result['rtt_ms']:.0f} ms")
