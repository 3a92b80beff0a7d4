"""The simulator drives the sans-IO core only (docs/design.md, "Layers"): no transport or storage library."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

FORBIDDEN = ["anyio", "trio", "asyncio", "stem", "i2plib", "sqlite_utils", "sqlite3", "mixnode", "anonmail.net"]


def loaded(modules: str, names: list[str]) -> str:
    code = f"import sys\nimport {modules}\nprint([m for m in {names!r} if m in sys.modules])\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_simulator_imports_no_io_library():
    # The engine itself does not even load sockets (the sweep's process pool does, via multiprocessing).
    assert loaded("simulations.engine, simulations.adversary, simulations.crypto, simulations.metrics",
                  [*FORBIDDEN, "socket"]) == "[]"
    assert loaded("simulations.sweep, simulations.__main__", FORBIDDEN) == "[]"
