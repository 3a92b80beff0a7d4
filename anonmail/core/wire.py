"""Sans-IO framing of Sphinx packets and small control messages on a byte stream.

Every link between two anonmail nodes (client to provider, provider to mix, mix to mix,
anyone to an authority) carries a sequence of frames. This module turns frames into bytes
(:func:`encode_frame`) and bytes back into frames (:class:`FrameDecoder`); it never reads or
writes a socket, so the transports feed it whatever bytes arrived and act on what comes out.

Frame layout (all integers big-endian)::

    0        1                 5
    +--------+-----------------+==============================+
    |  type  |  payload length |  payload (length bytes)      |
    | 1 byte |     4 bytes     |                              |
    +--------+-----------------+==============================+
    |<-- FRAME_HEADER_BYTES -->|

    type  name     payload                                        length
    0x01  HELLO    b"AM" | version (1 byte) | role (1 byte)      exactly 4
    0x02  PACKET   one Sphinx packet                              exactly PACKET_BYTES
    0x03  CONTROL  UTF-8 JSON object with a "type" key            at most MAX_CONTROL_BYTES
    0x04  CLOSE    reason code (1 byte) | UTF-8 text              1 to 1 + MAX_CLOSE_TEXT_BYTES

A CONTROL payload is a JSON object whose ``"type"`` is 1 to 32 characters of ``[a-z_]``,
nested at most :data:`MAX_CONTROL_DEPTH` levels, integers in the signed 64-bit range, without
NaN or infinities, duplicate keys or lone surrogates (the rules of :mod:`anonmail.core.strictjson`,
shared by every JSON anonmail reads). :func:`encode_frame` writes it canonically (sorted keys, no spaces, UTF-8).

Any malformed input raises :class:`~anonmail.errors.WireError` (a frame longer than its type
allows raises the subclass :class:`~anonmail.errors.FrameTooLargeError`, as soon as the header
is in). Errors carry ``offset``: the stream offset of the frame at fault when decoding, ``None``
when encoding. Their messages name frame types, lengths and offsets, never payload bytes, and
no library exception holding payload bytes is chained to them. A stream that produced a
:class:`WireError` cannot be resynchronised: close it.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeAlias

from anonmail.core import strictjson
from anonmail.core.sizes import PACKET_BYTES
from anonmail.errors import FrameTooLargeError, JSONError, WireError

__all__ = [
    "FRAME_HEADER_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_CONTROL_BYTES",
    "MAX_DIRECTORY_CONTROL_BYTES",
    "MAX_CONTROL_DEPTH",
    "MAX_CLOSE_TEXT_BYTES",
    "HELLO_MAGIC",
    "PROTOCOL_VERSION",
    "FrameType",
    "HELLO",
    "PACKET",
    "CONTROL",
    "CLOSE",
    "Role",
    "Hello",
    "Packet",
    "Control",
    "Close",
    "Frame",
    "encode_frame",
    "FrameDecoder",
]

#: Bytes in a frame header: 1 byte type, 4 bytes big-endian payload length.
FRAME_HEADER_BYTES = 5
#: Largest UTF-8 encoded JSON payload of a CONTROL frame on packet links (the default).
MAX_CONTROL_BYTES = 16384
#: Largest CONTROL payload a directory link may opt into (consensus documents grow with nodes).
MAX_DIRECTORY_CONTROL_BYTES = 4 * 1024 * 1024
#: Deepest nesting of objects and arrays in a CONTROL message (the message itself is level 1).
MAX_CONTROL_DEPTH = 8
#: Largest UTF-8 encoded text in a CLOSE frame.
MAX_CLOSE_TEXT_BYTES = 256
#: First two bytes of every HELLO payload.
HELLO_MAGIC = b"AM"
#: The one protocol version this code speaks, sent in HELLO. 2: Sphinx blinding scalars are full
#: width (anonmail.core.sphinx, audit finding 13); a version-1 node would drop version-2 packets.
PROTOCOL_VERSION = 2


class FrameType(IntEnum):
    """The type byte that starts every frame."""

    HELLO = 0x01
    PACKET = 0x02
    CONTROL = 0x03
    CLOSE = 0x04


HELLO = FrameType.HELLO
PACKET = FrameType.PACKET
CONTROL = FrameType.CONTROL
CLOSE = FrameType.CLOSE


class Role(IntEnum):
    """What kind of node is speaking, announced in HELLO."""

    CLIENT = 0
    PROVIDER = 1
    MIX = 2
    AUTHORITY = 3


#: Payload length bounds per frame type: (smallest, largest).
_PAYLOAD_LIMITS: dict[int, tuple[int, int]] = {
    FrameType.HELLO: (4, 4),
    FrameType.PACKET: (PACKET_BYTES, PACKET_BYTES),
    FrameType.CONTROL: (2, MAX_CONTROL_BYTES),
    FrameType.CLOSE: (1, 1 + MAX_CLOSE_TEXT_BYTES),
}



def _check_control_limit(limit: int) -> None:
    if not isinstance(limit, int) or not 2 <= limit <= MAX_DIRECTORY_CONTROL_BYTES:
        raise ValueError(f"max_control_bytes must be 2..{MAX_DIRECTORY_CONTROL_BYTES}, got {limit!r}")


#: Largest frame of any type with default limits, header included: the most a default
#: :class:`FrameDecoder` ever buffers.
MAX_FRAME_BYTES = FRAME_HEADER_BYTES + max(high for _, high in _PAYLOAD_LIMITS.values())

_HEADER = struct.Struct(">BI")
_ROLE_VALUES = frozenset(int(role) for role in Role)
_CONTROL_TYPE = re.compile(r"[a-z_]{1,32}")


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame on every stream: protocol version and the sender's role."""

    version: int
    role: Role


@dataclass(frozen=True, slots=True, repr=False)
class Packet:
    """One Sphinx packet of exactly ``PACKET_BYTES`` bytes."""

    data: bytes

    def __repr__(self) -> str:
        """Show the length only: packets are long and opaque."""
        return f"Packet(<{len(self.data)} bytes>)"


@dataclass(frozen=True, slots=True)
class Control:
    """A small JSON control message; ``message["type"]`` says what it is."""

    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Close:
    """Last frame on a stream: a reason code and a short human-readable text."""

    code: int
    text: str


Frame: TypeAlias = Hello | Packet | Control | Close


class _Invalid(Exception):
    """Internal: a payload or frame is invalid; carries a message safe to show."""

    def __init__(self, reason: str, cls: type[WireError] = WireError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cls = cls


def _wire_error(cls: type[WireError], message: str, offset: int | None) -> WireError:
    return cls(message, offset=offset)


# --------------------------------------------------------------------------- encoding


def encode_frame(frame: Frame, *, max_control_bytes: int = MAX_CONTROL_BYTES) -> bytes:
    """Return the bytes of one frame; raise WireError (FrameTooLargeError if too long) if invalid.

    ``max_control_bytes`` may be raised up to :data:`MAX_DIRECTORY_CONTROL_BYTES` on links whose
    peer decodes with the same limit. Raises :class:`TypeError` if ``frame`` is not one of the
    four frame classes.
    """
    _check_control_limit(max_control_bytes)
    try:
        if isinstance(frame, Packet):
            frame_type, payload = FrameType.PACKET, _encode_packet(frame)
        elif isinstance(frame, Control):
            frame_type, payload = FrameType.CONTROL, _encode_control(frame, max_control_bytes)
        elif isinstance(frame, Hello):
            frame_type, payload = FrameType.HELLO, _encode_hello(frame)
        elif isinstance(frame, Close):
            frame_type, payload = FrameType.CLOSE, _encode_close(frame)
        else:
            raise TypeError(f"not a frame: {type(frame).__name__}")
    except _Invalid as exc:
        problem = exc
    else:
        return _HEADER.pack(frame_type, len(payload)) + payload
    raise _wire_error(problem.cls, f"cannot encode {type(frame).__name__}: {problem.reason}", None)


def _encode_packet(frame: Packet) -> bytes:
    data = frame.data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _Invalid(f"data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) != PACKET_BYTES:
        cls = FrameTooLargeError if len(data) > PACKET_BYTES else WireError
        raise _Invalid(f"PACKET payload must be exactly {PACKET_BYTES} bytes, got {len(data)}", cls)
    return data


def _encode_control(frame: Control, limit: int) -> bytes:
    message = frame.message
    if not isinstance(message, dict):
        raise _Invalid(f"CONTROL message must be a dict, not {type(message).__name__}")
    _check_json_tree(message)
    _check_control_type(message)
    try:
        text = json.dumps(
            message, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
        )
    except ValueError:  # e.g. an integer beyond the int-to-str digit limit
        text = None
    if text is None:
        raise _Invalid("CONTROL message cannot be encoded as JSON")
    payload = text.encode("utf-8")
    if len(payload) > limit:
        raise _Invalid(
            f"CONTROL payload is {len(payload)} bytes, at most {limit} allowed",
            FrameTooLargeError,
        )
    return payload


def _encode_hello(frame: Hello) -> bytes:
    version, role = frame.version, frame.role
    if not isinstance(version, int) or version != PROTOCOL_VERSION:
        raise _Invalid(f"HELLO version must be {PROTOCOL_VERSION}")
    if not isinstance(role, int) or role not in _ROLE_VALUES:
        raise _Invalid(f"HELLO role must be one of {[int(r) for r in Role]}")
    return HELLO_MAGIC + bytes((version, role))


def _encode_close(frame: Close) -> bytes:
    code, text = frame.code, frame.text
    if not isinstance(code, int) or not 0 <= code <= 255:
        raise _Invalid("CLOSE code must be an int from 0 to 255")
    if not isinstance(text, str):
        raise _Invalid(f"CLOSE text must be a str, not {type(text).__name__}")
    encoded = _utf8(text, "CLOSE text")
    if len(encoded) > MAX_CLOSE_TEXT_BYTES:
        raise _Invalid(
            f"CLOSE text is {len(encoded)} bytes, at most {MAX_CLOSE_TEXT_BYTES} allowed",
            FrameTooLargeError,
        )
    return bytes((code,)) + encoded


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    raise _Invalid(f"{what} contains a lone surrogate")


# --------------------------------------------------------------------------- JSON checks


def _check_json_tree(root: object) -> None:
    """The strict JSON rules (:mod:`anonmail.core.strictjson`) for a message we encode."""
    try:
        strictjson.check_tree(root, what="CONTROL message", max_depth=MAX_CONTROL_DEPTH,
                              max_values=MAX_CONTROL_BYTES)
    except JSONError as exc:
        problem = exc
    else:
        return
    raise _Invalid(str(problem), FrameTooLargeError if problem.reason == "too_many" else WireError)


def _check_control_type(message: dict[str, Any]) -> None:
    if "type" not in message:
        raise _Invalid('CONTROL message has no "type" key')
    kind = message["type"]
    if not isinstance(kind, str) or _CONTROL_TYPE.fullmatch(kind) is None:
        raise _Invalid('CONTROL "type" must be a string of 1 to 32 characters from [a-z_]')


def _parse_control(payload: bytes) -> dict[str, Any]:
    # strictjson never chains library exceptions: UnicodeDecodeError.object and
    # JSONDecodeError.doc hold the payload, which may be secret.
    try:
        obj = strictjson.loads(payload, what="CONTROL payload", max_depth=MAX_CONTROL_DEPTH)
    except JSONError as exc:
        reason = str(exc)
    else:
        reason = ""
    if reason:
        raise _Invalid(reason)
    if not isinstance(obj, dict):
        raise _Invalid("CONTROL payload is not a JSON object")
    _check_control_type(obj)
    return obj


# --------------------------------------------------------------------------- decoding


def _decode_payload(frame_type: int, payload: bytes) -> Frame:
    """Build the frame from a payload whose length the header check already bounded."""
    if frame_type == FrameType.PACKET:
        return Packet(payload)
    if frame_type == FrameType.CONTROL:
        return Control(_parse_control(payload))
    if frame_type == FrameType.HELLO:
        if payload[:2] != HELLO_MAGIC:
            raise _Invalid("HELLO has the wrong magic (not an anonmail peer?)")
        version, role = payload[2], payload[3]
        if version != PROTOCOL_VERSION:
            raise _Invalid(
                f"peer speaks protocol version {version}, this node speaks {PROTOCOL_VERSION}"
            )
        if role not in _ROLE_VALUES:
            raise _Invalid(f"HELLO announces unknown role {role}")
        return Hello(version, Role(role))
    # CLOSE
    try:
        text = payload[1:].decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None:
        raise _Invalid("CLOSE text is not valid UTF-8")
    return Close(payload[0], text)


class FrameDecoder:
    """Incremental decoder: feed it stream bytes as they arrive, get complete frames back.

    It buffers at most one incomplete frame (never more than :data:`MAX_FRAME_BYTES`). The
    first malformed frame raises :class:`WireError` and poisons the decoder: frames decoded
    earlier in the same :meth:`feed` call are discarded, and every later call raises too.
    """

    __slots__ = ("_buf", "_header", "_offset", "_failed_at", "_limits")

    def __init__(self, *, max_control_bytes: int = MAX_CONTROL_BYTES) -> None:
        _check_control_limit(max_control_bytes)
        self._limits = dict(_PAYLOAD_LIMITS)
        self._limits[FrameType.CONTROL] = (2, max_control_bytes)
        # Holds header bytes while _header is None, then payload bytes of that frame.
        self._buf = bytearray()
        self._header: tuple[int, int] | None = None  # (frame type, payload length)
        self._offset = 0
        self._failed_at: int | None = None

    @property
    def offset(self) -> int:
        """Stream offset of the next frame: bytes consumed by the frames returned so far."""
        return self._offset

    @property
    def pending(self) -> int:
        """Bytes buffered of a frame not yet complete."""
        return len(self._buf) + (FRAME_HEADER_BYTES if self._header is not None else 0)

    @property
    def failed(self) -> bool:
        """Whether the decoder has raised WireError and refuses further input."""
        return self._failed_at is not None

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Return the frames ``data`` completes, in order; raise WireError if malformed."""
        view = memoryview(data).cast("B")  # a TypeError here does not poison the decoder
        self._check_usable()
        try:
            return self._feed(view)
        except BaseException:
            self._failed_at = self._offset
            self._buf = bytearray()
            self._header = None
            raise

    def feed_eof(self) -> None:
        """Signal the end of the stream; raise WireError if it ends inside a frame."""
        self._check_usable()
        if self.pending:
            pending = self.pending
            self._failed_at = self._offset
            raise _wire_error(
                WireError,
                f"stream ended inside a frame: {pending} bytes pending at stream offset "
                f"{self._offset}",
                self._offset,
            )

    def _check_usable(self) -> None:
        if self._failed_at is not None:
            raise _wire_error(
                WireError, "decoder failed earlier; close the stream", self._failed_at
            )

    def _check_header(self, frame_type: int, length: int) -> None:
        limits = self._limits.get(frame_type)
        if limits is None:
            raise _wire_error(
                WireError,
                f"unknown frame type 0x{frame_type:02x} at stream offset {self._offset}",
                self._offset,
            )
        low, high = limits
        if low <= length <= high:
            return
        name = FrameType(frame_type).name
        if low == high and length != low:
            cls = FrameTooLargeError if length > high else WireError
            raise _wire_error(
                cls,
                f"{name} payload must be exactly {low} bytes, got {length} "
                f"(frame at stream offset {self._offset})",
                self._offset,
            )
        if length > high:
            raise _wire_error(
                FrameTooLargeError,
                f"{name} frame announces {length} payload bytes, at most {high} allowed "
                f"(frame at stream offset {self._offset})",
                self._offset,
            )
        if length < low:
            raise _wire_error(
                WireError,
                f"{name} frame announces {length} payload bytes, at least {low} required "
                f"(frame at stream offset {self._offset})",
                self._offset,
            )

    def _complete(self, frame_type: int, payload: bytes) -> Frame:
        try:
            frame = _decode_payload(frame_type, payload)
        except _Invalid as exc:
            problem = exc
        else:
            self._offset += FRAME_HEADER_BYTES + len(payload)
            return frame
        raise _wire_error(
            problem.cls, f"{problem.reason} (frame at stream offset {self._offset})", self._offset
        )

    def _feed(self, view: memoryview) -> list[Frame]:
        frames: list[Frame] = []
        buf = self._buf
        pos, end = 0, len(view)
        # Finish the frame left incomplete by the previous call, if any.
        if buf or self._header is not None:
            if self._header is None:
                take = min(FRAME_HEADER_BYTES - len(buf), end)
                buf += view[:take]
                pos = take
                if len(buf) < FRAME_HEADER_BYTES:
                    return frames
                frame_type, length = _HEADER.unpack(buf)
                self._check_header(frame_type, length)
                self._header = (frame_type, length)
                buf.clear()
            frame_type, length = self._header
            take = min(length - len(buf), end - pos)
            buf += view[pos : pos + take]
            pos += take
            if len(buf) < length:
                return frames
            payload = bytes(buf)
            buf.clear()
            self._header = None
            frames.append(self._complete(frame_type, payload))
        # Decode whole frames straight from the input; buffer only the incomplete tail.
        while end - pos >= FRAME_HEADER_BYTES:
            frame_type, length = _HEADER.unpack_from(view, pos)
            self._check_header(frame_type, length)
            start = pos + FRAME_HEADER_BYTES
            if end - start < length:
                self._header = (frame_type, length)
                buf += view[start:end]
                return frames
            pos = start + length
            frames.append(self._complete(frame_type, bytes(view[start:pos])))
        buf += view[pos:end]
        return frames
