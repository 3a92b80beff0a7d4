"""Strict JSON for every document anonmail reads from outside the process (sans-IO).

CONTROL frames (:mod:`anonmail.core.wire`, which carries the client–provider protocol, the
directory protocol, descriptors and consensus documents) and end-to-end envelope headers
(:mod:`anonmail.core.envelope`) are all decoded by :func:`loads`, so one set of bounds holds
everywhere a peer can write JSON:

* nesting at most ``max_depth`` levels (the document itself is level 1); deeper input is
  rejected before Python's recursion limit can be reached by anything that walks it later;
* integers within a signed 64-bit range (``-2**63 .. 2**63-1``): they fit SQLite's INTEGER and
  never hit the interpreter's int-to-string digit limit; longer digit strings are refused
  before they are converted;
* floats finite; no ``NaN``/``Infinity``; no duplicate keys; no lone surrogates in strings
  or keys (they cannot be encoded as UTF-8, so SQLite and terminals would choke on them);
* at most ``max_values`` values in all (each takes at least one byte, so this only bounds
  structures handed to :func:`check_tree` by the encoder).

Every violation raises :class:`~anonmail.errors.JSONError` whose message names the rule broken
and the ``what`` given by the caller, never the input text; no library exception holding the
input is chained. Callers translate it into their own error (WireError, FragmentError...).
"""

from __future__ import annotations

import json
import math
from typing import Any

from anonmail.errors import JSONError

__all__ = ["MAX_INT", "MIN_INT", "DEFAULT_MAX_DEPTH", "loads", "dumps", "check_tree"]

#: Largest integer any anonmail JSON carries (SQLite's INTEGER is signed 64-bit).
MAX_INT = 2**63 - 1
#: Smallest integer any anonmail JSON carries.
MIN_INT = -(2**63)
#: Deepest nesting allowed unless a caller asks for less.
DEFAULT_MAX_DEPTH = 8
_MAX_DIGITS = len(str(MAX_INT))  # 19


class _Reject(Exception):
    """Internal: raised inside the json hooks, turned into JSONError outside them."""

    def __init__(self, message: str, code: str = "malformed") -> None:
        super().__init__(message)
        self.code = code


def _parse_int(text: str) -> int:
    digits = text[1:] if text.startswith("-") else text
    if len(digits) > _MAX_DIGITS:
        raise _Reject("an integer is out of the 64-bit range", "int_range")
    value = int(text)
    if not MIN_INT <= value <= MAX_INT:
        raise _Reject("an integer is out of the 64-bit range", "int_range")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Reject("a number is not finite")
    return value


def _parse_constant(name: str) -> Any:
    raise _Reject("NaN or Infinity is not allowed")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Reject("an object has a duplicate key")
    return obj


def loads(data: bytes | str, *, what: str = "JSON", max_depth: int = DEFAULT_MAX_DEPTH,
          max_values: int | None = None) -> Any:
    """Decode untrusted JSON under the bounds above; JSONError naming ``what`` if it breaks one."""
    reason, code = "", "malformed"
    text = ""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"{what} is not valid UTF-8 (bad byte at index {exc.start})"
    elif isinstance(data, str):
        text = data
    else:
        reason = f"{what} must be bytes or str, not {type(data).__name__}"
    if reason:
        raise JSONError(reason)
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                           parse_constant=_parse_constant, object_pairs_hook=_unique_object)
    except _Reject as exc:
        reason, code = f"{what}: {exc}", exc.code
    except json.JSONDecodeError as exc:
        reason = f"{what} is not valid JSON ({exc.msg} at char {exc.pos})"
    except RecursionError:
        reason, code = f"{what} is nested deeper than {max_depth} levels", "too_deep"
    except ValueError:  # defensive: any other conversion limit of the json module
        reason = f"{what} is not valid JSON"
    if reason:
        raise JSONError(reason, reason=code)
    check_tree(value, what=what, max_depth=max_depth,
               max_values=max_values if max_values is not None else max(len(text), 1))
    return value


def check_tree(root: object, *, what: str = "JSON", max_depth: int = DEFAULT_MAX_DEPTH,
               max_values: int = 1 << 22) -> None:
    """Walk a JSON value without recursion: types, depth, integer range, finite floats, UTF-8.

    Also used before encoding, so a message we send obeys the same rules a peer enforces; the
    walk stops after ``max_values`` values, so shared or circular structures cannot make it spin.
    """
    stack: list[tuple[object, int]] = [(root, 1)]
    visited = 0
    while stack:
        value, depth = stack.pop()
        visited += 1
        if visited > max_values:
            raise JSONError(f"{what} has too many values", reason="too_many")
        if isinstance(value, str):
            _check_text(value, what)
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if not MIN_INT <= value <= MAX_INT:
                raise JSONError(f"{what}: an integer is out of the 64-bit range", reason="int_range")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise JSONError(f"{what}: a number is not finite")
        elif isinstance(value, dict):
            if depth > max_depth:
                raise JSONError(f"{what} is nested deeper than {max_depth} levels", reason="too_deep")
            for key, item in value.items():
                if not isinstance(key, str):
                    raise JSONError(f"{what}: object keys must be strings")
                _check_text(key, what)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > max_depth:
                raise JSONError(f"{what} is nested deeper than {max_depth} levels", reason="too_deep")
            stack.extend((item, depth + 1) for item in value)
        else:
            raise JSONError(f"{what}: {type(value).__name__} is not a JSON type")


def _check_text(text: str, what: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return
    raise JSONError(f"{what} contains a lone surrogate")


def dumps(value: object, *, what: str = "JSON", max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """The canonical encoding (sorted keys, no spaces, UTF-8) of a value that obeys the bounds."""
    check_tree(value, what=what, max_depth=max_depth)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
