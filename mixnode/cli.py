"""The ``mixnode`` command line (the node itself arrives with the mix node issue)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mixnode import __version__

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mixnode`` console script."""
    parser = argparse.ArgumentParser(prog="mixnode", description="anonmail mix node and directory authority")
    parser.add_argument("--version", action="version", version=f"mixnode {__version__}")
    parser.parse_args(argv)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
