"""The sans-IO core imports no I/O library (docs/design.md, "Layers")."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

FORBIDDEN = ["anyio", "trio", "asyncio", "socket", "stem", "i2plib", "sqlite_utils", "sqlite3", "sphinxmix", "petlib"]


def test_core_imports_no_io_library():
    code = (
        "import sys\n"
        "import anonmail.core.sphinx, anonmail.core.fragments, anonmail.core.keys,"
        " anonmail.core.address, anonmail.core.wire, anonmail.core.sizes\n"
        f"print([m for m in {FORBIDDEN!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_is_exported():
    import anonmail.core.address as address
    import anonmail.core.fragments as fragments
    import anonmail.core.keys as keys
    import anonmail.core.sphinx as sphinx
    import anonmail.core.wire as wire
    import anonmail.errors as errors

    for module in (address, fragments, keys, sphinx, wire, errors):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
        assert len(set(module.__all__)) == len(module.__all__)
