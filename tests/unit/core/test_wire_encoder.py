"""Tests of :func:`anonmail.core.wire.encode_frame`: what it refuses, and that refusals quote nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from anonmail.core.sizes import PACKET_BYTES
from anonmail.core.wire import (
    MAX_CLOSE_TEXT_BYTES,
    MAX_CONTROL_BYTES,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Close,
    Control,
    Frame,
    Hello,
    Packet,
    Role,
    encode_frame,
)
from anonmail.errors import FrameTooLargeError, WireError

pytestmark = pytest.mark.unit

SECRET = "S3CR3T-MARKER"


# --------------------------------------------------------------------------- encoder validation


@pytest.mark.parametrize("size", [0, PACKET_BYTES - 1])
def test_encode_short_packet(size: int) -> None:
    with pytest.raises(WireError, match=f"exactly {PACKET_BYTES} bytes, got {size}"):
        encode_frame(Packet(bytes(size)))


def test_encode_long_packet() -> None:
    with pytest.raises(FrameTooLargeError, match=f"got {PACKET_BYTES + 1}"):
        encode_frame(Packet(bytes(PACKET_BYTES + 1)))


def test_encode_oversize_control() -> None:
    fits = {"type": "x", "v": "a" * (MAX_CONTROL_BYTES - len('{"type":"x","v":""}'))}
    assert len(encode_frame(Control(fits))) == MAX_FRAME_BYTES
    with pytest.raises(FrameTooLargeError):
        encode_frame(Control({**fits, "v": fits["v"] + "a"}))
    with pytest.raises(FrameTooLargeError):
        encode_frame(Control({"type": "x", "v": "é" * (MAX_CONTROL_BYTES // 2)}))


def test_encode_oversize_close() -> None:
    with pytest.raises(FrameTooLargeError):
        encode_frame(Close(0, "x" * (MAX_CLOSE_TEXT_BYTES + 1)))


def _circular() -> dict[str, Any]:
    message: dict[str, Any] = {"type": "loop"}
    message["self"] = message
    return message


def _shared() -> dict[str, Any]:
    level: Any = 0
    for _ in range(6):
        level = [level] * 100  # 100**6 leaves if walked naively
    return {"type": "bomb", "v": level}


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"kind": "x"},
        {"type": ""},
        {"type": "UPPER"},
        {"type": "a" * 33},
        {"type": b"x"},
        {"type": "x", "v": float("nan")},
        {"type": "x", "v": float("inf")},
        {"type": "x", "v": b"bytes"},
        {"type": "x", "v": (1, 2)},
        {"type": "x", "v": {1}},
        {"type": "x", 1: "int key"},
        {"type": "x", "v": "\udc80"},
        {"type": "x", "\ud800": 1},
        {"type": "x", "v": [[[[[[[[1]]]]]]]]},
        {"type": "x", "v": 10**5000},
        ["type", "x"],
    ],
)
def test_encode_invalid_control(message: Any) -> None:
    with pytest.raises(WireError):
        encode_frame(Control(message))


@pytest.mark.parametrize("message", [_circular(), _shared()], ids=["circular", "shared"])
def test_encode_pathological_control(message: Any) -> None:
    start = time.perf_counter()
    with pytest.raises(WireError):
        encode_frame(Control(message))
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "frame",
    [
        Hello(0, Role.MIX),
        Hello(1, Role.MIX),
        Hello(3, Role.MIX),
        Hello(PROTOCOL_VERSION, 4),  # type: ignore[arg-type]
        Hello(PROTOCOL_VERSION, -1),  # type: ignore[arg-type]
        Close(256, ""),
        Close(-1, ""),
        Close(0, "\udc80"),
        Close(0, b"bytes"),  # type: ignore[arg-type]
        Packet("x" * PACKET_BYTES),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_encode_invalid_other(frame: Frame) -> None:
    with pytest.raises(WireError):
        encode_frame(frame)


def test_encode_not_a_frame() -> None:
    with pytest.raises(TypeError):
        encode_frame(b"raw")  # type: ignore[arg-type]


def test_encoder_errors_do_not_leak_content() -> None:
    with pytest.raises(WireError) as info:
        encode_frame(Control({"type": SECRET.lower().replace("-", "_") + "X", "k": SECRET}))
    assert SECRET not in str(info.value)
    assert SECRET.lower() not in str(info.value)
