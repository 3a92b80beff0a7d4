"""The fuzz target registry and the property every target shares.

A target is a function ``fn(data: bytes) -> None`` that feeds ``data`` to one parser and asserts
what must hold for what the parser accepted (typically: encoding it again and decoding gives the
same value). :func:`run_input` adds the property every parser of outside bytes must have: the
only exceptions that may escape are the target's ``allowed`` anonmail errors (default: any
:class:`~anonmail.errors.AnonmailError`). Anything else (an AssertionError from the target, a
ValueError, a RecursionError...) is a finding: atheris reports it as a crash and saves the input.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from anonmail.errors import AnonmailError

__all__ = ["Target", "TARGETS", "target", "run_input", "load_targets", "CORPUS_DIR", "corpus_files"]

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


@dataclass(frozen=True)
class Target:
    """One registered target: its function, what may escape it, its seeds and input size bound."""

    name: str
    fn: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...] = (AnonmailError,)
    seeds: Callable[[], Iterable[bytes]] = field(default=lambda: [b""])
    max_len: int = 4096


TARGETS: dict[str, Target] = {}


def target(name: str, *, allowed: tuple[type[BaseException], ...] = (AnonmailError,),
           seeds: Callable[[], Iterable[bytes]] | None = None, max_len: int = 4096):
    """Register ``fn`` as fuzz target ``name`` (a decorator)."""
    def register(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
        if name in TARGETS:
            raise ValueError(f"fuzz target {name!r} is registered twice")
        TARGETS[name] = Target(name, fn, allowed, seeds or (lambda: [b""]), max_len)
        return fn
    return register


def run_input(name: str, data: bytes) -> None:
    """Run one input through a target; raise whatever breaks the target's properties."""
    entry = TARGETS[name]
    try:
        entry.fn(data)
    except entry.allowed:
        pass


def load_targets() -> dict[str, Target]:
    """Import every module of ``fuzz.targets`` (each registers its targets) and return them all."""
    import fuzz.targets as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"fuzz.targets.{info.name}")
    return TARGETS


def corpus_files(name: str) -> list[Path]:
    """The committed corpus of a target, sorted."""
    folder = CORPUS_DIR / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def write_seed(name: str, data: bytes) -> Path:
    """Store one input in a target's committed corpus, named by its SHA-1 (as libFuzzer does)."""
    folder = CORPUS_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / hashlib.sha1(data).hexdigest()
    path.write_bytes(data)
    return path
