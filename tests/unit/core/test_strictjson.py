"""The strict JSON rules every JSON from outside is read with."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anonmail.core import strictjson
from anonmail.errors import JSONError


@pytest.mark.parametrize(("text", "reason"), [
    (b"[" * 1500 + b"]" * 1500, "too_deep"),         # RecursionError in the json module
    (b"[" * 9 + b"]" * 9, "too_deep"),               # deeper than the default 8 levels
    (b"1" + b"0" * 5000, "int_range"),               # ValueError (digit limit) in the json module
    (str(2**63).encode(), "int_range"),              # does not fit SQLite's INTEGER
    (str(-(2**63) - 1).encode(), "int_range"),
    (b'{"a":1,"a":2}', "malformed"),
    (b"NaN", "malformed"),
    (b"1e400", "malformed"),
    (b'"\\ud800"', "malformed"),                     # lone surrogate
    (b'{"\\udc80":1}', "malformed"),
    (b"\xff", "malformed"),
    (b"{", "malformed"),
])
def test_hostile_json_is_refused_with_a_typed_error(text, reason):
    with pytest.raises(JSONError) as info:
        strictjson.loads(text, what="header")
    assert info.value.reason == reason
    assert str(info.value).startswith("header")
    assert info.value.__cause__ is None and info.value.__context__ is None  # no input kept in a chain


def test_limits_are_exact():
    assert strictjson.loads(str(2**63 - 1)) == 2**63 - 1
    assert strictjson.loads(str(-(2**63))) == -(2**63)
    assert strictjson.loads(b"[" * 8 + b"]" * 8) == [[[[[[[[]]]]]]]]
    assert strictjson.loads(b"[[1]]", max_depth=2) == [[1]]
    with pytest.raises(JSONError):
        strictjson.loads(b"[[[1]]]", max_depth=2)


def test_errors_never_quote_the_input():
    secret = "hunter2-secret"
    for text in (f'{{"{secret}": NaN}}', f'["{secret}", "\\ud800"]', f'{{"{secret}": 1, "{secret}": 2}}'):
        with pytest.raises(JSONError) as info:
            strictjson.loads(text)
        assert secret not in str(info.value)


@pytest.mark.parametrize("value", [{1: 2}, (1, 2), {"a": b"x"}, [float("inf")], 2**64, {"a": "\ud800"}])
def test_dumps_refuses_what_loads_would(value):
    with pytest.raises(JSONError):
        strictjson.dumps(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_of_anything_within_the_bounds(value):
    try:
        encoded = strictjson.dumps(value)
    except JSONError as exc:
        assert exc.reason == "too_deep" or "surrogate" in str(exc)
        return
    assert strictjson.loads(encoded) == value
    assert encoded == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
