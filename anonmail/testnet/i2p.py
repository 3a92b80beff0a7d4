"""A private I2P network of i2pd routers on 127.0.0.1 (``anonmail testnet i2p-check`` is in :mod:`.checks`).

:class:`I2PNetwork` starts N routers (all floodfill, own ``netid``, 1-hop exploratory tunnels,
no reseed servers, no outside peers) in two phases: every router starts once to write its
``router.info``; they are stopped, the infos are zipped into ``seed.zip``, and all start again
reseeding from that file. Readiness is detected (each router's SAM bridge answers HELLO and its
web console counts the other routers), not guessed. :meth:`I2PNetwork.stop` ends every process
it started by PID with SIGTERM (SIGKILL after a grace period; never SIGINT, which makes i2pd wait
up to ten minutes), also when start-up fails or is interrupted.

Debian 12's i2pd 2.45.1 drops peers on 127.0.0.0/8, so the network needs i2pd >= 2.51:
:func:`find_i2pd` takes the build ``scripts/bootstrap.sh`` caches under
``${XDG_CACHE_HOME:-~/.cache}/anonmail/i2pd-<version>/i2pd``, or a system i2pd that is new
enough, and otherwise raises :class:`~anonmail.errors.TestnetError` saying to run
``make bootstrap``. The network is synchronous (plain processes and polling) so that it can
serve as a session-scoped pytest fixture and from the CLI alike.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from anonmail.errors import TestnetError

__all__ = [
    "MIN_I2PD_VERSION",
    "I2PNetwork",
    "I2PRouter",
    "find_i2pd",
    "i2pd_version",
    "parse_i2pd_version",
    "i2pd_cache_dir",
]

Progress = Callable[[str], None]

#: First i2pd release that accepts peers on 127.0.0.0/8 (needed for a loopback network).
MIN_I2PD_VERSION = (2, 51, 0)
#: Our private network's id (the real network is 2).
DEFAULT_NETID = 77
#: Longest wait for a router to write router.info / answer on SAM / know its peers.
ROUTER_START_TIMEOUT = 60.0
NETWORK_READY_TIMEOUT = 120.0
STOP_GRACE = 5.0
POLL_INTERVAL = 0.2

_SYSTEM_I2PD = "/usr/sbin/i2pd"
_VERSION_RE = re.compile(r"i2pd version (\d+)\.(\d+)\.(\d+)")
_ROUTERS_RE = re.compile(r"Routers:\s*(?:</b>)?\s*(\d+)")


def parse_i2pd_version(text: str) -> tuple[int, int, int] | None:
    """The version in ``i2pd --version`` output, or None if it is not there."""
    match = _VERSION_RE.search(text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def i2pd_version(binary: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """Run ``binary --version``; None if it does not run or print an i2pd version."""
    try:
        out = subprocess.run([os.fspath(binary), "--version"], capture_output=True, text=True,
                             timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_i2pd_version(out.stdout + out.stderr)


def i2pd_cache_dir() -> Path:
    """Where scripts/bootstrap.sh keeps its i2pd builds (outside the repository)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anonmail"


def format_version(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def find_i2pd() -> tuple[Path, tuple[int, int, int]]:
    """A usable i2pd (>= 2.51) and its version: ANONMAIL_I2PD, the cached build, or the system one."""
    candidates: list[Path] = []
    if os.environ.get("ANONMAIL_I2PD"):
        candidates.append(Path(os.environ["ANONMAIL_I2PD"]))
    cached = sorted(i2pd_cache_dir().glob("i2pd-*/i2pd"), reverse=True,
                    key=lambda p: parse_i2pd_version(f"i2pd version {p.parent.name[5:]}") or (0, 0, 0))
    candidates += cached
    system = shutil.which("i2pd")
    candidates += [Path(p) for p in (system, _SYSTEM_I2PD) if p]
    seen: list[str] = []
    for path in candidates:
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        version = i2pd_version(path)
        seen.append(f"{path} ({format_version(version) if version else 'does not run'})")
        if version and version >= MIN_I2PD_VERSION:
            return path, version
    found = "; found: " + ", ".join(seen) if seen else "; found none"
    raise TestnetError(
        f"a private I2P network needs i2pd >= {format_version(MIN_I2PD_VERSION)} (older ones drop peers on "
        f"127.0.0.1){found}. Run `make bootstrap` (as root, it builds i2pd from Debian trixie's "
        f"source into {i2pd_cache_dir()}), or point ANONMAIL_I2PD at an i2pd >= {format_version(MIN_I2PD_VERSION)}."
    )


def _port_free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _allocate_ports(count: int) -> int:
    """A base port with 10 free TCP+UDP ports per router above it."""
    import random

    rng = random.SystemRandom()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - 10 * count, 10)
        ports = range(base, base + 10 * count)
        if all(_port_free(p, socket.SOCK_STREAM) and _port_free(p, socket.SOCK_DGRAM) for p in ports):
            return base
    raise TestnetError(f"no block of {10 * count} free ports on 127.0.0.1 for the I2P routers")


@dataclass
class I2PRouter:
    """One i2pd router of the network: its folder, ports and (while running) process."""

    index: int
    dir: Path
    port: int
    http_port: int
    sam_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        """The running process's id."""
        return self.process.pid if self.process and self.process.poll() is None else None

    def log_tail(self, lines: int = 8) -> str:
        """The last lines of this router's log, for error messages."""
        try:
            text = (self.dir / "i2pd.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _router_conf(router: I2PRouter, netid: int, seed_zip: Path) -> str:
    d = router.dir
    return f"""\
log = file
logfile = {d}/i2pd.log
loglevel = warn
pidfile = {d}/i2pd.pid
tunconf = {d}/tunnels.conf
tunnelsdir = {d}/tunnels.d
certsdir = {d}/certificates
daemon = false
netid = {netid}
ipv4 = true
ipv6 = false
host = 127.0.0.1
address4 = 127.0.0.1
nat = false
reservedrange = false
port = {router.port}
floodfill = true
bandwidth = X
notransit = false

[ntcp2]
enabled = true
published = true
port = {router.port}

[ssu2]
enabled = true
published = true
port = {router.port}

[http]
enabled = true
address = 127.0.0.1
port = {router.http_port}
strictheaders = false

[httpproxy]
enabled = false
[socksproxy]
enabled = false
[bob]
enabled = false
[i2cp]
enabled = false
[i2pcontrol]
enabled = false
[upnp]
enabled = false

[sam]
enabled = true
address = 127.0.0.1
port = {router.sam_port}
portudp = {router.sam_port - 1}

[reseed]
verify = false
threshold = 0
urls =
yggurls =
zipfile = {seed_zip}

[addressbook]
enabled = false

[nettime]
enabled = false

[shareddest]
inbound.length = 1
inbound.quantity = 1
outbound.length = 1
outbound.quantity = 1

[exploratory]
inbound.length = 1
outbound.length = 1
inbound.quantity = 2
outbound.quantity = 2
"""


_LIVE: set[int] = set()  # PIDs of routers started by this process and not yet reaped


@atexit.register
def _kill_leftovers() -> None:
    for pid in list(_LIVE):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class I2PNetwork:
    """N i2pd routers on 127.0.0.1 forming a private I2P network; a (sync) context manager.

    ``with I2PNetwork(3) as net:`` starts it and waits until it is usable;
    :meth:`settings` gives the :class:`~anonmail.net.i2p.I2PSettings` for a router's SAM bridge.
    """

    def __init__(self, routers: int = 3, *, base_dir: str | os.PathLike[str] | None = None,
                 binary: str | os.PathLike[str] | None = None, netid: int = DEFAULT_NETID,
                 progress: Progress | None = None) -> None:
        if routers < 2:
            raise TestnetError(f"a private I2P network needs at least 2 routers, not {routers}")
        self.count = routers
        self.netid = netid
        self._progress = progress
        self._binary = Path(binary) if binary else None
        self._own_tmp: tempfile.TemporaryDirectory[str] | None = None
        self._base = Path(base_dir) if base_dir else None
        self.routers: list[I2PRouter] = []
        self.version: tuple[int, int, int] | None = None
        self.timings: dict[str, float] = {}

    def _say(self, text: str) -> None:
        if self._progress:
            self._progress(text)

    @property
    def seed_zip(self) -> Path:
        """The reseed file built from the routers' own router.info files."""
        assert self._base is not None
        return self._base / "seed.zip"

    def settings(self, index: int, **overrides: object):  # -> I2PSettings
        """SAM settings for router ``index`` (1-hop tunnels)."""
        from anonmail.net.i2p import I2PSettings

        return I2PSettings.for_testnet(self.routers[index].sam_port, **overrides)

    def __enter__(self) -> I2PNetwork:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bring the network up and wait until it is usable; on any failure stop what started."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        if self._binary is None:
            self._binary, self.version = find_i2pd()
        else:
            self.version = i2pd_version(self._binary)
        if self._base is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="anonmail-i2pnet-")
            self._base = Path(self._own_tmp.name)
        self._base.mkdir(parents=True, exist_ok=True)
        base_port = _allocate_ports(self.count)
        self.routers = []
        for i in range(self.count):
            d = self._base / f"router{i}"
            (d / "tunnels.d").mkdir(parents=True, exist_ok=True)
            (d / "certificates").mkdir(exist_ok=True)
            (d / "tunnels.conf").touch()
            p = base_port + 10 * i
            router = I2PRouter(i, d, port=p, http_port=p + 2, sam_port=p + 6)
            (d / "i2pd.conf").write_text(_router_conf(router, self.netid, self.seed_zip))
            self.routers.append(router)

        t0 = time.monotonic()
        self._say(f"i2p: starting {self.count} i2pd {format_version(self.version or (0, 0, 0))} routers "
                  f"({self._binary}) in {self._base}")
        for router in self.routers:
            self._spawn(router)
        self._wait_all(lambda r: (r.dir / "router.info").is_file(), "write its router.info",
                       ROUTER_START_TIMEOUT)
        self._stop_processes()
        with zipfile.ZipFile(self.seed_zip, "w") as zf:
            for router in self.routers:
                zf.write(router.dir / "router.info", f"routerInfo-{router.index}.dat")
        self.timings["seed_s"] = time.monotonic() - t0
        self._say(f"i2p: phase 1 done, seed.zip holds {self.count} router infos ({self.timings['seed_s']:.1f} s)")

        t1 = time.monotonic()
        for router in self.routers:
            self._spawn(router)
        self._wait_all(_sam_answers, "answer on its SAM bridge", ROUTER_START_TIMEOUT)
        self._wait_all(lambda r: _known_routers(r) >= self.count - 1, f"know the other {self.count - 1} routers",
                       NETWORK_READY_TIMEOUT)
        self.timings["ready_s"] = time.monotonic() - t1
        self._say(f"i2p: phase 2 done, every router knows its peers ({self.timings['ready_s']:.1f} s)")

    def _spawn(self, router: I2PRouter) -> None:
        assert self._binary is not None
        stderr = open(router.dir / "stderr.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            router.process = subprocess.Popen(
                [os.fspath(self._binary), "--conf", os.fspath(router.dir / "i2pd.conf"),
                 "--datadir", os.fspath(router.dir)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                start_new_session=True,  # a Ctrl-C in the terminal must not SIGINT the routers
            )
        finally:
            stderr.close()
        _LIVE.add(router.process.pid)

    def _wait_all(self, ready: Callable[[I2PRouter], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.routers)
        while pending:
            for router in list(pending):
                if router.process is not None and router.process.poll() is not None:
                    raise TestnetError(
                        f"i2pd router {router.index} exited with code {router.process.returncode} before it "
                        f"could {what}; log {router.dir / 'i2pd.log'} ends:\n{router.log_tail()}")
                if ready(router):
                    pending.remove(router)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(str(r.index) for r in pending)
                raise TestnetError(f"i2pd router(s) {names} did not {what} within {timeout:g} s; "
                                   f"see {pending[0].dir / 'i2pd.log'}")
            time.sleep(POLL_INTERVAL)

    def _stop_processes(self) -> None:
        procs = [r.process for r in self.routers if r.process is not None]
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.monotonic() + STOP_GRACE
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            _LIVE.discard(proc.pid)
        for router in self.routers:
            router.process = None

    def stop_router(self, index: int) -> None:
        """Stop one router (SIGTERM by PID, SIGKILL after the grace period); its folder stays."""
        router = self.routers[index]
        proc = router.process
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        _LIVE.discard(proc.pid)
        router.process = None

    def start_router(self, index: int, timeout: float = NETWORK_READY_TIMEOUT) -> None:
        """Start a stopped router again (same folder, config and ports); wait until it is usable."""
        router = self.routers[index]
        if router.pid is not None:
            raise TestnetError(f"i2pd router {index} is already running (PID {router.pid})")
        self._spawn(router)
        deadline = time.monotonic() + timeout
        for ready, what in ((_sam_answers, "answer on its SAM bridge"),
                            (lambda r: _known_routers(r) >= self.count - 1, f"know the other {self.count - 1} routers")):
            while not ready(router):
                if router.process is not None and router.process.poll() is not None:
                    raise TestnetError(f"i2pd router {index} exited with code {router.process.returncode} after a "
                                       f"restart; log {router.dir / 'i2pd.log'} ends:\n{router.log_tail()}")
                if time.monotonic() > deadline:
                    raise TestnetError(f"i2pd router {index} did not {what} within {timeout:g} s after a restart")
                time.sleep(POLL_INTERVAL)

    def revive(self) -> list[str]:
        """Restart every router that died or whose SAM bridge stopped answering; say what was done.

        Long test sessions share one network; an i2pd that crashed (or lost its SAM listener)
        would otherwise fail every later test with a misleading "no SAM bridge" error.
        """
        revived = []
        for router in self.routers:
            proc = router.process
            if proc is not None and proc.poll() is None and _sam_answers(router):
                continue
            if proc is None:
                continue  # stopped on purpose (stop_router); the caller restarts it
            what = (f"exited with code {proc.returncode}" if proc.poll() is not None
                    else "stopped answering on its SAM bridge")
            revived.append(f"i2pd router {router.index} {what}; restarted it. Log ends:\n{router.log_tail()}")
            self.stop_router(router.index)
            self.start_router(router.index)
        return revived

    def restart_router(self, index: int) -> None:
        """Stop one router by PID and start it again with the same folder and config."""
        self.stop_router(index)
        self.start_router(index)

    def stop(self) -> None:
        """Stop every router this network started (SIGTERM by PID, SIGKILL fallback); idempotent."""
        try:
            self._stop_processes()
        finally:
            if self._own_tmp is not None:
                self._own_tmp.cleanup()
                self._own_tmp = None

    @property
    def pids(self) -> list[int]:
        """PIDs of the routers that are running now."""
        return [pid for r in self.routers if (pid := r.pid) is not None]


def _sam_answers(router: I2PRouter) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", router.sam_port), timeout=2) as sock:
            sock.sendall(b"HELLO VERSION MIN=3.1 MAX=3.3\n")
            return sock.recv(256).startswith(b"HELLO REPLY RESULT=OK")
    except OSError:
        return False


def _known_routers(router: I2PRouter) -> int:
    """How many routers this router's web console says it knows (its own netdb, excluding itself)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{router.http_port}/", timeout=2) as resp:  # noqa: S310
            page = resp.read().decode("utf-8", "replace")
    except OSError:
        return -1
    match = _ROUTERS_RE.search(page)
    return int(match[1]) if match else -1
