"""The transport interface every link in anonmail goes through, and its contract.

A transport moves bytes between two nodes and adds no identity of its own: above it, nodes
see only frames (:mod:`anonmail.core.wire`). Each implementation is an async context manager
that owns the task group in which its listener and connection handlers run::

    async with TcpTransport() as transport:
        addresses = await transport.listen(handler)     # e.g. ["tcp://127.0.0.1:41234"]
        stream = await transport.connect(addresses[0])  # an anyio ByteStream

Streams (returned by ``connect``, handed to handlers) are anyio byte streams whose errors are
typed (:mod:`anonmail.net.link`): ``receive`` raises :class:`~anonmail.errors.LinkEndedError`
when the peer finished sending, :class:`~anonmail.errors.LinkBrokenError` when the link broke;
``send`` raises LinkBrokenError, or :class:`~anonmail.errors.LinkClosedError` after our own
close. ``connect`` raises :class:`~anonmail.errors.ConnectError` (unreachable) or
:class:`~anonmail.errors.TransportAddressError` (bad or unsupported URI). No anyio exception or
``OSError`` leaves a transport. Leaving the context stops the listener and cancels every
running handler.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio
import anyio.abc

from anonmail.net.link import as_link

__all__ = ["Handler", "Transport"]

#: Called once per accepted connection; the stream is closed when it returns.
Handler = Callable[[anyio.abc.ByteStream], Awaitable[None]]

log = logging.getLogger("anonmail.net")


class Transport(abc.ABC):
    """Base class: owns a task group for listeners and handlers; subclasses do the I/O."""

    #: URI schemes this transport can connect to.
    schemes: frozenset[str] = frozenset()

    @property
    def serves(self) -> bool:
        """Whether a node's Router listens on this transport (False: connect only)."""
        settings = getattr(self, "settings", None)
        return bool(getattr(settings, "serve", True))

    def __init__(self) -> None:
        self._tg: anyio.abc.TaskGroup | None = None
        self._entered = False

    async def __aenter__(self) -> Transport:
        if self._entered:
            raise RuntimeError(f"{type(self).__name__} can be entered only once")
        self._entered = True
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._start()
        except BaseException as exc:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            with anyio.CancelScope(shield=True):
                await self._stop()
        finally:
            result = await self._tg.__aexit__(exc_type, exc, tb)
            self._tg = None
        return result

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """The group that runs listeners and handlers; only valid inside ``async with``."""
        if self._tg is None:
            raise RuntimeError(f"use {type(self).__name__} inside 'async with'")
        return self._tg

    async def _start(self) -> None:
        """Hook: acquire resources (daemon connections) on entry."""

    async def _stop(self) -> None:
        """Hook: release resources on exit (runs shielded from cancellation)."""

    @abc.abstractmethod
    async def listen(self, handler: Handler) -> list[str]:
        """Start serving; return the URIs peers can connect to."""

    @abc.abstractmethod
    async def connect(self, address: str) -> anyio.abc.ByteStream:
        """Open a byte stream to ``address`` (typed errors, see :func:`as_link`); ConnectError if unreachable."""

    async def connect_isolated(self, address: str) -> anyio.abc.ByteStream:
        """Like :meth:`connect`, but on a path that no other connection of this node shares.

        For requests that must not be linkable to the node's other connections (a key lookup
        must not ride the circuit of the user's authenticated session). The default suits
        transports whose connections share nothing (TCP, memory); the onion transport uses a
        fresh SOCKS username (tor's IsolateSOCKSAuth: a new circuit), I2P a fresh transient
        destination.
        """
        return await self.connect(address)

    def _spawn_handler(self, handler: Handler, stream: anyio.abc.ByteStream) -> None:
        """Run ``handler(stream)`` in the task group; a failing handler never stops the listener."""
        self.task_group.start_soon(run_handler, handler, as_link(stream))


async def run_handler(handler: Handler, stream: anyio.abc.ByteStream) -> None:
    """Run one connection handler, log (without peer data) what it raised, then close the stream."""
    try:
        async with stream:
            await handler(stream)
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:  # one bad connection must not take the node down
        log.warning("connection handler failed: %s", type(exc).__name__)
        log.debug("connection handler failure", exc_info=True)
