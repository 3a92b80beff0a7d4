"""A tor process started for one node: torrc, start and stop by PID, leftovers killed at exit."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path

import anyio

from anonmail.errors import TorError

__all__ = ["start_tor_process", "stop_tor_process", "launch_torrc_lines", "await_control_port_file", "log_tail"]

_LAUNCHED: set[subprocess.Popen] = set()
_LAUNCHED_LOCK = threading.Lock()


def _kill_leftovers() -> None:
    with _LAUNCHED_LOCK:
        procs = list(_LAUNCHED)
    for proc in procs:
        stop_tor_process(proc, grace=2.0)


atexit.register(_kill_leftovers)


def start_tor_process(binary: str, torrc: Path, *, stderr_path: Path) -> subprocess.Popen:
    """Start ``tor -f torrc`` in its own session; the PID is remembered until it is stopped.

    Raises TorError when the binary cannot be executed. Leftovers are killed at interpreter
    exit (atexit), so an interrupted run does not leave tor processes behind.
    """
    exe = shutil.which(binary) or binary
    env = dict(os.environ, MALLOC_ARENA_MAX="1")
    try:
        with open(stderr_path, "ab") as err:
            proc = subprocess.Popen(
                [exe, "-f", str(torrc), "--defaults-torrc", "/nonexistent", "--quiet"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=env, start_new_session=True, close_fds=True,
            )
    except OSError as exc:
        raise TorError(f"cannot start tor ({binary!r}): {exc.strerror or exc}; is tor installed?") from exc
    with _LAUNCHED_LOCK:
        _LAUNCHED.add(proc)
    return proc


def stop_tor_process(proc: subprocess.Popen, *, grace: float = 5.0) -> None:
    """Stop a tor we started, by its PID: SIGTERM, then SIGKILL after ``grace`` seconds."""
    try:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace)
            except ProcessLookupError:
                pass
    finally:
        with _LAUNCHED_LOCK:
            _LAUNCHED.discard(proc)


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a tor log joined by `` | `` for an error message; "" if there is none."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])



def launch_torrc_lines(tor_dir: Path, extra: Iterable[str] = ()) -> list[str]:
    """torrc for a tor launched for one node: loopback-only control and SOCKS ports, cookie auth."""
    return [
        f"DataDirectory {tor_dir}",
        "ControlPort 127.0.0.1:auto",
        f"ControlPortWriteToFile {tor_dir / 'control_port'}",
        "CookieAuthentication 1",
        "SocksPort 127.0.0.1:auto ExtendedErrors",
        f"Log notice file {tor_dir / 'notice.log'}",
        f"PidFile {tor_dir / 'tor.pid'}",
        "RunAsDaemon 0",
        *extra,
    ]


async def await_control_port_file(port_file: Path, proc: subprocess.Popen, tor_dir: Path) -> int:
    """Wait until a launched tor writes its control port file; TorError if tor exits first."""
    while True:
        if proc.poll() is not None:
            detail = log_tail(tor_dir / "stderr.log") or log_tail(tor_dir / "notice.log")
            raise TorError(f"the tor launched in {tor_dir} exited with status {proc.returncode}: {detail}")
        try:
            text = port_file.read_text().strip()
        except FileNotFoundError:
            text = ""
        match = re.fullmatch(r"PORT=127\.0\.0\.1:(\d+)", text)
        if match:
            return int(match.group(1))
        await anyio.sleep(0.05)
