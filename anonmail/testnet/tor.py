"""A private Tor network on 127.0.0.1, for tests and demos; docs/tor.md, "The private test network".

:class:`TorNetwork` generates keys with tor's own tools (``tor-gencert`` for directory
authorities, ``tor --list-fingerprint`` for every relay), writes one torrc per node with fast
test-network voting, starts the authorities and relays, and waits until the consensus lists
every relay (polled from an authority's DirPort: readiness detected, not guessed). Then it
hands out what a node needs: :meth:`TorNetwork.client_torrc_lines` (for an
:class:`~anonmail.net.tor.OnionTransport` that launches its own tor) or a running client tor
(:meth:`TorNetwork.launch_client`, waited on until it bootstrapped to 100 %)::

    with TorNetwork(relays=4) as net:          # stop() kills every tor it started, by PID
        server = net.launch_client("server", socks=False)
        client = net.launch_client("client")
        OnionTransport(server.settings(), data_dir=...)   # attach mode

Every port is bound on 127.0.0.1. Teardown is SIGTERM then SIGKILL per PID, on ``__exit__``
(exceptions and KeyboardInterrupt included) and at interpreter exit.

``anonmail testnet tor-check`` is :func:`anonmail.testnet.checks.run_tor_check`.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from anonmail.errors import TestnetError, TorError
from anonmail.net.tor import (
    ControlEndpoint,
    TorSettings,
    open_controller,
    start_tor_process,
    stop_tor_process,
    wait_for_bootstrap,
)
from anonmail.net.tor.process import log_tail

__all__ = ["MIN_RELAYS", "TorClient", "TorNetwork"]

#: Onion-service circuits need four distinct relays; fewer never works: measured on a private network.
MIN_RELAYS = 4
#: Seconds to wait for the consensus to list every relay (normally ~8 s; slow path +17 s).
CONSENSUS_TIMEOUT = 90.0
#: Seconds for a client tor to reach PROGRESS=100 on the running network.
CLIENT_BOOTSTRAP_TIMEOUT = 90.0
#: Seconds for one key-generation command.
KEYGEN_TIMEOUT = 60.0

Progress = Callable[[str], None] | None


def _free_port() -> int:
    """A 127.0.0.1 port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _common_lines(data_dir: Path, nickname: str) -> list[str]:
    return [
        "TestingTorNetwork 1",
        f"DataDirectory {data_dir}",
        f"Nickname {nickname}",
        f"PidFile {data_dir / 'tor.pid'}",
        f"Log notice file {data_dir / 'notice.log'}",
        "SafeLogging 0",
        "ShutdownWaitLength 0",
        "RunAsDaemon 0",
        "Sandbox 0",
        "UseDefaultFallbackDirs 0",
        "ClientUseIPv6 0",
        "AssumeReachable 1",
        "PathsNeededToBuildCircuits 0.25",
        "TestingDirAuthVoteGuard *",
        "TestingDirAuthVoteExit *",
        "TestingDirAuthVoteHSDir *",
        "TestingMinExitFlagThreshold 0",
        "V3AuthNIntervalsValid 2",
        'GeoIPFile ""',
        'GeoIPv6File ""',
    ]


@dataclass
class _Node:
    """One authority or relay of the network."""

    nickname: str
    data_dir: Path
    or_port: int
    dir_port: int | None = None  # authorities only
    fingerprint: str = ""
    v3ident: str = ""
    process: subprocess.Popen | None = None

    @property
    def is_authority(self) -> bool:
        return self.dir_port is not None


@dataclass(frozen=True)
class TorClient:
    """A running client tor of the network: where its control and SOCKS ports are."""

    name: str
    data_dir: Path
    control_port: int
    socks_port: int | None
    pid: int

    def settings(self, **overrides: Any) -> TorSettings:
        """TorSettings that attach an OnionTransport to this tor (overrides: timeouts etc.)."""
        base = TorSettings(launch=False, control_port=self.control_port, socks_port=self.socks_port)
        return replace(base, **overrides)


@dataclass
class TorNetwork:
    """Authorities, relays and client tors on 127.0.0.1, started and stopped as one.

    ``relays`` counts relays besides the authorities (which relay too); together they must be
    at least :data:`MIN_RELAYS`. ``base_dir`` defaults to a fresh temporary directory that
    :meth:`stop` removes.
    """

    relays: int = 4
    authorities: int = 1
    base_dir: Path | None = None
    tor_binary: str = "tor"
    gencert_binary: str = "tor-gencert"
    progress: Progress = None
    _nodes: list[_Node] = field(default_factory=list, init=False)
    _clients: list[tuple[TorClient, subprocess.Popen]] = field(default_factory=list, init=False)
    _own_dir: bool = field(default=False, init=False)
    _started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.authorities < 1 or self.relays < 0:
            raise TestnetError("a Tor test network needs at least 1 authority and 0 or more relays")
        if self.authorities + self.relays < MIN_RELAYS:
            raise TestnetError(
                f"a Tor test network needs at least {MIN_RELAYS} relays in all (authorities relay too): "
                f"got {self.authorities} + {self.relays}; onion-service circuits need {MIN_RELAYS} distinct relays"
            )

    # -- lifecycle

    def __enter__(self) -> TorNetwork:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    @property
    def nodes(self) -> int:
        """How many tor processes this network runs right now."""
        procs = [n.process for n in self._nodes] + [p for _, p in self._clients]
        return sum(1 for p in procs if p is not None and p.poll() is None)

    @property
    def pids(self) -> list[int]:
        """PIDs of every tor process this network started and has not stopped."""
        procs = [n.process for n in self._nodes] + [p for _, p in self._clients]
        return [p.pid for p in procs if p is not None and p.poll() is None]

    def start(self, timeout: float = CONSENSUS_TIMEOUT) -> TorNetwork:
        """Generate keys, start authorities and relays, wait for a consensus listing them all.

        Raises TestnetError (naming the step and the node's log) on any failure, after
        stopping whatever was started.
        """
        if self._started:
            raise TestnetError("this TorNetwork was already started")
        self._started = True
        atexit.register(self.stop)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        for binary in (self.tor_binary, self.gencert_binary):
            if shutil.which(binary) is None:
                raise TestnetError(f"{binary!r} not found: install tor (apt-get install tor)")
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="anonmail-tornet-"))
            self._own_dir = True
        base = Path(self.base_dir)
        base.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        for i in range(self.authorities):
            self._nodes.append(_Node(f"auth{i}", base / f"auth{i}", _free_port(), _free_port()))
        for i in range(self.relays):
            self._nodes.append(_Node(f"relay{i}", base / f"relay{i}", _free_port()))
        for node in self._nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(node.data_dir, 0o700)
        self._generate_keys()
        self._say(f"keys for {len(self._nodes)} tor nodes generated in {time.monotonic() - t0:.1f} s")

        t1 = time.monotonic()
        offset = (int(time.time()) + 8) % 10  # first vote soon after start, not a whole interval later
        for node in self._nodes:
            torrc = node.data_dir / "torrc"
            torrc.write_text("\n".join(self._node_lines(node, offset)) + "\n")
            node.process = start_tor_process(self.tor_binary, torrc, stderr_path=node.data_dir / "stderr.log")
        self._wait_for_consensus(timeout)
        self._say(
            f"{self.authorities} authorit{'y' if self.authorities == 1 else 'ies'} + {self.relays} relays "
            f"in consensus after {time.monotonic() - t1:.1f} s"
        )

    def stop(self) -> None:
        """Stop every tor this network started (SIGTERM, then SIGKILL), then remove its files."""
        procs = [p for _, p in self._clients] + [n.process for n in self._nodes if n.process is not None]
        for proc in procs:  # signal all first, so they shut down in parallel
            if proc.poll() is None:
                try:
                    proc.terminate()
                except ProcessLookupError:
                    pass
        for proc in procs:
            stop_tor_process(proc, grace=5.0)
        for node in self._nodes:
            node.process = None
        self._clients.clear()
        if self._own_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self._own_dir = False
        atexit.unregister(self.stop)

    # -- keys and torrcs

    def _run(self, argv: list[str], *, stdin: bytes = b"") -> subprocess.Popen:
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, MALLOC_ARENA_MAX="1"),
        )

    def _finish(self, proc: subprocess.Popen, what: str, stdin: bytes = b"") -> str:
        try:
            out, err = proc.communicate(stdin or None, timeout=KEYGEN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise TestnetError(f"{what} did not finish within {KEYGEN_TIMEOUT:.0f} s") from None
        if proc.returncode != 0:
            detail = (err or out).decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise TestnetError(f"{what} failed (exit {proc.returncode}): {detail[0]}")
        return out.decode(errors="replace")

    def _generate_keys(self) -> None:
        """Authority certificates and relay fingerprints, all commands in parallel."""
        jobs: list[tuple[_Node, str, subprocess.Popen, bytes]] = []
        for node in self._nodes:
            keys = node.data_dir / "keys"
            keys.mkdir(exist_ok=True)
            os.chmod(keys, 0o700)
            if node.is_authority:
                argv = [
                    self.gencert_binary, "--create-identity-key", "--passphrase-fd", "0",
                    "-i", str(keys / "authority_identity_key"), "-s", str(keys / "authority_signing_key"),
                    "-c", str(keys / "authority_certificate"), "-m", "12", "-a", f"127.0.0.1:{node.dir_port}",
                ]
                jobs.append((node, "gencert", self._run(argv, stdin=b"\n"), b"\n"))
            argv = [
                self.tor_binary, "--ignore-missing-torrc", "-f", "/nonexistent", "--defaults-torrc", "/nonexistent",
                "--DataDirectory", str(node.data_dir), "--ORPort", f"127.0.0.1:{node.or_port}",
                "--Nickname", node.nickname, "--list-fingerprint", "--quiet",
            ]
            jobs.append((node, "fingerprint", self._run(argv), b""))
        for node, kind, proc, stdin in jobs:
            out = self._finish(proc, f"{kind} for {node.nickname}", stdin)
            if kind == "fingerprint":
                match = re.search(rf"^{node.nickname} ((?:[0-9A-F]{{4}} ?){{10}})$", out, re.MULTILINE)
                if not match:
                    raise TestnetError(f"tor --list-fingerprint for {node.nickname} printed no fingerprint")
                node.fingerprint = match.group(1).replace(" ", "")
            else:
                cert = (node.data_dir / "keys" / "authority_certificate").read_text()
                match = re.search(r"^fingerprint ([0-9A-F]{40})$", cert, re.MULTILINE)
                if not match:
                    raise TestnetError(f"tor-gencert wrote no fingerprint for {node.nickname}")
                node.v3ident = match.group(1)

    def _dir_authority_lines(self) -> list[str]:
        return [
            f"DirAuthority {n.nickname} orport={n.or_port} no-v2 v3ident={n.v3ident} "
            f"127.0.0.1:{n.dir_port} {n.fingerprint}"
            for n in self._nodes if n.is_authority
        ]

    def _node_lines(self, node: _Node, offset: int) -> list[str]:
        lines = _common_lines(node.data_dir, node.nickname) + self._dir_authority_lines() + [
            f"ORPort 127.0.0.1:{node.or_port}",
            "Address 127.0.0.1",
            "SocksPort 0",
            "ExitRelay 0",
            "ExitPolicy reject *:*",
            "AddressDisableIPv6 1",
            "ServerDNSResolvConfFile /dev/null",
            "ServerDNSDetectHijacking 0",
            "ServerDNSTestAddresses",
        ]
        if node.is_authority:
            lines += [
                f"DirPort 127.0.0.1:{node.dir_port}",
                "AuthoritativeDirectory 1",
                "V3AuthoritativeDirectory 1",
                "ContactInfo anonmail test network <nobody@127.0.0.1>",
                "TestingV3AuthInitialVotingInterval 10",
                "TestingV3AuthInitialVoteDelay 2",
                "TestingV3AuthInitialDistDelay 2",
                "V3AuthVotingInterval 10",
                "V3AuthVoteDelay 2",
                "V3AuthDistDelay 2",
                f"TestingV3AuthVotingStartOffset {offset}",
                "AuthDirFastGuarantee 1",
                "AuthDirVoteStableGuaranteeMinUptime 0",
                "AuthDirVoteStableGuaranteeMTBF 0",
            ]
        return lines

    def client_torrc_lines(self) -> list[str]:
        """Lines a client tor needs to use this network (add DataDirectory and ports yourself)."""
        if not self._nodes:
            raise TestnetError("start the TorNetwork before asking for client torrc lines")
        lines = [
            line for line in _common_lines(Path("/unused"), "unused")
            if not line.startswith(("DataDirectory", "Nickname", "PidFile", "Log ", "RunAsDaemon"))
        ]
        return lines + self._dir_authority_lines() + ["VanguardsLiteEnabled 0"]

    # -- readiness

    def _check_alive(self) -> None:
        for node in self._nodes:
            if node.process is not None and node.process.poll() is not None:
                tail = log_tail(node.data_dir / "notice.log", 3) or log_tail(node.data_dir / "stderr.log", 3)
                raise TestnetError(f"tor node {node.nickname} exited with status {node.process.returncode}: {tail}")

    def _wait_for_consensus(self, timeout: float) -> None:
        """Poll an authority's consensus until it lists every relay."""
        authority = next(n for n in self._nodes if n.is_authority)
        url = f"http://127.0.0.1:{authority.dir_port}/tor/status-vote/current/consensus-microdesc"
        want = len(self._nodes)
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 (loopback URL we built)
                    text = reply.read().decode(errors="replace")
                seen = sum(1 for line in text.splitlines() if line.startswith("r "))
                if seen >= want:
                    return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass  # no consensus yet (404) or the DirPort is not open yet
            if time.monotonic() > deadline:
                raise TestnetError(
                    f"the consensus of the private Tor network listed {seen} of {want} relays after "
                    f"{timeout:.0f} s; see {authority.data_dir / 'notice.log'}"
                )
            time.sleep(0.25)

    # -- clients

    def launch_client(self, name: str, *, socks: bool = True, timeout: float = CLIENT_BOOTSTRAP_TIMEOUT) -> TorClient:
        """Start a client tor (ControlPort, cookie auth, SocksPort if ``socks``); wait for 100 %.

        Raises TestnetError if it exits, opens no control port, or does not bootstrap in time.
        """
        (client,) = self.launch_clients([(name, socks)], timeout=timeout)
        return client

    def launch_clients(
        self, specs: list[tuple[str, bool]], *, timeout: float = CLIENT_BOOTSTRAP_TIMEOUT
    ) -> list[TorClient]:
        """Start several client tors at once (``(name, socks)`` each) and wait for all of them."""
        if not self._nodes or self.base_dir is None:
            raise TestnetError("start the TorNetwork before launching clients")
        t0 = time.monotonic()
        started = [self._spawn_client(name, socks) for name, socks in specs]
        for client, proc in started:
            try:
                controller = self._wait_for_control(proc, client.control_port, client.data_dir, timeout)
                try:
                    remaining = max(1.0, timeout - (time.monotonic() - t0))
                    wait_for_bootstrap(
                        controller, remaining, alive=lambda p=proc: p.poll() is None, what=f"client tor {client.name}"
                    )
                finally:
                    controller.close()
            except TorError as exc:
                raise TestnetError(
                    f"client tor {client.name} failed: {exc}; see {client.data_dir / 'notice.log'}"
                ) from exc
        names = ", ".join(client.name for client, _ in started)
        self._say(f"client tor{'s' if len(started) > 1 else ''} {names} bootstrapped in {time.monotonic() - t0:.1f} s")
        return [client for client, _ in started]

    def _client_process(self, client: TorClient) -> tuple[int, subprocess.Popen]:
        for index, (known, proc) in enumerate(self._clients):
            if known.name == client.name:
                return index, proc
        raise TestnetError(f"no client tor named {client.name!r} was launched on this network")

    def stop_client(self, client: TorClient) -> None:
        """Stop a client tor by its PID (SIGTERM, then SIGKILL); :meth:`restart_client` starts it again."""
        _index, proc = self._client_process(client)
        stop_tor_process(proc)

    def restart_client(self, client: TorClient, *, timeout: float = CLIENT_BOOTSTRAP_TIMEOUT) -> TorClient:
        """Stop a client tor if it runs, start it again (same data dir, torrc and ports), wait for 100 %.

        Returns the client with its new PID. Raises TestnetError like :meth:`launch_client`.
        """
        index, proc = self._client_process(client)
        stop_tor_process(proc)
        known = self._clients[index][0]
        proc = start_tor_process(self.tor_binary, known.data_dir / "torrc", stderr_path=known.data_dir / "stderr.log")
        restarted = replace(known, pid=proc.pid)
        self._clients[index] = (restarted, proc)
        try:
            controller = self._wait_for_control(proc, restarted.control_port, restarted.data_dir, timeout)
            try:
                wait_for_bootstrap(
                    controller, timeout, alive=lambda: proc.poll() is None, what=f"client tor {restarted.name}"
                )
            finally:
                controller.close()
        except TorError as exc:
            raise TestnetError(
                f"client tor {restarted.name} failed to restart: {exc}; see {restarted.data_dir / 'notice.log'}"
            ) from exc
        self._say(f"client tor {restarted.name} restarted")
        return restarted

    def _spawn_client(self, name: str, socks: bool) -> tuple[TorClient, subprocess.Popen]:
        if not re.fullmatch(r"[A-Za-z0-9]{1,19}", name):
            raise TestnetError(f"client name {name!r}: 1-19 letters or digits (a tor nickname)")
        assert self.base_dir is not None
        data_dir = Path(self.base_dir) / f"client-{name}"
        if data_dir.exists():
            raise TestnetError(f"a client tor named {name!r} was already launched on this network")
        data_dir.mkdir(parents=True)
        os.chmod(data_dir, 0o700)
        control_port = _free_port()
        socks_port = _free_port() if socks else None
        lines = _common_lines(data_dir, name) + self._dir_authority_lines() + [
            "VanguardsLiteEnabled 0",
            f"ControlPort 127.0.0.1:{control_port}",
            "CookieAuthentication 1",
            f"SocksPort 127.0.0.1:{socks_port} ExtendedErrors" if socks else "SocksPort 0",
        ]
        torrc = data_dir / "torrc"
        torrc.write_text("\n".join(lines) + "\n")
        proc = start_tor_process(self.tor_binary, torrc, stderr_path=data_dir / "stderr.log")
        client = TorClient(name, data_dir, control_port, socks_port, proc.pid)
        self._clients.append((client, proc))
        return client, proc

    def _wait_for_control(self, proc: subprocess.Popen, port: int, data_dir: Path, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise TestnetError(
                    f"client tor in {data_dir} exited with status {proc.returncode}: {log_tail(data_dir / 'notice.log', 3)}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    pass
                return open_controller(ControlEndpoint(port=port))
            except OSError:
                if time.monotonic() > deadline:
                    raise TestnetError(f"client tor in {data_dir} opened no control port in {timeout:.0f} s") from None
                time.sleep(0.05)
