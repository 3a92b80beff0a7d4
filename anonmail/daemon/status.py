"""Status files: how a running daemon tells its ``status`` command what it is doing.

A daemon (mix node, authority, provider, agent) rewrites ``status.json`` in its data directory
every second, atomically (write a temporary file, then rename), mode 0600, with ``running``,
``pid`` and ``updated_at``. A reader decides whether the daemon is alive from all three: a clean
stop writes ``running: false``; a crash leaves a file that ages and a PID that is gone.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from anonmail.errors import StoreError

__all__ = ["STATUS_FILE", "STALE_SECONDS", "write_status", "read_status", "pid_alive", "liveness"]

STATUS_FILE = "status.json"
#: A status file older than this means the node is not running (it rewrites it every second).
STALE_SECONDS = 5.0


def write_status(data_dir: Path, status: dict) -> None:
    """Replace the status file atomically, readable by its owner only (OSError is the caller's to log)."""
    path = data_dir / STATUS_FILE
    tmp = path.with_name(f".{STATUS_FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # a temporary file left by an older version may be 0644
        fh.write(json.dumps(status, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_status(data_dir: Path) -> dict:
    """The status a node last wrote; StoreError saying so if there is none or it is unreadable."""
    path = data_dir / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"no status file at {path}: has this node ever run?") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None


def pid_alive(pid: object) -> bool:
    """Whether a process with this PID runs: it exists (signal 0) and is not a zombie.

    A zombie has exited and waits only for its parent to collect the exit status, so it counts
    as gone: a crashed daemon whose parent has not reaped it is not running. The zombie state is
    read from ``/proc`` where there is one.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")  # exited since the signal, unless there is no /proc
    except (OSError, IndexError):
        return True
    return state != "Z"


def liveness(status: dict, now: float | None = None) -> tuple[bool, float]:
    """``(running, age_seconds)`` of a status read from a file."""
    age = (time.time() if now is None else now) - float(status.get("updated_at", 0))
    running = bool(status.get("running")) and age <= STALE_SECONDS and pid_alive(status.get("pid"))
    return running, age
