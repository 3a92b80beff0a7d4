"""What every anonmail command line shares: the error wrapper, the exit codes and argument types.

``anonmail``, ``mixnode`` and their subcommands all run their handlers through
:func:`run_command`, so every command keeps one contract (also in README.md, "Exit codes"):

====  =======================================================================
code  meaning
====  =======================================================================
0     done (``status``: the daemon runs)
1     an error, said in one line on stderr (``--debug`` shows the traceback)
2     a usage error (argparse: unknown option, bad value)
3     ``status`` only: the daemon is not running (never started, stopped or crashed)
130   interrupted (^C)
====  =======================================================================
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from collections.abc import Callable, Mapping, Sequence

from anonmail.core.uri import parse_transport_address
from anonmail.errors import AnonmailError

__all__ = [
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_NOT_RUNNING",
    "EXIT_INTERRUPTED",
    "run_command",
    "dispatch",
    "non_negative_float",
    "non_negative_int",
    "positive_int",
    "positive_float",
    "probability",
    "parse_public_key",
    "address_key_arg",
]

EXIT_OK = 0
EXIT_ERROR = 1
#: What argparse exits with on a usage error (and ``main`` without a command).
EXIT_USAGE = 2
#: Exit code of every ``status`` command when the daemon is not running.
EXIT_NOT_RUNNING = 3
EXIT_INTERRUPTED = 130


def run_command(prog: str, handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand: errors become one line on stderr (traceback with --debug), ^C exits 130."""
    try:
        return handler(args)
    except AnonmailError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:
        # Errors raised inside task groups arrive wrapped; show ours as plain one-liners.
        leaves = _leaves(group)
        if getattr(args, "debug", False) or not all(isinstance(e, AnonmailError) for e in leaves):
            raise
        for error in leaves:
            print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_ERROR


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


# --------------------------------------------------------------------------- argument types


def _parse_number(text: str, kind: type, name: str) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {name}: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """Argparse type: a finite number >= 0."""
    return float(_parse_number(text, float, "a number"))


def non_negative_int(text: str) -> int:
    """Argparse type: an integer >= 0."""
    return int(_parse_number(text, int, "an integer"))


def positive_int(text: str) -> int:
    """Argparse type: an integer >= 1."""
    value = _parse_number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return int(value)


def probability(text: str) -> float:
    """Argparse type: a probability in [0, 1)."""
    value = _parse_number(text, float, "a number")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return float(value)


def positive_float(text: str) -> float:
    """Argparse type: a finite number > 0."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def parse_public_key(text: str) -> bytes:
    """A 32-byte Ed25519 public key from base64; ValueError saying what is wrong."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public key is not valid base64") from None
    if len(key) != 32:
        raise ValueError(f"public key must be 32 bytes, got {len(key)}")
    return key


def address_key_arg(text: str) -> tuple[str, str]:
    """Parse ``ADDRESS=PUBKEY`` (argparse type); the base64 key is the last 44 characters (it may end in '=')."""
    if len(text) < 46 or text[-45] != "=":
        raise argparse.ArgumentTypeError(f"expected ADDRESS=PUBLIC_KEY (base64, 44 characters), got {text!r}")
    address, key = text[:-45], text[-44:]
    try:
        parse_public_key(key)
        parse_transport_address(address)
    except ValueError as exc:  # TransportAddressError is a ValueError too
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return address, key


def dispatch(
    prog: str,
    parser: argparse.ArgumentParser,
    handlers: Mapping[str, Callable[[argparse.Namespace], int]],
    argv: Sequence[str] | None = None,
) -> int:
    """A console script's ``main``: parse ``argv``, run the chosen command through :func:`run_command`.

    Without a command it prints the help on stderr and exits 2 (a usage error).
    """
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return run_command(prog, handlers[args.command], args)
