"""sphinxmix's petlib next to msgpack >= 1 (which Dask's ``distributed`` needs).

petlib calls ``msgpack.unpackb(..., encoding="utf-8")``, an argument msgpack 1.0 removed when it
made UTF-8 decoding of strings the default: :func:`petlib_msgpack_compat` gives petlib a msgpack
that accepts and drops it. Only the sphinxmix reference (compatibility tests, bench) needs this.
"""

from __future__ import annotations

from typing import Any

__all__ = ["petlib_msgpack_compat"]


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
