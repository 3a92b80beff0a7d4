"""The processes of a testnet and its state file: start commands, logs, liveness, the record on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from anonmail.errors import TestnetError
from anonmail.testnet.plan import NodeSpec

__all__ = [
    "STATE_FILE",
    "NodeProcess",
    "executable",
    "read_json",
    "log_tail",
    "check_fresh_directory",
    "read_state",
    "child_env",
    "run_command",
    "process_ready",
    "COMMAND_TIMEOUT",
]

#: The testnet's own record of its processes, in its directory.
STATE_FILE = "testnet.json"
#: Seconds for one init/contact command (registration goes over Tor/I2P).
COMMAND_TIMEOUT = 180.0


def executable(name: str) -> str:
    """The path of a console script (``mixnode``, ``anonmail``) of this environment, else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise TestnetError(f"{name!r} is not installed in this environment (run `make bootstrap`)")
    return found


def child_env() -> dict[str, str]:
    """The environment of a testnet's processes: unbuffered output, none of the caller's anonmail home."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", MALLOC_ARENA_MAX="2")
    env.pop("ANONMAIL_HOME", None)
    env.pop("ANONMAIL_PASSPHRASE", None)
    return env


def run_command(argv: list[str], what: str, *, input_text: str | None = None) -> str:
    """Run an operator command (``init``, ``contact add``...) to its end; its stdout, or TestnetError naming ``what``."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              input=input_text, env=child_env())
    except subprocess.TimeoutExpired:
        raise TestnetError(f"{what}: no answer within {COMMAND_TIMEOUT:.0f} s ({' '.join(argv[:3])} ...)") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise TestnetError(f"{what} failed (exit {done.returncode}): {' / '.join(detail)}")
    return done.stdout


def read_json(path: Path) -> dict | None:
    """A JSON file's object, or None when it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def log_tail(path: Path, lines: int = 6, sep: str = "\n    ") -> str:
    """The last lines of a process log, for error messages."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return sep.join(text[-lines:]) or "(empty log)"


@dataclass
class NodeProcess:
    """One process of the testnet: its plan entry, data directory, command line, log and Popen."""

    spec: NodeSpec
    dir: Path
    command: list[str]
    log: Path
    popen: subprocess.Popen | None = None
    starts: int = 0

    @property
    def pid(self) -> int | None:
        """The PID of the last start (None if never started)."""
        return self.popen.pid if self.popen is not None else None

    @property
    def alive(self) -> bool:
        """Whether the last start is still running (our child, so polled rather than signalled)."""
        return self.popen is not None and self.popen.poll() is None

    def status(self) -> dict | None:
        """The process's own ``status.json`` (None while missing or half-written)."""
        return read_json(self.dir / "status.json")


def process_ready(proc: NodeProcess, *, consensus: bool) -> bool:
    """Whether a process's own status file says it serves (agents: is connected); optionally in the consensus."""
    status = proc.status()
    if not status or status.get("pid") != proc.pid or not status.get("running", True):
        return False
    if proc.spec.role == "agent":  # ready for mail once its session with the provider is up
        return bool(status.get("connected"))
    if len(status.get("addresses") or []) < len(proc.spec.serves):
        return False
    return not consensus or proc.spec.role == "authority" or bool(status.get("in_consensus"))


def check_fresh_directory(directory: Path) -> None:
    """Refuse a directory that holds an earlier testnet's nodes (their keys would clash)."""
    used = [name for name in ("authorities", "mixes", "providers", "users", "tor", "i2p")
            if (Path(directory) / name).exists()]
    if used:
        raise TestnetError(f"{directory} holds an earlier testnet ({', '.join(used)}/): remove it or choose "
                           f"another --dir")


def read_state(directory: Path) -> dict | None:
    """The testnet record in ``directory`` (None if there is none)."""
    return read_json(Path(directory) / STATE_FILE)
