"""The ``mem`` transport: nodes in one process linked by bounded in-memory byte streams.

For unit and network tests and demos. A :class:`MemoryNetwork` is the switchboard: each node
gets a :class:`MemoryTransport` with its own name, listens as ``mem://<name>`` and connects to
the others by name. Tests can take a node off the network (:meth:`MemoryNetwork.set_down`):
its open streams break and new connections are refused, as if its host went away.
"""

from __future__ import annotations

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from anonmail.core.uri import parse_transport_address
from anonmail.errors import ConnectError, TransportAddressError
from anonmail.net.base import Handler, Transport
from anonmail.net.link import as_link

__all__ = ["MemoryNetwork", "MemoryTransport", "MemoryByteStream", "memory_stream_pair"]

#: Chunks buffered per direction before ``send`` waits (bounded, like a socket buffer).
STREAM_BUFFER_CHUNKS = 64


class MemoryByteStream(anyio.abc.ByteStream):
    """One end of an in-memory byte pipe pair with anyio's stream semantics."""

    def __init__(
        self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]
    ) -> None:
        self._send = send
        self._receive = receive
        self._leftover = b""
        self._closed = False

    async def send(self, item: bytes) -> None:
        """Queue bytes for the peer; wait while its buffer is full."""
        if self._closed:
            raise anyio.ClosedResourceError
        if item:
            await self._send.send(bytes(item))

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Return up to ``max_bytes``; raise EndOfStream when the peer finished sending."""
        if self._closed:
            raise anyio.ClosedResourceError
        if not self._leftover:
            self._leftover = await self._receive.receive()
        data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
        return data

    async def send_eof(self) -> None:
        """Tell the peer no more bytes follow; receiving still works."""
        self._send.close()

    async def aclose(self) -> None:
        """Close both directions."""
        self._closed = True
        self._send.close()
        self._receive.close()

    def break_link(self) -> None:
        """Drop the link abruptly: both directions of this end close."""
        self._closed = True
        self._send.close()
        self._receive.close()


def memory_stream_pair(buffer_chunks: int = STREAM_BUFFER_CHUNKS) -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected byte streams (what one writes, the other reads)."""
    a_send, b_receive = anyio.create_memory_object_stream[bytes](buffer_chunks)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](buffer_chunks)
    return MemoryByteStream(a_send, a_receive), MemoryByteStream(b_send, b_receive)


class MemoryNetwork:
    """The switchboard for ``mem://`` addresses inside one process."""

    def __init__(self) -> None:
        self._listeners: dict[str, tuple[MemoryTransport, Handler]] = {}
        self._streams: dict[str, list[MemoryByteStream]] = {}
        self._down: set[str] = set()

    def transport(self, name: str) -> MemoryTransport:
        """A transport for the node called ``name`` (its address will be ``mem://name``)."""
        return MemoryTransport(self, name)

    def set_down(self, name: str, down: bool = True) -> None:
        """Take a node off the network (break its streams, refuse connections) or bring it back."""
        if down:
            self._down.add(name)
            for stream in self._streams.pop(name, []):
                stream.break_link()
        else:
            self._down.discard(name)

    def is_listening(self, name: str) -> bool:
        """Whether ``mem://name`` currently accepts connections."""
        return name in self._listeners and name not in self._down

    def _register(self, name: str, transport: MemoryTransport, handler: Handler) -> None:
        if name in self._listeners:
            raise TransportAddressError(f"mem://{name} is already listening", address=f"mem://{name}")
        self._listeners[name] = (transport, handler)

    def _unregister(self, name: str, transport: MemoryTransport) -> None:
        if self._listeners.get(name, (None,))[0] is transport:
            del self._listeners[name]

    def _track(self, name: str, stream: MemoryByteStream) -> None:
        streams = self._streams.setdefault(name, [])
        streams[:] = [s for s in streams if not s._closed]
        streams.append(stream)

    def _connect(self, source: str, address: str) -> MemoryByteStream:
        target = parse_transport_address(address).host
        entry = self._listeners.get(target)
        if entry is None or target in self._down or source in self._down:
            raise ConnectError(f"nothing listens on {address}", address=address, reason="refused")
        transport, handler = entry
        client, server = memory_stream_pair()
        self._track(source, client)
        self._track(target, server)
        transport._spawn_handler(handler, server)
        return client


class MemoryTransport(Transport):
    """A node's view of a :class:`MemoryNetwork`."""

    schemes = frozenset({"mem"})

    def __init__(self, network: MemoryNetwork, name: str) -> None:
        super().__init__()
        parse_transport_address(f"mem://{name}")  # validates the name
        self.network = network
        self.name = name
        self._listening = False

    async def listen(self, handler: Handler) -> list[str]:
        """Serve ``mem://<name>``."""
        self.task_group  # noqa: B018 - raises outside 'async with'
        self.network._register(self.name, self, handler)
        self._listening = True
        return [f"mem://{self.name}"]

    async def connect(self, address: str) -> anyio.abc.ByteStream:
        """Open a stream to another node on the same network."""
        parsed = parse_transport_address(address)
        if parsed.scheme != "mem":
            raise TransportAddressError(f"the mem transport cannot reach {address}", address=address)
        await anyio.sleep(0)  # a checkpoint, as a real connect would have
        return as_link(self.network._connect(self.name, address), address)

    async def _stop(self) -> None:
        if self._listening:
            self.network._unregister(self.name, self)
        for stream in self.network._streams.pop(self.name, []):
            stream.break_link()


