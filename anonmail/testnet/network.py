"""A whole anonmail network on this machine, over a private Tor and/or I2P network.

:class:`Testnet` is what ``anonmail testnet up|status|down``, ``anonmail demo --network
tor|i2p|both`` and the fault tests run. Every anonmail node is a separate process, configured
through the files and commands an operator uses (``mixnode authority init``, ``mixnode init``,
``anonmail provider init``, ``anonmail init``, ``anonmail contact add``), then edited the way an
operator edits them to point at the private tor/i2pd (the ``[tor]``/``[i2p]`` tables). Each node
*serves* only onion and/or I2P addresses; with both networks, some nodes are reachable only over
Tor, some only over I2P and some over both (every process can *connect* over both).

Bring-up order (readiness detected from each process's ``status.json``, never guessed):

1. the private Tor network (1 authority + 4 relays) and two client tors, ``nodes`` (hosts every
   node's onion service) and ``users``; and/or the private I2P network (3 i2pd routers: nodes
   use the first two, users the last);
2. three directory authorities, started once to learn their onion/I2P addresses, then given
   each other as peers (``init --force`` keeps the key, so the addresses stay) and restarted;
3. mix nodes (``mixes_per_layer`` per layer, 3 layers) and providers, until every one of them is
   listed in a consensus signed by 2 of the 3 authorities (``bootstrap_nodes`` makes the first
   consensus wait for all of them);
4. users: ``anonmail init`` registers each at a provider, every user adds every other as a
   contact, then ``anonmail agent`` runs for each.

Everything lives under one directory; :data:`STATE_FILE` there lists every process (role,
what it serves, PID, log) for ``status`` and ``down``. Teardown stops every process by PID
(SIGTERM, then SIGKILL), also on exceptions and at interpreter exit.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anonmail.core.params import NetworkParams
from anonmail.daemon.status import pid_alive
from anonmail.daemon.logfmt import open_log_file
from anonmail.errors import TestnetError
from anonmail.testnet.addresses import create_addresses
from anonmail.testnet.plan import AUTHORITIES, LAYERS, THRESHOLD, NodeSpec, plan_nodes, published_params
from anonmail.testnet.processes import (
    STATE_FILE,
    NodeProcess,
    check_fresh_directory,
    child_env,
    executable,
    log_tail,
    process_ready,
    read_state,
    run_command,
)
from anonmail.testnet.tomledit import set_toml_keys

__all__ = ["Testnet"]

#: Seconds for a node process to publish its addresses (onion publication, I2P tunnels).
SERVE_TIMEOUT = 180.0
#: Seconds for every node to appear in a consensus once all are serving.
CONSENSUS_TIMEOUT = 180.0

Progress = Callable[[str], None] | None


@dataclass
class Testnet:
    """A whole anonmail network as separate processes over private Tor/I2P networks."""

    __test__ = False  # not a pytest test class, despite the name

    directory: Path
    tor: bool = True
    i2p: bool = False
    mixes_per_layer: int = 2
    providers: int = 2
    users: int = 2
    epoch_seconds: int = 3600
    progress: Progress = None
    #: Extra keys for every user's ``[agent]`` table (rates, delays) after ``anonmail init``.
    agent_settings: dict[str, Any] = field(default_factory=dict)
    #: Extra keys for every mix's and provider's config tables, as {table: {key: value}}.
    node_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Every authority's ``[params]`` (None: the defaults with the rates and delays of ``agent_settings``).
    params: NetworkParams | None = None
    _procs: dict[str, NodeProcess] = field(default_factory=dict, init=False)
    _tor_net: Any = field(default=None, init=False)
    _tor_clients: dict[str, Any] = field(default_factory=dict, init=False)
    _i2p_net: Any = field(default=None, init=False)
    _pins: list[tuple[str, str]] = field(default_factory=list, init=False)
    _node_keys: dict[str, str] = field(default_factory=dict, init=False)
    _addresses: dict[str, str] = field(default_factory=dict, init=False)
    _steps: list[dict] = field(default_factory=list, init=False)
    _phase: str = field(default="new", init=False)
    _error: str | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _t0: float = field(default_factory=time.monotonic, init=False)
    timings: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self.specs = plan_nodes(tor=self.tor, i2p=self.i2p, mixes_per_layer=self.mixes_per_layer,
                                providers=self.providers, users=self.users)
        self.passphrase = "testnet passphrase (not secret)"

    # -- lifecycle

    def __enter__(self) -> Testnet:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _say(self, text: str) -> None:
        with self._lock:
            self._steps.append({"t": round(time.monotonic() - self._t0, 1), "text": text})
        self._save_state()
        if self.progress is not None:
            self.progress(text)

    def up(self) -> Testnet:
        """Start everything and wait until mail can flow; on failure stop what was started."""
        if self._phase != "new":
            raise TestnetError("this testnet was already started")
        if (self.directory / STATE_FILE).exists():
            old = read_state(self.directory) or {}
            if old.get("phase") in ("starting", "ready") and pid_alive(old.get("supervisor_pid")):
                raise TestnetError(f"a testnet is already running in {self.directory}: "
                                   f"`anonmail testnet down --dir {self.directory}` first")
        check_fresh_directory(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self._phase = "starting"
        self._t0 = time.monotonic()
        atexit.register(self.down)
        try:
            self._up()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                self._error = "interrupted (SIGINT/SIGTERM) while coming up"
            else:
                self._error = str(exc) if isinstance(exc, TestnetError) else f"{type(exc).__name__}: {exc}"
            self._phase = "failed"
            self._save_state()
            self.down(final_phase="failed")
            raise
        self._phase = "ready"
        self.timings["bring_up_s"] = round(time.monotonic() - self._t0, 1)
        self._say(f"network ready in {self.timings['bring_up_s']:.1f} s")
        return self

    def _up(self) -> None:
        nets = [n for n, on in (("Tor", self.tor), ("I2P", self.i2p)) if on]
        count = {role: sum(1 for s in self.specs if s.role == role) for role in ("mix", "provider", "agent")}
        self._say(f"bringing up {' + '.join(nets)}: {AUTHORITIES} authorities, {count['mix']} mixes in "
                  f"{LAYERS} layers, {count['provider']} providers, {count['agent']} users")
        self._start_transports()
        self._start_authorities()
        self._start_nodes()
        self._start_users()

    def down(self, final_phase: str = "stopped") -> None:
        """Stop every process this testnet started (nodes first, then tor/i2pd), by PID."""
        atexit.unregister(self.down)
        procs = [p for p in self._procs.values() if p.alive]
        for proc in procs:
            try:
                proc.popen.terminate()
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=10)
        if self._tor_net is not None:
            self._tor_net.stop()
            self._tor_net = None
        if self._i2p_net is not None:
            self._i2p_net.stop()
            self._i2p_net = None
        if self._phase in ("starting", "ready"):
            self._phase = final_phase
        self._save_state()

    # -- state

    def state(self) -> dict:
        """What ``testnet status`` and ``testnet down`` read (no secrets)."""
        with self._lock:
            steps = list(self._steps)
        return {
            "version": 1,
            "phase": self._phase,
            "error": self._error,
            "directory": str(self.directory),
            "supervisor_pid": os.getpid(),
            "networks": [n for n, on in (("tor", self.tor), ("i2p", self.i2p)) if on],
            "timings": dict(self.timings),
            "steps": steps,
            "processes": [
                {"name": p.spec.name, "role": p.spec.role, "layer": p.spec.layer, "provider": p.spec.provider,
                 "serves": list(p.spec.serves), "pid": p.pid if p.alive else None, "dir": str(p.dir),
                 "log": str(p.log), "starts": p.starts}
                for p in self._procs.values()
            ],
            "daemons": self._daemon_pids(),
            "users": {name: address for name, address in self._addresses.items()},
        }

    def _daemon_pids(self) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {}
        if self._tor_net is not None:
            pids["tor"] = self._tor_net.pids
        if self._i2p_net is not None:
            pids["i2pd"] = self._i2p_net.pids
        return pids

    def _save_state(self) -> None:
        if not self.directory.exists():
            return
        path = self.directory / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.tmp")
        try:
            tmp.write_text(json.dumps(self.state(), indent=1))
            os.replace(tmp, path)
        except OSError:
            pass

    # -- transports

    def _start_transports(self) -> None:
        def tor() -> None:
            from anonmail.testnet.tor import TorNetwork

            t0 = time.monotonic()
            self._tor_net = TorNetwork(relays=4, authorities=1, base_dir=self.directory / "tor",
                                       progress=lambda text: self._say(f"tor: {text}"))
            self._tor_net.start()
            nodes, users = self._tor_net.launch_clients([("nodes", True), ("users", True)])
            self._tor_clients = {"nodes": nodes, "users": users}
            self.timings["tor_s"] = round(time.monotonic() - t0, 1)
            self._say(f"tor: private network and 2 client tors ready in {self.timings['tor_s']:.1f} s")

        def i2p() -> None:
            from anonmail.testnet.i2p import I2PNetwork

            t0 = time.monotonic()
            self._i2p_net = I2PNetwork(3, base_dir=self.directory / "i2p",
                                       progress=self._say)
            self._i2p_net.start()
            self.timings["i2p_s"] = round(time.monotonic() - t0, 1)
            self._say(f"i2p: 3 routers ready in {self.timings['i2p_s']:.1f} s")

        jobs = [job for job, on in ((tor, self.tor), (i2p, self.i2p)) if on]
        with ThreadPoolExecutor(len(jobs)) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()
        self._save_state()

    def _transport_keys(self, spec: NodeSpec, index: int) -> dict[str, dict[str, Any]]:
        """The [tor]/[i2p] tables that point a process at the private tor/i2pd."""
        tables: dict[str, dict[str, Any]] = {}
        if self.tor:
            client = self._tor_clients["users" if spec.role == "agent" else "nodes"]
            tables["tor"] = {"control_port": client.control_port, "socks_port": client.socks_port}
            if spec.role != "agent":
                tables["tor"]["serve"] = "tor" in spec.serves
        if self.i2p:
            router = self._i2p_net.routers[self._i2p_router(spec, index)]
            tables["i2p"] = {"sam_port": router.sam_port, "private_network": True,
                             "inbound_length": 1, "outbound_length": 1,
                             "inbound_quantity": 2, "outbound_quantity": 2, "session_timeout": 120.0,
                             "lookup_timeout": 30.0, "connect_timeout": 60.0}
            if spec.role != "agent":
                tables["i2p"]["serve"] = "i2p" in spec.serves
        return tables

    def _i2p_router(self, spec: NodeSpec, index: int) -> int:
        """Nodes share the first routers, users the last (their traffic enters elsewhere)."""
        routers = len(self._i2p_net.routers)
        return routers - 1 if spec.role == "agent" else index % (routers - 1)

    def _transport_flags(self) -> list[str]:
        return (["--tor"] if self.tor else []) + (["--i2p"] if self.i2p else [])

    # -- commands and processes

    def _proc(self, spec: NodeSpec) -> NodeProcess:
        if spec.name not in self._procs:
            directory = self.directory / spec.subdir
            if spec.role == "authority":
                command = [executable("mixnode"), "authority", "run", "--config", str(directory / "authority.toml")]
            elif spec.role == "mix":
                command = [executable("mixnode"), "run", "--config", str(directory / "mixnode.toml")]
            elif spec.role == "provider":
                command = [executable("anonmail"), "provider", "run", "--config", str(directory / "provider.toml")]
            else:
                command = [executable("anonmail"), "agent", "--home", str(directory),
                           "--passphrase-file", str(self._passphrase_file())]
            self._procs[spec.name] = NodeProcess(spec, directory, command, self.directory / "logs" / f"{spec.name}.log")
        return self._procs[spec.name]

    def _passphrase_file(self) -> Path:
        path = self.directory / "users" / "passphrase.txt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.passphrase + "\n")
            os.chmod(path, 0o600)
        return path

    def start(self, name: str) -> None:
        """(Re)start one process with its config and keys as they are on disk."""
        proc = self._procs[name]
        if proc.alive:
            raise TestnetError(f"{name} is already running (pid {proc.pid})")
        proc.log.parent.mkdir(parents=True, exist_ok=True)
        status = proc.dir / "status.json"
        if status.exists():
            status.unlink()  # readiness is read from the new process's own status file
        with open_log_file(proc.log) as log:
            log.write(f"--- start {proc.starts + 1} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            proc.popen = subprocess.Popen(proc.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          env=child_env(), start_new_session=True)
        proc.starts += 1
        self._save_state()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send a signal to one process and wait for it to end (SIGKILL: no clean shutdown)."""
        proc = self._procs[name]
        if not proc.alive:
            return
        os.kill(proc.pid, sig)
        try:
            proc.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(timeout=10)
        self._save_state()

    def restart(self, name: str, *, timeout: float = SERVE_TIMEOUT) -> None:
        """Start a stopped process again and wait until it serves (nodes) or is connected (agents)."""
        self.start(name)
        self.wait_ready([name], timeout=timeout)

    def wait_ready(self, names: list[str], *, consensus: bool = False, timeout: float = SERVE_TIMEOUT) -> None:
        """Wait until each named process serves its addresses (and, if asked, is in the consensus)."""
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            for name in list(pending):
                proc = self._procs[name]
                if not proc.alive:
                    code = proc.popen.returncode if proc.popen is not None else None
                    raise TestnetError(f"{name} exited (code {code}) before it was ready; its log "
                                       f"{proc.log}:\n    {log_tail(proc.log)}")
                if process_ready(proc, consensus=consensus):
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                what = "listed in the consensus" if consensus else "serving"
                tails = "\n".join(f"  {n}: {log_tail(self._procs[n].log, 3)}" for n in pending[:3])
                raise TestnetError(f"not {what} after {timeout:.0f} s: {', '.join(pending)}\n{tails}")
            time.sleep(0.25)

    @property
    def pins(self) -> list[tuple[str, bytes]]:
        """The authorities as every node pins them: (address, public key)."""
        import base64

        return [(address, base64.b64decode(key)) for address, key in self._pins]

    def client_transports(self, data_dir: Path, *, own_tor: bool = False) -> list:
        """Connect-only transports for code outside the testnet (tests): the users' tor and/or i2pd.

        ``own_tor``: a client tor of its own (started once), as a stranger who shares none with the users.
        """
        from anonmail.net.settings import build_transports

        if self.tor and own_tor and "stranger" not in self._tor_clients:
            (self._tor_clients["stranger"],) = self._tor_net.launch_clients([("stranger", True)])
        client = self._tor_clients["stranger" if own_tor else "users"] if self.tor else None
        tor = client.settings(serve=False, connect_timeout=90.0) if client is not None else None
        i2p = self._i2p_net.settings(len(self._i2p_net.routers) - 1, serve=False) if self.i2p else None
        return build_transports(Path(data_dir), tor=tor, i2p=i2p)

    def addresses(self, name: str) -> list[str]:
        """The onion/I2P addresses a node serves (from its status file)."""
        status = self._procs[name].status() or {}
        return list(status.get("addresses") or [])

    # -- authorities

    def _authority_init(self, spec: NodeSpec, index: int, peers: list[tuple[str, str]]) -> str:
        proc = self._proc(spec)
        argv = [executable("mixnode"), "authority", "init", "--dir", str(proc.dir), "--name", spec.name,
                "--epoch-seconds", str(self.epoch_seconds), *self._transport_flags()]
        if peers:
            argv += ["--force", "--threshold", str(THRESHOLD)]
            for address, key in peers:
                argv += ["--peer", f"{address}={key}"]
        out = run_command(argv, f"mixnode authority init ({spec.name})")
        config = proc.dir / "authority.toml"
        for table, values in self._transport_keys(spec, index).items():
            set_toml_keys(config, table, values)
        nodes = sum(1 for s in self.specs if s.role in ("mix", "provider"))
        set_toml_keys(config, None, {"bootstrap_nodes": nodes})
        set_toml_keys(config, "params", published_params(self.params, self.agent_settings).to_dict())
        match = re.search(r"public key: (\S+)", out)
        if match is None:
            raise TestnetError(f"mixnode authority init ({spec.name}) printed no public key")
        return match.group(1)

    def _create_addresses(self, spec: NodeSpec, index: int) -> list[str]:
        """Create a node's onion key and/or I2P destination before its first run; its addresses."""
        settings = self._i2p_net.settings(self._i2p_router(spec, index)) if "i2p" in spec.serves else None
        return create_addresses(self._proc(spec).dir, spec.serves, settings)

    def _start_authorities(self) -> None:
        t0 = time.monotonic()
        specs = [s for s in self.specs if s.role == "authority"]
        keys = {s.name: self._authority_init(s, i, []) for i, s in enumerate(specs)}
        planned = {s.name: self._create_addresses(s, i) for i, s in enumerate(specs)}
        # Every authority pins the others at one address each (the first it serves: onion if any).
        self._pins = [(planned[s.name][0], keys[s.name]) for s in specs]
        for i, spec in enumerate(specs):
            self._authority_init(spec, i, [pin for other, pin in zip(specs, self._pins) if other is not spec])
            self.start(spec.name)
        self._say(f"authorities: {len(specs)} initialised with each other pinned; publishing their addresses")
        self.wait_ready([s.name for s in specs])
        for spec in specs:
            if self.addresses(spec.name) != planned[spec.name]:
                raise TestnetError(f"{spec.name} serves {self.addresses(spec.name)}, not the addresses created "
                                   f"for it: {planned[spec.name]}")
        self.timings["authorities_s"] = round(time.monotonic() - t0, 1)
        self._say(f"authorities: {len(specs)} serving ({self.timings['authorities_s']:.1f} s): " + ", ".join(
            f"{s.name} on {'+'.join(s.serves)}" for s in specs))

    def _pin_args(self) -> list[str]:
        args = ["--threshold", str(THRESHOLD), "--epoch-seconds", str(self.epoch_seconds)]
        for address, key in self._pins:
            args += ["--authority", f"{address}={key}"]
        return args

    # -- mixes and providers

    def _node_init(self, spec: NodeSpec, index: int) -> None:
        proc = self._proc(spec)
        if spec.role == "mix":
            argv = [executable("mixnode"), "init", "--dir", str(proc.dir), "--name", spec.name,
                    "--layer", str(spec.layer), *self._pin_args(), *self._transport_flags()]
            config = proc.dir / "mixnode.toml"
        else:
            argv = [executable("anonmail"), "provider", "init", "--dir", str(proc.dir), "--name", spec.name,
                    *self._pin_args(), *self._transport_flags()]
            config = proc.dir / "provider.toml"
        out = run_command(argv, f"{' '.join(Path(argv[0]).name.split())} init ({spec.name})")
        for table, values in self._transport_keys(spec, index).items():
            set_toml_keys(config, table, values)
        for table, values in self.node_settings.items():
            set_toml_keys(config, table, values)
        match = re.search(r"public key:\s+(\S+)", out)
        if match is None:
            raise TestnetError(f"{spec.name}: init printed no public key")
        self._node_keys[spec.name] = match.group(1)
        # Every authority's operator admits the node's key under its name, role and layer.
        node = [spec.name, spec.role] + ([str(spec.layer)] if spec.role == "mix" else []) + [match.group(1)]
        for authority in (s for s in self.specs if s.role == "authority"):
            run_command([executable("mixnode"), "authority", "admit", "--config",
                                 str(self._proc(authority).dir / "authority.toml"), *node],
                                f"mixnode authority admit {spec.name} ({authority.name})")

    def _start_nodes(self) -> None:
        t0 = time.monotonic()
        specs = [s for s in self.specs if s.role in ("mix", "provider")]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda pair: self._node_init(pair[1], pair[0]), enumerate(specs)))
        for spec in specs:
            self.start(spec.name)
        self._say(f"mix nodes and providers: {len(specs)} started; waiting for their onion/I2P addresses")
        self.wait_ready([s.name for s in specs])
        self._say(f"mix nodes and providers: all serving after {time.monotonic() - t0:.1f} s; "
                  f"waiting for a consensus that lists them")
        self.wait_ready([s.name for s in specs], consensus=True, timeout=CONSENSUS_TIMEOUT)
        self.timings["nodes_s"] = round(time.monotonic() - t0, 1)
        self._say(f"consensus: all {len(specs)} nodes listed, signed by {THRESHOLD} of {AUTHORITIES} "
                  f"authorities ({self.timings['nodes_s']:.1f} s)")

    # -- users

    def home(self, user: str) -> Path:
        """A user's anonmail directory (``--home``)."""
        return self._procs[user].dir if user in self._procs else self.directory / "users" / user

    def address(self, user: str) -> str:
        """A user's mail address."""
        return self._addresses[user]

    def _user_init(self, spec: NodeSpec) -> None:
        proc = self._proc(spec)
        argv = [executable("anonmail"), "init", "--home", str(proc.dir), *self._pin_args(),
                "--provider", f"{spec.provider}={self._node_keys[spec.provider]}",
                "--passphrase-file", str(self._passphrase_file()), "--kdf", "interactive"]
        tables = self._transport_keys(spec, 0)
        if self.tor:
            argv += ["--tor-control-port", str(tables["tor"]["control_port"])]
        if self.i2p:
            argv += ["--sam-port", str(tables["i2p"]["sam_port"])]
        for attempt in range(3):  # registration crosses Tor/I2P: a first circuit can fail
            try:
                run_command(argv, f"anonmail init ({spec.name})")
                break
            except TestnetError:
                if attempt == 2:
                    raise
                shutil.rmtree(proc.dir, ignore_errors=True)
                time.sleep(2)
        config = proc.dir / "agent.toml"
        for table, values in tables.items():
            set_toml_keys(config, table, values)
        if self.agent_settings:
            set_toml_keys(config, "agent", self.agent_settings)
        self._addresses[spec.name] = run_command([executable("anonmail"), "whoami", "--home", str(proc.dir)],
                                               f"anonmail whoami ({spec.name})").strip()

    def _start_users(self) -> None:
        specs = [s for s in self.specs if s.role == "agent"]
        if not specs:
            return
        t0 = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(self._user_init, specs))
        self._say(f"users: {', '.join(f'{s.name}@{s.provider}' for s in specs)} registered "
                  f"({time.monotonic() - t0:.1f} s)")
        for spec in specs:
            for other in specs:
                if other is not spec:
                    self.add_contact(spec.name, other.name)
        if len(specs) > 1:
            self._say("users: everyone added everyone else as a contact (keys fetched from their providers)")
        for spec in specs:
            self.start(spec.name)
        self.wait_ready([s.name for s in specs])
        self.timings["users_s"] = round(time.monotonic() - t0, 1)
        self._say(f"users: {len(specs)} agents connected to their providers, sending at a Poisson rate "
                  "with cover traffic")

    def add_contact(self, user: str, other: str) -> None:
        """``anonmail contact add`` (the key lookup crosses Tor/I2P; retried)."""
        argv = [executable("anonmail"), "contact", "add", other, self._addresses[other], "--home", str(self.home(user))]
        for attempt in range(3):
            try:
                run_command(argv, f"anonmail contact add ({user} adds {other})")
                return
            except TestnetError:
                if attempt == 2:
                    raise
                time.sleep(2)

    def anonmail(self, user: str, *args: str, input_text: str | None = None) -> str:
        """Run an ``anonmail`` user command as ``user`` (what a user types); returns stdout."""
        argv = [executable("anonmail"), args[0], "--home", str(self.home(user)), *args[1:]]
        return run_command(argv, f"anonmail {args[0]} ({user})", input_text=input_text)

    @property
    def names(self) -> list[str]:
        """Every anonmail process, in start order."""
        return list(self._procs)

    def spec(self, name: str) -> NodeSpec:
        """The plan entry of one process."""
        return self._procs[name].spec

    def pid(self, name: str) -> int | None:
        """The PID of a running process (None when stopped)."""
        proc = self._procs[name]
        return proc.pid if proc.alive else None

    def client_tor_pid(self, name: str) -> int:
        """The PID of client tor ``name`` (nodes, users; stranger once started): tests renice it."""
        return int(self._tor_clients[name].pid)

    def node_status(self, name: str) -> dict | None:
        """The process's own ``status.json``."""
        return self._procs[name].status()

    def dir_of(self, name: str) -> Path:
        """The process's data directory (or the user's home)."""
        return self._procs[name].dir

