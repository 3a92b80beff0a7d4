"""The transport conformance suite: every transport (mem, tcp, onion, i2p) must pass it.

Subclass :class:`TransportConformance` and provide the async fixture ``transport_pair``
yielding ``(listener, connector, unreachable)``: two *entered* transports and an address of
the connector's scheme where nothing listens. Timeouts are class attributes so slow transports
(Tor, I2P) can widen them without weakening the checks.

Streams of every transport raise only :class:`~anonmail.errors.LinkError` (never anyio's
exceptions or ``OSError``): the checks below say which one, on both ends of a link.
"""

from __future__ import annotations

import hashlib
import os

import anyio
import anyio.abc
import pytest

from anonmail.core.sizes import PACKET_BYTES
from anonmail.core.uri import parse_transport_address
from anonmail.core.wire import PROTOCOL_VERSION, Control, Hello, Packet, Role
from anonmail.errors import (
    ConnectError,
    LinkBrokenError,
    LinkClosedError,
    LinkEndedError,
    LinkError,
    TransportError,
)
from anonmail.net.base import Transport
from anonmail.net.framed import FramedStream

__all__ = ["TransportConformance", "read_exactly"]


async def read_exactly(stream: anyio.abc.ByteStream, n: int) -> bytes:
    """Read exactly ``n`` bytes or fail on end of stream."""
    buf = bytearray()
    while len(buf) < n:
        buf += await stream.receive(n - len(buf))
    return bytes(buf)


class TransportConformance:
    """Behaviour every transport must show; parametrised by the ``transport_pair`` fixture."""

    scheme: str = ""
    connect_timeout: float = 10.0
    io_timeout: float = 10.0
    bulk_bytes: int = 1 << 20
    concurrent_streams: int = 5
    #: Whether the transport carries a half-close (send_eof) to the peer.
    supports_half_close: bool = True

    async def _connect(self, connector: Transport, address: str) -> anyio.abc.ByteStream:
        with anyio.fail_after(self.connect_timeout):
            return await connector.connect(address)

    @pytest.mark.anyio
    async def test_listen_returns_addresses_of_its_scheme(self, transport_pair) -> None:
        listener, _connector, _ = transport_pair

        async def handler(stream: anyio.abc.ByteStream) -> None:
            await anyio.sleep_forever()

        addresses = await listener.listen(handler)
        assert addresses, "listen returned no address"
        for address in addresses:
            parsed = parse_transport_address(address)
            assert parsed.scheme == self.scheme
            assert parsed.scheme in listener.schemes

    @pytest.mark.anyio
    async def test_frames_cross_each_way(self, transport_pair) -> None:
        listener, connector, _ = transport_pair
        packet = Packet(os.urandom(PACKET_BYTES))

        async def handler(stream: anyio.abc.ByteStream) -> None:
            framed = FramedStream(stream)
            hello = await framed.expect_hello()
            assert hello.role == Role.MIX
            got = await framed.receive()
            assert isinstance(got, Packet)
            await framed.hello(Role.PROVIDER)
            await framed.send(Packet(got.data[::-1]))
            await framed.send(Control({"type": "echo", "n": len(got.data)}))

        (address, *_) = await listener.listen(handler)
        stream = await self._connect(connector, address)
        async with stream:
            framed = FramedStream(stream)
            with anyio.fail_after(self.io_timeout):
                await framed.hello(Role.MIX)
                await framed.send(packet)
                hello = await framed.receive()
                reply = await framed.receive()
                control = await framed.receive()
        assert hello == Hello(PROTOCOL_VERSION, Role.PROVIDER)
        assert isinstance(reply, Packet) and reply.data == packet.data[::-1]
        assert control == Control({"type": "echo", "n": PACKET_BYTES})

    @pytest.mark.anyio
    async def test_bulk_bytes_arrive_intact_and_in_order(self, transport_pair) -> None:
        listener, connector, _ = transport_pair
        data = os.urandom(self.bulk_bytes)

        async def handler(stream: anyio.abc.ByteStream) -> None:
            received = await read_exactly(stream, len(data))
            await stream.send(hashlib.sha256(received).digest())

        (address, *_) = await listener.listen(handler)
        stream = await self._connect(connector, address)
        async with stream:
            with anyio.fail_after(self.io_timeout * 3):
                for start in range(0, len(data), 50_000):
                    await stream.send(data[start : start + 50_000])
                digest = await read_exactly(stream, 32)
        assert digest == hashlib.sha256(data).digest()

    @pytest.mark.anyio
    async def test_concurrent_streams_are_independent(self, transport_pair) -> None:
        listener, connector, _ = transport_pair

        async def handler(stream: anyio.abc.ByteStream) -> None:
            tag = await read_exactly(stream, 8)
            await anyio.sleep(0.01)
            await stream.send(tag * 4)

        (address, *_) = await listener.listen(handler)
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            stream = await self._connect(connector, address)
            async with stream:
                await stream.send(i.to_bytes(8, "big"))
                with anyio.fail_after(self.io_timeout):
                    results[i] = await read_exactly(stream, 32)

        async with anyio.create_task_group() as tg:
            for i in range(self.concurrent_streams):
                tg.start_soon(one, i)
        assert results == {i: i.to_bytes(8, "big") * 4 for i in range(self.concurrent_streams)}

    @pytest.mark.anyio
    async def test_peer_close_ends_the_stream(self, transport_pair) -> None:
        listener, connector, _ = transport_pair

        async def handler(stream: anyio.abc.ByteStream) -> None:
            await stream.send(b"bye")  # the transport closes the stream when the handler returns

        (address, *_) = await listener.listen(handler)
        stream = await self._connect(connector, address)
        async with stream:
            with anyio.fail_after(self.io_timeout):
                assert await read_exactly(stream, 3) == b"bye"
                with pytest.raises((LinkEndedError, LinkBrokenError)):
                    while True:
                        await stream.receive()

    @pytest.mark.anyio
    async def test_abrupt_peer_close_is_a_typed_link_error(self, transport_pair) -> None:
        listener, connector, _ = transport_pair

        async def handler(stream: anyio.abc.ByteStream) -> None:
            await read_exactly(stream, 1)  # then the transport closes the stream under the sender

        (address, *_) = await listener.listen(handler)
        stream = await self._connect(connector, address)
        async with stream:
            with anyio.fail_after(self.io_timeout):
                await stream.send(b"x")
                with pytest.raises(LinkError) as received:
                    await stream.receive()
                assert isinstance(received.value, (LinkEndedError, LinkBrokenError))
                with pytest.raises(LinkBrokenError) as sent:
                    while True:  # the first writes may still be buffered before the peer's close arrives
                        await stream.send(b"y" * 4096)
                        await anyio.sleep(0.01)
                assert isinstance(sent.value.__cause__, (anyio.BrokenResourceError, OSError))
        with pytest.raises(LinkClosedError):
            await stream.send(b"z")

    @pytest.mark.anyio
    async def test_closed_stream_is_a_typed_link_error_for_the_peer(self, transport_pair) -> None:
        listener, connector, _ = transport_pair
        seen: list[BaseException] = []
        done = anyio.Event()

        async def handler(stream: anyio.abc.ByteStream) -> None:
            try:
                while True:
                    await stream.receive()
            except Exception as exc:  # what a listener's handler sees when the connector goes away
                seen.append(exc)
            finally:
                done.set()

        (address, *_) = await listener.listen(handler)
        stream = await self._connect(connector, address)
        await stream.send(b"x")
        await stream.aclose()
        with anyio.fail_after(self.io_timeout):
            await done.wait()
        assert len(seen) == 1 and isinstance(seen[0], (LinkEndedError, LinkBrokenError)), seen

    @pytest.mark.anyio
    async def test_half_close_is_seen_by_the_peer(self, transport_pair) -> None:
        if not self.supports_half_close:
            pytest.skip("this transport closes both directions on send_eof")
        listener, connector, _ = transport_pair

        async def handler(stream: anyio.abc.ByteStream) -> None:
            received = bytearray()
            try:
                while True:
                    received += await stream.receive()
            except LinkEndedError:
                pass
            await stream.send(len(received).to_bytes(4, "big"))

        (address, *_) = await listener.listen(handler)
        stream = await self._connect(connector, address)
        async with stream:
            with anyio.fail_after(self.io_timeout):
                await stream.send(b"x" * 1000)
                await stream.send_eof()
                assert await read_exactly(stream, 4) == (1000).to_bytes(4, "big")

    @pytest.mark.anyio
    async def test_failing_handler_does_not_stop_the_listener(self, transport_pair) -> None:
        listener, connector, _ = transport_pair
        # The handler decides by the first byte, not by call count: a transport may retry a
        # connect whose first attempt reached the listener (tor does when SOCKS times out).
        async def handler(stream: anyio.abc.ByteStream) -> None:
            if await read_exactly(stream, 1) == b"x":
                raise RuntimeError("handler bug")
            await stream.send(b"ok")

        (address, *_) = await listener.listen(handler)
        first = await self._connect(connector, address)
        async with first:
            await first.send(b"x")
            with anyio.fail_after(self.io_timeout):
                with pytest.raises((LinkEndedError, LinkBrokenError)):
                    await first.receive()
        second = await self._connect(connector, address)
        async with second:
            await second.send(b"y")
            with anyio.fail_after(self.io_timeout):
                assert await read_exactly(second, 2) == b"ok"

    @pytest.mark.anyio
    async def test_connect_to_nothing_is_a_clear_error(self, transport_pair) -> None:
        _listener, connector, unreachable = transport_pair
        with pytest.raises(TransportError) as info:
            stream = await self._connect(connector, unreachable)
            await stream.aclose()
        assert isinstance(info.value, ConnectError)
        assert info.value.address == unreachable
        assert unreachable.split("://")[1][:10] in str(info.value)
