"""Strict TOML configuration: every value checked once at load, errors name the file and key.

A config file is read with :func:`load_toml`; typed values are pulled out of it with a
:class:`Table` reader, which remembers which keys were read so :meth:`Table.finish` can refuse
unknown keys (a typo is an error, never a silently ignored setting). Services turn the values
into frozen dataclasses.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from anonmail.core.uri import parse_transport_address
from anonmail.errors import ConfigError, TransportAddressError

__all__ = ["load_toml", "Table", "SCHEMA_VERSION"]

#: The config schema version this code writes and reads.
SCHEMA_VERSION = 1

T = TypeVar("T")
_MISSING: Any = object()


def install_config(path: Path, text: str, load: Callable[[Path], object]) -> None:
    """Write a generated config only if ``load`` accepts it (what ``init`` writes must load)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    try:
        load(tmp)
    except ConfigError:
        tmp.unlink()
        raise
    os.replace(tmp, path)


def load_toml(path: str | os.PathLike[str]) -> Table:
    """Read a TOML file into a :class:`Table`; ConfigError with the line on a syntax error."""
    target = Path(path)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{target}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{target}: config file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{target}: invalid TOML: {exc}") from None
    table = Table(data, str(target), "")
    version = table.int("schema_version", default=SCHEMA_VERSION, minimum=1)
    if version != SCHEMA_VERSION:
        raise ConfigError(f"{target}: schema_version {version} is not supported (this version reads {SCHEMA_VERSION})")
    return table


class Table:
    """Typed, strict access to one TOML table; errors say ``file: key: problem``."""

    def __init__(self, data: dict[str, Any], path: str, prefix: str) -> None:
        self._data = data
        self.path = path
        self._prefix = prefix
        self._seen: set[str] = set()
        self._children: list[Table] = []

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def error(self, key: str, problem: str) -> ConfigError:
        """A ConfigError naming this file and key."""
        return ConfigError(f"{self.path}: {self._key(key)}: {problem}")

    def _get(self, key: str, default: Any) -> Any:
        self._seen.add(key)
        if key in self._data:
            return self._data[key]
        if default is _MISSING:
            raise self.error(key, "is required")
        return default

    def has(self, key: str) -> bool:
        """Whether the key is present."""
        return key in self._data

    def table(self, key: str, *, required: bool = False) -> Table:
        """A sub-table (an empty one when absent and not required)."""
        value = self._get(key, _MISSING if required else {})
        if not isinstance(value, dict):
            raise self.error(key, "must be a table ([section])")
        child = Table(value, self.path, f"{self._key(key)}.")
        self._children.append(child)
        return child

    def tables(self, key: str) -> list[Table]:
        """An array of tables ([[key]])."""
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, "must be an array of tables ([[section]])")
        children = [Table(v, self.path, f"{self._key(key)}[{i}].") for i, v in enumerate(value)]
        self._children.extend(children)
        return children

    def str(self, key: str, *, default: Any = _MISSING, check: Callable[[str], str | None] | None = None) -> Any:
        """A string; ``check`` returns an error text or None."""
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {type(value).__name__}")
        if check is not None and (problem := check(value)):
            raise self.error(key, problem)
        return value

    def bool(self, key: str, *, default: Any = _MISSING) -> Any:
        """A boolean."""
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def int(self, key: str, *, default: Any = _MISSING, minimum: int | None = None, maximum: int | None = None) -> Any:
        """An integer within bounds."""
        value = self._get(key, default)
        if value is default and default is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, f"must be an integer, got {value!r}")
        self._bounds(key, value, minimum, maximum)
        return value

    def float(self, key: str, *, default: Any = _MISSING, minimum: float | None = None, maximum: float | None = None) -> Any:
        """A finite number within bounds (integers accepted)."""
        value = self._get(key, default)
        if value is default and default is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise self.error(key, f"must be a finite number, got {value!r}")
        self._bounds(key, value, minimum, maximum)
        return float(value)

    def _bounds(self, key: str, value: float, minimum: float | None, maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be <= {maximum}, got {value}")

    def str_list(self, key: str, *, default: Any = _MISSING) -> list[str]:
        """A list of strings."""
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "must be a list of strings")
        return list(value)

    def addresses(self, key: str, *, production: bool, default: Any = _MISSING, listen: bool = False) -> list[str]:
        """A list of transport URIs, checked (test schemes refused in production)."""
        values = self.str_list(key, default=default)
        for value in values:
            try:
                parse_transport_address(value, production=production, allow_port_zero=listen)
            except TransportAddressError as exc:
                raise self.error(key, str(exc)) from None
        return values

    def address(self, key: str, *, production: bool) -> str:
        """One transport URI, checked (test schemes refused in production)."""
        value = self.str(key)
        try:
            parse_transport_address(value, production=production)
        except TransportAddressError as exc:
            raise self.error(key, str(exc)) from None
        return value

    def public_key(self, key: str) -> bytes:
        """A 32-byte public key written in base64."""
        text = self.str(key)
        try:
            data = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise self.error(key, "is not valid base64") from None
        if len(data) != 32:
            raise self.error(key, f"must decode to 32 bytes, got {len(data)}")
        return data

    def path_value(self, key: str, *, base: Path, default: Any = _MISSING) -> Path:
        """A filesystem path; relative paths are taken relative to ``base`` (the config's folder)."""
        value = self.str(key, default=default)
        if value is None:
            return None  # type: ignore[return-value]
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path)

    def finish(self) -> None:
        """Refuse keys nobody read (typos), in this table and every sub-table read from it."""
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise ConfigError(
                f"{self.path}: unknown key{'s' if len(unknown) > 1 else ''} "
                + ", ".join(self._key(k) for k in unknown)
            )
        for child in self._children:
            child.finish()
