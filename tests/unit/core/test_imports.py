"""The sans-IO core imports no I/O library (docs/design.md, "Layers"), and every module's ``__all__`` is true."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import anonmail.core

pytestmark = pytest.mark.unit

FORBIDDEN = ["anyio", "trio", "asyncio", "socket", "stem", "i2plib", "sqlite_utils", "sqlite3", "sphinxmix", "petlib"]

#: Every module of anonmail.core, found on disk, so a new module is checked without editing this test.
CORE_MODULES = sorted(f"anonmail.core.{m.name}" for m in pkgutil.iter_modules(anonmail.core.__path__))


def test_the_core_has_the_modules_we_expect():
    # Guards the enumeration itself: an empty list would make the checks below pass vacuously.
    assert {"anonmail.core.sphinx", "anonmail.core.wire", "anonmail.core.pki", "anonmail.core.mailproto"} <= set(
        CORE_MODULES
    )


def test_core_imports_no_io_library():
    code = (
        "import sys\n"
        f"import {', '.join(CORE_MODULES)}\n"
        f"print([m for m in {FORBIDDEN!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_check_sees_an_io_import():
    # The same probe reports a forbidden module once something loads it, so the test above can fail.
    code = f"import sys, sqlite3\nimport {CORE_MODULES[0]}\nprint([m for m in {FORBIDDEN!r} if m in sys.modules])\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['sqlite3']"


@pytest.mark.parametrize("name", [*CORE_MODULES, "anonmail.errors"])
def test_every_public_name_is_exported(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"
    assert len(set(exported)) == len(exported)
