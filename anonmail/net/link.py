"""Where a byte stream leaves a transport: its errors become :class:`~anonmail.errors.LinkError`.

Every transport hands out its streams (from ``connect`` and to listener handlers) through
:func:`as_link`, so the code above the transports catches one family of typed errors instead of
each its own mix of anyio exceptions and ``OSError``:

=====================================================  ===========================================
raised by the underlying stream                        raised by a link
=====================================================  ===========================================
:class:`anyio.EndOfStream`                             :class:`~anonmail.errors.LinkEndedError`
:class:`anyio.BrokenResourceError`, ``OSError``        :class:`~anonmail.errors.LinkBrokenError`
:class:`anyio.ClosedResourceError`                     :class:`~anonmail.errors.LinkClosedError`
=====================================================  ===========================================

The original exception is chained (``from``). Messages name no peer address (they may be
logged); ``address`` carries it when the link was opened by ``connect``. Cancellation passes
through untouched, so a caller's ``fail_after`` still turns into ``TimeoutError`` at its scope.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc

from anonmail.errors import LinkBrokenError, LinkClosedError, LinkEndedError, LinkError

__all__ = ["LinkStream", "as_link"]


class LinkStream(anyio.abc.ByteStream):
    """A transport's byte stream whose ``send``/``receive``/``send_eof`` raise only LinkError."""

    def __init__(self, stream: anyio.abc.ByteStream, address: str | None = None) -> None:
        self.wrapped = stream
        self.address = address

    def _translate(self, exc: BaseException, doing: str) -> LinkError:
        """The LinkError for an exception of the underlying stream."""
        if isinstance(exc, anyio.EndOfStream):
            return LinkEndedError(f"the peer ended the stream while we were {doing}", address=self.address)
        if isinstance(exc, anyio.ClosedResourceError):
            return LinkClosedError(f"the stream was already closed on this side when {doing}",
                                   address=self.address)
        detail = (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__
        return LinkBrokenError(f"the link broke while {doing} ({detail})", address=self.address)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes``; LinkEndedError at a clean end, LinkBrokenError if the link broke."""
        try:
            return await self.wrapped.receive(max_bytes)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise self._translate(exc, "receiving") from exc

    async def send(self, item: bytes) -> None:
        """Send bytes; LinkBrokenError if the peer is gone, LinkClosedError if we closed the stream."""
        try:
            await self.wrapped.send(item)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise self._translate(exc, "sending") from exc

    async def send_eof(self) -> None:
        """Tell the peer no more bytes follow (on transports that carry a half-close)."""
        try:
            await self.wrapped.send_eof()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise self._translate(exc, "ending our side") from exc

    async def aclose(self) -> None:
        """Close the stream; a link that already broke closes quietly."""
        try:
            await self.wrapped.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except LinkEndedError:
            raise StopAsyncIteration from None

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.wrapped.extra_attributes


def as_link(stream: anyio.abc.ByteStream, address: str | None = None) -> LinkStream:
    """``stream`` with its errors translated into LinkError (a LinkStream is returned as it is)."""
    if isinstance(stream, LinkStream):
        return stream
    return LinkStream(stream, address)
