"""Frames over a byte stream: the one place where wire frames meet anyio streams.

The stream is taken as a link (:func:`~anonmail.net.link.as_link`), so ``send`` raises only
:class:`~anonmail.errors.LinkError` (and WireError for a frame too large to encode);
``receive`` returns ``None`` when the link ended or broke.
"""

from __future__ import annotations

import anyio.abc

from anonmail.core.wire import (
    MAX_CONTROL_BYTES,
    PROTOCOL_VERSION,
    Close,
    Control,
    Frame,
    FrameDecoder,
    Hello,
    Role,
    encode_frame,
)
from anonmail.errors import LinkError, TransportError, WireError
from anonmail.net.link import as_link

__all__ = ["FramedStream", "RECEIVE_CHUNK"]

#: Bytes asked of the stream per read.
RECEIVE_CHUNK = 65536


class FramedStream:
    """Send and receive whole frames on a byte stream (decoding is :class:`FrameDecoder`'s)."""

    def __init__(self, stream: anyio.abc.ByteStream, *, max_control_bytes: int = MAX_CONTROL_BYTES) -> None:
        self.stream = as_link(stream)
        self._max_control = max_control_bytes
        self._decoder = FrameDecoder(max_control_bytes=max_control_bytes)
        self._ready: list[Frame] = []
        self._pos = 0
        self.bytes_received = 0

    async def send(self, frame: Frame) -> None:
        """Encode and send one frame; LinkError if the link is gone."""
        await self.stream.send(encode_frame(frame, max_control_bytes=self._max_control))

    async def send_raw(self, data: bytes) -> None:
        """Send already encoded frames (batched writes)."""
        await self.stream.send(data)

    async def receive(self) -> Frame | None:
        """The next frame, or ``None`` at a clean end of stream; WireError if malformed."""
        while self._pos >= len(self._ready):
            self._ready, self._pos = [], 0
            try:
                data = await self.stream.receive(RECEIVE_CHUNK)
            except LinkError:
                self._decoder.feed_eof()
                return None
            self.bytes_received += len(data)
            self._ready = self._decoder.feed(data)
        frame = self._ready[self._pos]
        self._pos += 1
        return frame

    async def receive_batch(self) -> list[Frame] | None:
        """All frames completed by the next read (at least one), or ``None`` at end of stream."""
        if self._pos < len(self._ready):
            frames = self._ready[self._pos :]
            self._ready, self._pos = [], 0
            return frames
        while True:
            try:
                data = await self.stream.receive(RECEIVE_CHUNK)
            except LinkError:
                self._decoder.feed_eof()
                return None
            self.bytes_received += len(data)
            frames = self._decoder.feed(data)
            if frames:
                return frames

    async def hello(self, role: Role) -> None:
        """Send our HELLO."""
        await self.send(Hello(PROTOCOL_VERSION, role))

    async def expect_hello(self) -> Hello:
        """Receive the peer's HELLO; WireError if the first frame is anything else."""
        frame = await self.receive()
        if not isinstance(frame, Hello):
            got = "end of stream" if frame is None else type(frame).__name__
            raise WireError(f"expected HELLO as the first frame, got {got}", offset=0)
        return frame

    async def request(self, message: dict) -> dict:
        """Send a CONTROL request and return the CONTROL reply (TransportError if the peer closes)."""
        await self.send(Control(message))
        frame = await self.receive()
        if isinstance(frame, Control):
            return frame.message
        if isinstance(frame, Close):
            raise TransportError(f"peer closed the request: {frame.text or frame.code}")
        raise TransportError("peer ended the stream without a reply" if frame is None else
                             f"expected a CONTROL reply, got {type(frame).__name__}")

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self.stream.aclose()
