"""mixnode: the anonmail mix node and directory authority services."""

from anonmail import __version__

__all__ = ["__version__"]
