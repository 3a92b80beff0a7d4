"""Tests of the sans-IO frame codec in :mod:`anonmail.core.wire`."""

from __future__ import annotations

import ast
import json
import random
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anonmail.core import wire
from anonmail.core.sizes import PACKET_BYTES
from anonmail.core.wire import (
    CLOSE,
    CONTROL,
    FRAME_HEADER_BYTES,
    HELLO,
    MAX_CLOSE_TEXT_BYTES,
    MAX_CONTROL_BYTES,
    MAX_CONTROL_DEPTH,
    MAX_FRAME_BYTES,
    PACKET,
    PROTOCOL_VERSION,
    Close,
    Control,
    Frame,
    FrameDecoder,
    Hello,
    Packet,
    Role,
    encode_frame,
)
from anonmail.errors import FrameTooLargeError, WireError

pytestmark = pytest.mark.unit

SECRET = "S3CR3T-MARKER"


def header(frame_type: int, length: int) -> bytes:
    return struct.pack(">BI", frame_type, length)


def raw(frame_type: int, payload: bytes) -> bytes:
    return header(frame_type, len(payload)) + payload


def control_raw(text: str | bytes) -> bytes:
    payload = text.encode("utf-8") if isinstance(text, str) else text
    return raw(CONTROL, payload)


def decode_all(data: bytes) -> list[Frame]:
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    assert decoder.pending == 0
    return frames


def decode_error(data: bytes) -> WireError:
    with pytest.raises(WireError) as info:
        FrameDecoder().feed(data)
    return info.value


SAMPLE_FRAMES: list[Frame] = [
    Hello(PROTOCOL_VERSION, Role.CLIENT),
    Hello(PROTOCOL_VERSION, Role.AUTHORITY),
    Packet(bytes(range(256)) * (PACKET_BYTES // 256)),
    Control({"type": "ping"}),
    Control({"type": "fetch_mailbox", "since": 12, "ids": ["a", "b"], "ok": True, "x": None}),
    Control({"type": "note", "text": "grüße ✉", "f": -0.5, "n": {"a": [1, [2, {"b": 3}]]}}),
    Close(0, ""),
    Close(255, "x" * MAX_CLOSE_TEXT_BYTES),
    Close(7, "é" * (MAX_CLOSE_TEXT_BYTES // 2)),
]


# --------------------------------------------------------------------------- constants


def test_constants() -> None:
    assert FRAME_HEADER_BYTES == 5
    assert PACKET_BYTES == 4096
    assert MAX_CONTROL_BYTES == 16384
    # The largest frame is a maximal CONTROL frame; the decoder never buffers more.
    assert MAX_FRAME_BYTES == FRAME_HEADER_BYTES + max(PACKET_BYTES, MAX_CONTROL_BYTES)
    assert (HELLO, PACKET, CONTROL, CLOSE) == (1, 2, 3, 4)
    assert [int(r) for r in Role] == [0, 1, 2, 3]


def test_module_is_sans_io() -> None:
    tree = ast.parse(Path(wire.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    allowed = {"__future__", "json", "math", "re", "struct", "dataclasses", "enum", "typing"}
    assert imported <= allowed | {"anonmail"}


def test_public_names_are_documented() -> None:
    for name in wire.__all__:
        obj = getattr(wire, name)
        if callable(obj) and name != "Frame":
            assert obj.__doc__, name


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("frame", SAMPLE_FRAMES, ids=lambda f: type(f).__name__)
def test_roundtrip_each_type(frame: Frame) -> None:
    data = encode_frame(frame)
    assert data[0] == {Hello: HELLO, Packet: PACKET, Control: CONTROL, Close: CLOSE}[type(frame)]
    assert int.from_bytes(data[1:5], "big") == len(data) - FRAME_HEADER_BYTES
    assert decode_all(data) == [frame]


def test_hello_layout() -> None:
    assert encode_frame(Hello(2, Role.MIX)) == b"\x01\x00\x00\x00\x04AM\x02\x02"
    (frame,) = decode_all(b"\x01\x00\x00\x00\x04AM\x02\x03")
    assert frame == Hello(2, Role.AUTHORITY)
    assert isinstance(frame, Hello) and isinstance(frame.role, Role)
    with pytest.raises(WireError, match="peer speaks protocol version 1, this node speaks 2"):  # a node from before full-width blinding
        decode_all(b"\x01\x00\x00\x00\x04AM\x01\x03")


def test_close_layout() -> None:
    assert encode_frame(Close(2, "ok")) == b"\x04\x00\x00\x00\x03\x02ok"


def test_control_encoding_is_canonical() -> None:
    data = encode_frame(Control({"z": 1, "type": "a_b", "m": {"y": "é", "b": [1.5]}}))
    assert data[FRAME_HEADER_BYTES:] == '{"m":{"b":[1.5],"y":"é"},"type":"a_b","z":1}'.encode()


def test_decoder_accepts_non_canonical_control_json() -> None:
    (frame,) = decode_all(control_raw(' { "type" : "ping" , "n" : [ 1 ] } '))
    assert frame == Control({"type": "ping", "n": [1]})


def test_control_depth_limit_is_inclusive() -> None:
    message: dict[str, Any] = {"type": "deep"}
    inner: Any = 1
    for _ in range(MAX_CONTROL_DEPTH - 1):
        inner = [inner]
    message["v"] = inner  # the message is level 1, the innermost list level 8
    assert decode_all(encode_frame(Control(message))) == [Control(message)]


def test_many_frames_byte_by_byte() -> None:
    frames = SAMPLE_FRAMES * 2
    data = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(len(data)):
        out.extend(decoder.feed(data[i : i + 1]))
        assert decoder.offset + decoder.pending == i + 1
    assert out == frames
    assert decoder.offset == len(data)
    assert decoder.pending == 0
    decoder.feed_eof()


def test_feed_accepts_bytearray_memoryview_and_empty() -> None:
    data = encode_frame(Close(1, "bye"))
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(bytearray(data[:3])) == []
    assert decoder.pending == 3
    assert decoder.feed(memoryview(data)[3:]) == [Close(1, "bye")]


# --------------------------------------------------------------------------- hypothesis


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # the strict JSON range
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)


def json_values(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return json_scalars
    child = json_values(depth - 1)
    return (
        json_scalars
        | st.lists(child, max_size=3)
        | st.dictionaries(st.text(max_size=6), child, max_size=3)
    )


control_types = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=32)
controls = st.builds(
    lambda extra, kind: Control({**extra, "type": kind}),
    st.dictionaries(st.text(max_size=6), json_values(3), max_size=4),
    control_types,
)
packets = st.builds(
    lambda seed: Packet(random.Random(seed).randbytes(PACKET_BYTES)), st.integers(0, 2**32)
)
hellos = st.builds(Hello, st.just(PROTOCOL_VERSION), st.sampled_from(Role))
closes = st.builds(
    Close,
    st.integers(0, 255),
    st.text(max_size=64).filter(lambda t: len(t.encode()) <= MAX_CLOSE_TEXT_BYTES),
)
frames_st = st.lists(hellos | packets | controls | closes, max_size=8)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=frames_st, cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_roundtrip_any_chunking(frames: list[Frame], cuts: list[int]) -> None:
    data = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for chunk in split(data, cuts):
        out.extend(decoder.feed(chunk))
        assert decoder.pending <= MAX_FRAME_BYTES
    assert out == frames
    assert decoder.pending == 0
    assert decoder.offset == len(data)


def _junk_piece() -> st.SearchStrategy[bytes]:
    """Pieces that make arbitrary streams interesting: real frames, plausible headers, noise."""
    plausible_header = st.builds(
        header,
        st.sampled_from([0, 1, 2, 3, 4, 5, 0xFF]),
        st.sampled_from([0, 1, 2, 3, 4, 5, 257, 258, PACKET_BYTES, MAX_CONTROL_BYTES])
        | st.integers(0, 2**32 - 1),
    )
    return st.one_of(
        st.binary(max_size=64),
        plausible_header,
        (hellos | controls | closes).map(encode_frame),
        st.builds(lambda n: b"[" * n, st.integers(0, 3000)),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(_junk_piece(), max_size=10),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_arbitrary_bytes_yield_frames_or_wire_error(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    decoder = FrameDecoder()
    consumed = 0
    for chunk in split(data, cuts):
        try:
            frames = decoder.feed(chunk)
        except WireError as exc:
            assert isinstance(exc.offset, int)  # type: ignore[attr-defined]
            assert 0 <= exc.offset <= len(data)  # type: ignore[attr-defined]
            with pytest.raises(WireError, match="decoder failed earlier"):
                decoder.feed(b"\x01")
            return
        assert all(isinstance(f, (Hello, Packet, Control, Close)) for f in frames)
        consumed += len(chunk)
        assert decoder.pending <= MAX_FRAME_BYTES
        assert decoder.offset + decoder.pending == consumed


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_pure_noise_yields_frames_or_wire_error(data: bytes) -> None:
    decoder = FrameDecoder()
    try:
        decoder.feed(data)
    except WireError:
        assert decoder.failed
    else:
        assert decoder.pending <= MAX_FRAME_BYTES


# --------------------------------------------------------------------------- header-time rejection


@pytest.mark.parametrize(
    ("frame_type", "length"),
    [
        (CONTROL, MAX_CONTROL_BYTES + 1),
        (CONTROL, 2**32 - 1),
        (PACKET, PACKET_BYTES + 1),
        (HELLO, 5),
        (CLOSE, 2 + MAX_CLOSE_TEXT_BYTES),
    ],
)
def test_oversize_rejected_from_header_alone(frame_type: int, length: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(Control({"type": "ping"})))
    start = decoder.offset
    assert decoder.feed(header(frame_type, length)[:3]) == []
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(header(frame_type, length)[3:])
    assert info.value.offset == start  # type: ignore[attr-defined]
    assert str(length) in str(info.value)
    assert f"offset {start}" in str(info.value)


@pytest.mark.parametrize("length", [0, 1, PACKET_BYTES - 1])
def test_short_packet_rejected_from_header_alone(length: int) -> None:
    with pytest.raises(WireError) as info:
        FrameDecoder().feed(header(PACKET, length))
    assert not isinstance(info.value, FrameTooLargeError)
    assert f"exactly {PACKET_BYTES} bytes, got {length}" in str(info.value)


@pytest.mark.parametrize(("frame_type", "length"), [(HELLO, 3), (CLOSE, 0), (CONTROL, 0)])
def test_undersize_rejected_from_header_alone(frame_type: int, length: int) -> None:
    with pytest.raises(WireError):
        FrameDecoder().feed(header(frame_type, length))


def test_never_buffers_more_than_one_frame() -> None:
    filler = "a" * (MAX_CONTROL_BYTES - len('{"type":"x","v":""}'))
    biggest = encode_frame(Control({"type": "x", "v": filler}))
    assert len(biggest) == MAX_FRAME_BYTES
    decoder = FrameDecoder()
    assert decoder.feed(biggest[:-1]) == []
    assert decoder.pending == MAX_FRAME_BYTES - 1
    # One feed completes the frame and brings almost a second one: only the tail stays.
    assert len(decoder.feed(biggest[-1:] + biggest[:-1])) == 1
    assert decoder.pending == MAX_FRAME_BYTES - 1
    assert len(decoder.feed(biggest[-1:] + biggest * 3 + biggest[:10])) == 4
    assert decoder.pending == 10


@pytest.mark.parametrize("type_byte", [0x00, 0x05, 0x7F, 0xFF])
def test_unknown_type(type_byte: int) -> None:
    decoder = FrameDecoder()
    prefix = encode_frame(Hello(PROTOCOL_VERSION, Role.MIX))
    with pytest.raises(WireError) as info:
        decoder.feed(prefix + bytes([type_byte]) + b"\x00\x00\x00\x00")
    expected = f"unknown frame type 0x{type_byte:02x} at stream offset {len(prefix)}"
    assert str(info.value) == expected
    assert info.value.offset == len(prefix)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- payload rejection


BAD_CONTROL_PAYLOADS = {
    "bad_json": f'{{"type":"x","k":"{SECRET}",}}',
    "truncated_json": f'{{"type":"x","k":"{SECRET}"',
    "trailing_garbage": '{"type":"x"} {}',
    "array": f'["{SECRET}"]',
    "string": f'"{SECRET}"',
    "number": "12",
    "null": "null",
    "missing_type": f'{{"kind":"{SECRET}"}}',
    "type_not_string": '{"type":5}',
    "type_empty": '{"type":""}',
    "type_uppercase": '{"type":"Ping"}',
    "type_dash": '{"type":"a-b"}',
    "type_digit": '{"type":"v2"}',
    "type_too_long": '{"type":"' + "a" * 33 + '"}',
    "type_trailing_newline": '{"type":"ping\\n"}',
    "type_non_ascii": '{"type":"pïng"}',
    "nan": '{"type":"x","v":NaN}',
    "infinity": '{"type":"x","v":Infinity}',
    "minus_infinity": '{"type":"x","v":-Infinity}',
    "overflowing_float": '{"type":"x","v":1e999}',
    "huge_int": '{"type":"x","v":' + "9" * 5000 + "}",
    "duplicate_key": '{"type":"x","type":"y"}',
    "lone_surrogate": '{"type":"x","v":"\\ud800"}',
    "too_deep_walk": '{"type":"x","v":' + "[" * MAX_CONTROL_DEPTH + "]" * MAX_CONTROL_DEPTH + "}",
    "too_deep_objects": '{"type":"x","v":' + '{"a":' * MAX_CONTROL_DEPTH + "1" + "}" * 9,
    "deep_recursion": "[" * (MAX_CONTROL_BYTES - 10),
    "deep_recursion_in_object": '{"type":"x","v":' + "[" * 16000 + "]" * 100 + "}",
    "deep_objects_recursion": '{"a":' * 2000 + "1" + "}" * 2000,
}


@pytest.mark.parametrize("text", BAD_CONTROL_PAYLOADS.values(), ids=BAD_CONTROL_PAYLOADS.keys())
def test_bad_control_payload(text: str) -> None:
    data = control_raw(text)
    assert len(data) <= MAX_FRAME_BYTES
    exc = decode_error(data)
    assert not isinstance(exc, FrameTooLargeError)
    assert exc.offset == 0  # type: ignore[attr-defined]
    assert SECRET not in str(exc)
    # Library errors (whose attributes hold the payload) are not chained.
    assert exc.__cause__ is None and exc.__context__ is None


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_rejected_while_parsing(constant: str) -> None:
    exc = decode_error(control_raw('{"type":"x","v":[' + constant + "]}"))
    assert "NaN or Infinity" in str(exc)


def test_deep_nesting_above_size_limit_is_too_large() -> None:
    payload = b"[" * 100_000
    with pytest.raises(FrameTooLargeError):
        FrameDecoder().feed(header(CONTROL, len(payload)) + payload)


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b'{"type":"x","v":"\xc3"}', b'{"type":"x","v":"\xed\xa0\x80"}', b"\xef\xbb\xbf{}"],
    ids=["invalid_start", "truncated_sequence", "encoded_surrogate", "bom"],
)
def test_control_invalid_utf8(payload: bytes) -> None:
    exc = decode_error(control_raw(payload))
    assert exc.__context__ is None


@pytest.mark.parametrize(
    "payload",
    [b"XM\x02\x00", b"am\x02\x00", b"AM\x00\x00", b"AM\x01\x00", b"AM\x03\x00", b"AM\x02\x04", b"AM\x02\xff"],
    ids=["magic", "magic_case", "version_0", "version_1", "version_3", "role_4", "role_255"],
)
def test_bad_hello(payload: bytes) -> None:
    decode_error(raw(HELLO, payload))


def test_close_invalid_utf8() -> None:
    exc = decode_error(raw(CLOSE, b"\x01" + SECRET.encode() + b"\xff"))
    assert SECRET not in str(exc)
    assert exc.__context__ is None


def test_error_offset_points_at_bad_frame() -> None:
    good = encode_frame(Packet(bytes(PACKET_BYTES))) + encode_frame(Close(1, "x"))
    decoder = FrameDecoder()
    decoder.feed(good[:100])
    with pytest.raises(WireError) as info:
        decoder.feed(good[100:] + control_raw("[]"))
    assert info.value.offset == len(good)  # type: ignore[attr-defined]
    assert f"offset {len(good)}" in str(info.value)


# --------------------------------------------------------------------------- poisoning


def test_poisoned_after_error() -> None:
    decoder = FrameDecoder()
    with pytest.raises(WireError):
        decoder.feed(b"\x09\x00\x00\x00\x00")
    assert decoder.failed
    for data in (b"", encode_frame(Close(0, "")), b"\x01"):
        with pytest.raises(WireError, match=r"^decoder failed earlier; close the stream$"):
            decoder.feed(data)
    with pytest.raises(WireError, match="decoder failed earlier"):
        decoder.feed_eof()


def test_poisoned_after_payload_error_split_across_feeds() -> None:
    data = control_raw('{"type":1}')
    decoder = FrameDecoder()
    assert decoder.feed(data[:7]) == []
    with pytest.raises(WireError, match='"type"'):
        decoder.feed(data[7:])
    with pytest.raises(WireError, match="decoder failed earlier"):
        decoder.feed(encode_frame(Control({"type": "ok"})))


def test_wrong_argument_type_does_not_poison() -> None:
    decoder = FrameDecoder()
    with pytest.raises(TypeError):
        decoder.feed("text")  # type: ignore[arg-type]
    assert not decoder.failed
    assert decoder.feed(encode_frame(Close(0, ""))) == [Close(0, "")]


def test_feed_eof() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(Close(0, "")))
    decoder.feed_eof()
    decoder = FrameDecoder()
    decoder.feed(encode_frame(Close(0, "abc"))[:-1])
    with pytest.raises(WireError, match="ended inside a frame"):
        decoder.feed_eof()
    assert decoder.failed


def test_encode_matches_what_decoder_accepts() -> None:
    message = {"type": "x", "v": json.loads('{"a":[1,2,{"b":null}]}')}
    assert decode_all(encode_frame(Control(message))) == [Control(message)]


# --------------------------------------------------------------------------- performance


def test_ten_thousand_packets_fast() -> None:
    rng = random.Random(4096)
    frame = encode_frame(Packet(rng.randbytes(PACKET_BYTES)))
    stream = frame * 10_000
    chunks = []
    pos = 0
    while pos < len(stream):
        size = rng.randint(1, 3 * len(frame))
        chunks.append(stream[pos : pos + size])
        pos += size

    decoder = FrameDecoder()
    start = time.perf_counter()
    count = 0
    for chunk in chunks:
        count += len(decoder.feed(chunk))
        assert decoder.pending <= MAX_FRAME_BYTES
    chunked = time.perf_counter() - start
    assert count == 10_000

    decoder = FrameDecoder()
    start = time.perf_counter()
    assert len(decoder.feed(stream)) == 10_000  # one 41 MB feed: no quadratic copying
    whole = time.perf_counter() - start

    assert chunked < 1.0, chunked
    assert whole < 1.0, whole
