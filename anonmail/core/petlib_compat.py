"""sphinxmix's petlib next to msgpack >= 1 (which Dask's ``distributed`` needs).

petlib calls ``msgpack.unpackb(..., encoding="utf-8")``, an argument msgpack 1.0 removed when it
made UTF-8 decoding of strings the default: :func:`petlib_msgpack_compat` gives petlib a msgpack
that accepts and drops it. Only the sphinxmix reference (compatibility tests, bench) needs this;
:func:`reference_params` gives that reference the parameters of :mod:`anonmail.core.sphinx`.
"""

from __future__ import annotations

from typing import Any

from anonmail.core import sphinx
from anonmail.core.sizes import BODY_BYTES, SPHINX_MAX_LEN

__all__ = ["petlib_msgpack_compat", "reference_params"]


def petlib_msgpack_compat() -> None:
    """Let petlib (under sphinxmix) decode with msgpack >= 1; a no-op with msgpack < 1."""
    import msgpack
    import petlib.pack

    if getattr(msgpack, "version", (0,)) < (1,) or isinstance(petlib.pack.msgpack, _MsgpackCompat):
        return
    petlib.pack.msgpack = _MsgpackCompat(msgpack)


class _MsgpackCompat:
    """msgpack as petlib expects it: ``unpackb`` accepts and drops ``encoding="utf-8"``."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def unpackb(self, packed: bytes, *, encoding: str | None = None, **kwargs: Any) -> Any:
        if encoding not in (None, "utf-8"):
            raise ValueError(f"msgpack >= 1 decodes strings as UTF-8 only, not {encoding}")
        return self._module.unpackb(packed, raw=False, **kwargs)


def reference_params() -> Any:
    """Return sphinxmix ``SphinxParams`` matching anonmail.core.sphinx (for compatibility tests and bench).

    Imports sphinxmix (and petlib) lazily: the hot path never needs them.
    """
    petlib_msgpack_compat()
    from sphinxmix.SphinxParams import SphinxParams
    from sphinxmix.SphinxParamsC25519 import Group_C25519

    class Group(Group_C25519):
        """sphinxmix's Curve25519 group with a well-defined 32-byte blinding scalar."""

        def makeexp(self, data: bytes) -> bytes:
            return sphinx._blinding(bytes(data[:16]))

    return SphinxParams(group=Group(), header_len=SPHINX_MAX_LEN, body_len=BODY_BYTES)

