"""The ``tcp`` transport: **tests only**, bound to loopback (127.0.0.1 or ::1).

It exists so that separate processes (a ``mixnode run`` under benchmark, test networks) can
talk without Tor or I2P. It refuses to listen on or connect to any other host, and production
configurations refuse ``tcp://`` peers altogether (:mod:`anonmail.core.uri`).
"""

from __future__ import annotations

import socket

import anyio
import anyio.abc

from anonmail.core.uri import parse_transport_address
from anonmail.errors import ConnectError, TransportAddressError
from anonmail.net.base import Handler, Transport
from anonmail.net.link import as_link

__all__ = ["TcpTransport"]


class TcpTransport(Transport):
    """Loopback TCP; ``listen_address`` defaults to any free port on 127.0.0.1 (None: connect only)."""

    schemes = frozenset({"tcp"})

    def __init__(self, listen_address: str | None = "tcp://127.0.0.1:0") -> None:
        super().__init__()
        self._listen = None
        if listen_address is not None:
            self._listen = parse_transport_address(listen_address, allow_port_zero=True)
            if self._listen.scheme != "tcp":
                raise TransportAddressError(f"TcpTransport listens on tcp:// only, not {listen_address}")

    async def listen(self, handler: Handler) -> list[str]:
        """Listen on the loopback address; return ``tcp://host:port`` with the real port."""
        if self._listen is None:
            return []
        try:
            multi = await anyio.create_tcp_listener(
                local_host=self._listen.host, local_port=self._listen.port or 0, reuse_port=False
            )
        except OSError as exc:
            raise ConnectError(
                f"cannot listen on {self._listen}: {exc.strerror or exc}", address=str(self._listen),
                reason="listen_failed",
            ) from exc
        listener = multi.listeners[0]  # one explicit loopback host: one socket
        sock = listener.extra(anyio.abc.SocketAttribute.raw_socket)
        port = sock.getsockname()[1]

        async def serve() -> None:
            async with listener:
                while True:
                    stream = await listener.accept()
                    _nodelay(stream)
                    self._spawn_handler(handler, stream)

        self.task_group.start_soon(serve)
        host = f"[{self._listen.host}]" if ":" in self._listen.host else self._listen.host
        return [f"tcp://{host}:{port}"]

    async def connect(self, address: str) -> anyio.abc.ByteStream:
        """Connect to a loopback address; raise ConnectError(reason='refused') if nobody listens."""
        parsed = parse_transport_address(address)
        if parsed.scheme != "tcp":
            raise TransportAddressError(f"the tcp transport cannot reach {address}", address=address)
        try:
            stream = await anyio.connect_tcp(parsed.host, parsed.port)
        except OSError as exc:
            raise ConnectError(
                f"cannot connect to {address}: {exc.strerror or exc}", address=address, reason="refused"
            ) from exc
        _nodelay(stream)
        return as_link(stream, address)


def _nodelay(stream: anyio.abc.SocketStream) -> None:
    sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
