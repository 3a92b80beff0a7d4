"""Editing a commented TOML config the way an operator does: set some keys, keep everything else.

Written here because tomllib only reads and a plain TOML writer (tomli-w) would drop the comments
the ``init`` commands write to explain each key; tomlkit would keep them but is not a dependency,
and the test networks need only this one edit.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from anonmail.errors import TestnetError

__all__ = ["set_toml_keys"]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"no TOML rendering for {value!r}")


_KEY_LINE = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")
_HEADER = re.compile(r"^\s*\[")


def set_toml_keys(path: Path, table: str | None, values: dict[str, Any]) -> None:
    """Set keys in one table of a commented config file (``None``: top level), keeping the rest.

    This is the edit an operator makes by hand (say, pointing ``[tor]`` at another control
    port); the daemon validates the result when it starts.
    """
    lines = path.read_text().splitlines()
    if table is None:
        start = -1
        end = next((i for i, line in enumerate(lines) if _HEADER.match(line)), len(lines))
    else:
        header = re.compile(r"^\s*\[\s*" + re.escape(table) + r"\s*\]")
        start = next((i for i, line in enumerate(lines) if header.match(line)), None)
        if start is None:
            lines += ["", f"[{table}]"]
            start = len(lines) - 1
        end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
    body: list[str] = []
    depth = 0  # open brackets of a multi-line array being removed
    for line in lines[start + 1:end]:
        value = line.split("#", 1)[0]
        if depth > 0:
            depth += value.count("[") - value.count("]")
            continue
        match = _KEY_LINE.match(line)
        if match is None or match.group(1) not in values:
            body.append(line)
            continue
        if '"""' in value or "'''" in value:
            raise TestnetError(f"{path}: {match.group(1)} is a multi-line string; edit it by hand")
        depth = value.count("[") - value.count("]")
    new = [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    if table is None:  # after the file's own top-level lines, before the first table
        while body and not body[-1].strip():
            body.pop()
        lines[start + 1:end] = body + new + [""]
    else:
        lines[start + 1:end] = new + body
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
