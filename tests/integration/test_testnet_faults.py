"""Fault tests on a whole anonmail network of real processes over a private Tor network.

One :class:`~anonmail.testnet.network.Testnet` per module (3 authorities, 3 layers × 2 mixes,
providers alpha and beta, users alice@alpha and bob@beta, every node an onion service only).
Faults are real: SIGKILL of a mix or provider, an agent stopped for a while, a node restarted
with the same keys, a stranger's flood of connections and packets over Tor at a mix and a
provider, replays sent over a provider's own authenticated link. Mail is sent and read with
the ``anonmail`` commands a user runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from anonmail.core import sphinx
from anonmail.core.linkauth import generate_link_secret
from anonmail.core.sizes import PACKET_BYTES
from anonmail.core.wire import PROTOCOL_VERSION, Hello, Packet, Role, encode_frame
from anonmail.clients.directory import DirectoryClient
from anonmail.errors import LinkAuthError, LinkError, TestnetError
from anonmail.net.framed import FramedStream
from anonmail.testnet.network import Testnet
from anonmail.testnet.processes import child_env, executable, run_command
from mixnode.handshake import initiate
from tests.integration.testnet_injector import EPOCH, Injector, onion

pytestmark = [
    pytest.mark.integration,
    pytest.mark.tor,
    pytest.mark.filterwarnings("ignore:setDaemon\\(\\) is deprecated:DeprecationWarning"),
]

#: Agent settings for the tests: quick fetches and short mixing delays (the demo uses defaults).
AGENT = {"fetch_interval": 1.0, "delay_mean": 0.1, "lambda_payload": 4.0}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):
    """The module's running network (torn down, every process by PID, after the last test)."""
    for binary in ("tor", "tor-gencert"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (scripts/bootstrap.sh installs it)")
    testnet = Testnet(tmp_path_factory.mktemp("testnet"), tor=True, i2p=False, mixes_per_layer=2, providers=2,
                      users=2, epoch_seconds=EPOCH, agent_settings=AGENT,
                      progress=lambda text: print(f"testnet: {text}", flush=True))
    try:
        testnet.up()
        yield testnet
    finally:
        testnet.down()
        assert all(testnet.pid(name) is None for name in testnet.names)


# ----------------------------------------------------------------------------- helpers

def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _inbox(net: Testnet, user: str) -> list[dict]:
    return _lines(net.anonmail(user, "inbox", "--json"))


def _outbox(net: Testnet, user: str) -> list[dict]:
    return _lines(net.anonmail(user, "outbox", "--json"))


def _send(net: Testnet, sender: str, to: str, subject: str) -> None:
    net.anonmail(sender, "send", "--to", to, "--subject", subject, input_text=f"body of {subject}\n")


def _wait(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s: {what()}")
        time.sleep(1.0)


async def _await(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s: {what()}")
        await anyio.sleep(0.5)


def _arrived(net: Testnet, user: str, subjects: list[str]) -> Counter:
    return Counter(m["subject"] for m in _inbox(net, user) if m["subject"] in subjects)


def _acknowledged(net: Testnet, user: str, subjects: list[str]) -> bool:
    states = {m["subject"]: m["state"] for m in _outbox(net, user)}
    return all(states.get(s) == "acknowledged" for s in subjects)


def _deliver_and_check(net: Testnet, subjects: list[str], timeout: float = 240.0) -> None:
    """Wait until bob has every subject and alice has every ACK; then exactly once each."""
    _wait(lambda: len(_arrived(net, "bob", subjects)) == len(subjects) and _acknowledged(net, "alice", subjects),
          timeout, lambda: f"bob has {dict(_arrived(net, 'bob', subjects))} of {subjects}; alice's outbox: "
                           f"{[(m['subject'], m['state'], m['acknowledged'], m['packets']) for m in _outbox(net, 'alice')]}")
    time.sleep(3.0)  # give a late duplicate (a retransmission in flight) the chance to show up
    assert _arrived(net, "bob", subjects) == Counter({s: 1 for s in subjects})


def _dropped(net: Testnet, name: str, reason: str) -> int:
    return int(((net.node_status(name) or {}).get("dropped") or {}).get(reason, 0))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


# ------------------------------------------------------------------------------- tests

def test_network_serves_only_onion_addresses_and_lists_every_node(net: Testnet):
    for name in net.names:
        spec = net.spec(name)
        if spec.role != "agent":
            addresses = net.addresses(name)
            assert addresses and all(a.startswith("onion://") for a in addresses), (name, addresses)
        assert net.pid(name) is not None, f"{name} is not running"
    for name in ("mix1a", "mix2b", "mix3a", "alpha", "beta"):
        assert net.node_status(name)["in_consensus"] is True


def test_status_commands_work_against_the_running_nodes(net: Testnet):
    from anonmail.testnet.processes import executable

    commands = {
        "mix1a": [executable("mixnode"), "status", "--config", str(net.dir_of("mix1a") / "mixnode.toml"), "--json"],
        "alpha": [executable("anonmail"), "provider", "status", "--dir", str(net.dir_of("alpha")), "--json"],
        "alice": [executable("anonmail"), "status", "--home", str(net.home("alice")), "--json"],
        "auth1": [executable("mixnode"), "authority", "status", "--config",
                  str(net.dir_of("auth1") / "authority.toml"), "--json"],
    }
    for name, argv in commands.items():
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (name, done.stderr)
        status = json.loads(done.stdout)
        assert status["pid"] == net.pid(name) and status["running"] is True, (name, status)
    # `anonmail testnet status` shows each node's authenticated links: in from the layer before its
    # own only, out to the layer after it only (providers are layer 0, before layer 1, after layer 3).
    layer = {name: int(name[3]) if name.startswith("mix") else 0 for name in net.names}

    def links() -> dict[str, tuple[list[str], list[str]]]:
        done = subprocess.run([executable("anonmail"), "testnet", "status", "--dir", str(net.directory), "--json"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return {row["name"]: (row["links_in"], row["links_out"]) for row in json.loads(done.stdout)["processes"]
                if row["role"] in ("mix", "provider")}

    _wait(lambda: all(ins and outs for ins, outs in links().values()), 120, lambda: f"links: {links()}")
    for name, (ins, outs) in links().items():
        assert all(layer[peer] == (layer[name] - 1) % 4 for peer in ins), (name, ins)
        assert all(layer[peer] == (layer[name] + 1) % 4 for peer in outs), (name, outs)
    logs = "".join((net.directory / "logs" / f"{n}.log").read_text() for n in net.names)
    for user in ("alice", "bob"):  # no user address in any process's log
        assert net.address(user) not in logs and net.address(user).split("@")[0][:12] not in logs
    assert "level=INFO" in logs and "logger=" in logs  # logfmt lines


def test_mix_killed_mid_run_and_restarted_loses_and_duplicates_nothing(net: Testnet):
    subjects = [f"kill-mix {i}" for i in range(8)]
    for subject in subjects:
        _send(net, "alice", "bob", subject)
    time.sleep(1.0)
    net.kill("mix2a")  # SIGKILL: packets it held are gone
    assert net.pid("mix2a") is None
    time.sleep(8.0)
    net.restart("mix2a")
    _deliver_and_check(net, subjects)
    _wait(lambda: (net.node_status("mix2a") or {}).get("forwarded", 0) > 0, 120,
          lambda: f"restarted mix2a forwards nothing: {net.node_status('mix2a')}")


def test_provider_killed_after_storing_mail_before_the_owner_fetched_it_loses_nothing(net: Testnet):
    net.kill("bob", signal.SIGTERM)  # bob is offline: his mail waits at beta
    subjects = [f"provider-crash {i}" for i in range(3)]
    for subject in subjects:
        _send(net, "alice", "bob", subject)
    # An ACK leaves beta only after the fragment is committed to its mailbox store.
    _wait(lambda: _acknowledged(net, "alice", subjects), 180,
          lambda: f"alice's outbox: {[(m['subject'], m['state']) for m in _outbox(net, 'alice')]}")
    assert (net.node_status("beta") or {}).get("stored_entries", 0) >= len(subjects)
    net.kill("beta")  # SIGKILL with the mail stored and not fetched
    net.restart("beta")
    assert (net.node_status("beta") or {}).get("stored_entries", 0) >= len(subjects)
    net.restart("bob")
    _deliver_and_check(net, subjects)


def test_agent_offline_for_a_while_gets_its_mail_when_it_returns(net: Testnet):
    net.kill("bob", signal.SIGTERM)
    offline_since = time.monotonic()
    subjects = [f"offline {i}" for i in range(2)]
    for subject in subjects:
        _send(net, "alice", "bob", subject)
    _wait(lambda: _acknowledged(net, "alice", subjects), 180, lambda: "alice's mail was not stored at beta")
    assert not _arrived(net, "bob", subjects)  # nothing can arrive while bob's agent is down
    time.sleep(max(0.0, 20.0 - (time.monotonic() - offline_since)))
    net.restart("bob")
    _deliver_and_check(net, subjects, timeout=120)


def test_restart_keeps_the_onion_address_and_the_replay_window_closed(net: Testnet, tmp_path: Path):
    before = net.addresses("mix1a")

    async def scenario() -> None:
        # Replays can only come over an admitted link now: the injector dials as provider alpha.
        async with Injector(net, tmp_path / "injector", as_node="alpha") as injector:
            packet = encode_frame(Packet(injector.drop_packet("mix1a")))
            received = net.node_status("mix1a").get("received", 0)
            await injector.send(onion(net, "mix1a"), [packet], to="mix1a")
            await _await(lambda: net.node_status("mix1a").get("received", 0) > received, 60,
                         lambda: "mix1a received nothing")
            replays = _dropped(net, "mix1a", "replay")
            await injector.send(onion(net, "mix1a"), [packet], to="mix1a")
            await _await(lambda: _dropped(net, "mix1a", "replay") == replays + 1, 60,
                  lambda: f"the replay was not dropped: {net.node_status('mix1a')['dropped']}")

            await anyio.to_thread.run_sync(lambda: net.kill("mix1a"))
            await anyio.to_thread.run_sync(net.restart, "mix1a")
            assert net.addresses("mix1a") == before  # same onion key, same address
            assert _dropped(net, "mix1a", "replay") == 0  # a new process: counters start at zero
            await injector.send(onion(net, "mix1a"), [packet], to="mix1a")
            await _await(lambda: _dropped(net, "mix1a", "replay") == 1, 120,
                  lambda: f"replay after restart not dropped: {net.node_status('mix1a')}")

    anyio.run(scenario)


def _refused(net: Testnet, name: str) -> dict:
    return dict((net.node_status(name) or {}).get("refused") or {})


#: The issue's flood, at each of a layer-1 mix and a provider: 2,000 connections that say HELLO and
#: go quiet; 20,000 valid packets asking for the longest hold a packet can carry, sent after a
#: completed handshake under a link key no consensus lists; 100,000 random packets on streams that
#: never handshake (the node closes each at its first packet, unread beyond it).
FLOOD_QUIET, FLOOD_MAX_DELAY, FLOOD_RANDOM = 2_000, 20_000, 100_000
#: Packets the stranger writes per stream, and its streams open at once per target: far more than
#: the node's 128 unauthenticated slots, so newcomers push the oldest out (a private Tor network on
#: a loaded machine takes seconds per stream: only width makes the flood fast); fewer than 128 for
#: the handshakes, so that they complete and their packets are sent.
PER_STREAM, STREAMS, HANDSHAKE_STREAMS = 50, 400, 100
#: Messages alice sends bob, one every MAIL_GAP seconds: MAIL_SAMPLES before the flood and as many
#: after it (together the baseline: windows on both sides cancel a drift of the shared machine's
#: load), and during the flood as long as it lasts (at least MAIL_SAMPLES). Latency runs from the
#: message's entry in alice's outbox to bob's inbox: the start-up of the `anonmail send` process
#: (a Python interpreter, seconds of CPU on a loaded machine) is the user's computer, not the network.
MAIL_SAMPLES, MAIL_GAP = 12, 1.5
#: The issue's bound: the mean latency during the flood within 25 % of the baseline's.
LATENCY_BOUND = 1.25


def _received_at(net: Testnet, user: str, subjects: list[str]) -> dict[str, float]:
    return {m["subject"]: float(m["received_at"]) for m in _inbox(net, user) if m["subject"] in subjects}


def _mail_latencies(net: Testnet, tag: str, more: Callable[[], bool] = lambda: False) -> list[float]:
    """Alice sends MAIL_SAMPLES messages (more while ``more()``) MAIL_GAP s apart; each one's
    seconds from alice's outbox to bob's inbox, each delivered exactly once."""
    started: dict[str, float] = {}
    while len(started) < MAIL_SAMPLES or (more() and len(started) < 10 * MAIL_SAMPLES):
        subject = f"{tag} {len(started)}"
        started[subject] = time.time()
        _send(net, "alice", "bob", subject)
        time.sleep(max(0.0, started[subject] + MAIL_GAP - time.time()))
    _deliver_and_check(net, list(started))
    queued = {m["subject"]: float(m["queued_at"]) for m in _outbox(net, "alice") if m["subject"] in started}
    arrived = _received_at(net, "bob", list(started))
    print(f"{tag}: mean {statistics.mean(arrived[s] - t for s, t in started.items()):.2f} s counted from the "
          f"start of `anonmail send`, {statistics.mean(queued[s] - t for s, t in started.items()):.2f} s of "
          f"it the command's own start-up", flush=True)
    return [arrived[s] - queued[s] for s in started]


def _summary(latencies: list[float]) -> str:
    error = statistics.stdev(latencies) / len(latencies) ** 0.5
    return (f"mean {statistics.mean(latencies):.2f} ± {error:.2f} s, median {statistics.median(latencies):.2f} s, "
            f"n={len(latencies)}")


def _renice(pid: int) -> None:
    """The lowest CPU priority for every thread of ``pid`` (Linux: niceness is per thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.setpriority(os.PRIO_PROCESS, int(tid), 19)


async def _stranger_floods(injector: Injector, address: str, link_key: bytes, slow: list[bytes],
                           sent: Counter) -> None:
    """The three waves at one node, one after the other; each stream waits until the node closes it."""
    noise = [encode_frame(Packet(os.urandom(PACKET_BYTES))) for _ in range(PER_STREAM)]
    hello = encode_frame(Hello(PROTOCOL_VERSION, Role.MIX))

    async def attempt(kind: str, payload: list[bytes]) -> bool:
        """One stream; whether its packets were written (else the node cut the handshake short)."""
        link, written = await injector.connect(address), False
        try:
            async with link:
                with anyio.fail_after(120):
                    if kind == "max_delay":  # a handshake under a key of its own: no consensus lists it
                        await initiate(FramedStream(link), generate_link_secret(), link_key)
                        await link.send(b"".join(payload))
                    else:
                        await link.send(hello + b"".join(payload))
                    written = True
                    sent[kind] += 1
                    sent[f"{kind}_packets"] += len(payload)
                    while True:  # until the node closes it (EndOfStream)
                        await link.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, LinkError, LinkAuthError, OSError):
            sent[f"{kind}_closed"] += 1  # closed by the node (pushed out, timed out or refused)
        return written

    async def stream(kind: str, payload: list[bytes], limit: anyio.Semaphore) -> None:
        async with limit:
            for _ in range(5):  # a handshake the node cut short is tried again, so its packets go out
                if await attempt(kind, payload) or kind != "max_delay":
                    return

    waves = [("random", FLOOD_RANDOM // PER_STREAM, noise), ("quiet", FLOOD_QUIET, []),
             ("max_delay", FLOOD_MAX_DELAY // PER_STREAM, (slow * PER_STREAM)[:PER_STREAM])]
    for kind, count, payload in waves:
        limit, t0 = anyio.Semaphore(HANDSHAKE_STREAMS if kind == "max_delay" else STREAMS), time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(stream, kind, payload, limit)
        print(f"stranger at {address[8:16]}: {count} {kind} streams in {time.monotonic() - t0:.0f} s", flush=True)


@pytest.mark.timeout(900)
def test_a_strangers_flood_is_refused_and_counted_while_mail_flows(net: Testnet, tmp_path: Path):
    targets = {"mix1b": net.pid("mix1b"), "alpha": net.pid("alpha")}
    _send(net, "alice", "bob", "warm-up")  # the first message after start-up waits for circuits
    _deliver_and_check(net, ["warm-up"])
    before_flood = _mail_latencies(net, "before the flood")
    print(f"mail latency before the flood: {[round(x, 1) for x in before_flood]}", flush=True)
    rss_before = {name: _rss_kib(pid) for name, pid in targets.items()}
    refused_before = {name: Counter(_refused(net, name)) for name in targets}
    accepted_before = {name: net.node_status(name)["inbound_accepted"] for name in targets}
    sent = {name: Counter() for name in targets}
    failures: list[BaseException] = []
    timing = {}

    async def flood() -> None:
        async with Injector(net, tmp_path / "stranger", own_tor=True) as injector:
            _renice(net.client_tor_pid("stranger"))
            slow = [encode_frame(Packet(injector.drop_packet("mix1b", sphinx.MAX_DELAY_MS))) for _ in range(20)]
            t0 = time.monotonic()
            async with anyio.create_task_group() as tg:
                for name in targets:
                    tg.start_soon(_stranger_floods, injector, onion(net, name),
                                  injector.consensus.by_name(name).link_key, slow, sent[name])
            timing["flood_s"] = time.monotonic() - t0

    def run_flood() -> None:
        # The stranger has a machine of its own; here it shares 2 cores with every node and tor
        # relay, so its flood generator (this thread and the threads it starts) and its own tor run
        # at the lowest priority. What the flood costs the nodes (their tor's onion-service work,
        # the handshakes, the refusals) runs at normal priority and is in the figures.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            anyio.run(flood)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    flooder = threading.Thread(target=run_flood, name="stranger")
    flooder.start()
    try:
        time.sleep(10.0)  # the stranger's tor builds its circuits, the first wave is under way
        during_flood = _mail_latencies(net, "during the flood", more=flooder.is_alive)
        print(f"mail latency during the flood: {[round(x, 1) for x in during_flood]}", flush=True)
    finally:
        flooder.join(900)
    assert not failures, failures
    assert len(during_flood) > MAIL_SAMPLES, "the flood was over before alice had sent her messages"
    after_flood = _mail_latencies(net, "after the flood")
    print(f"mail latency after the flood: {[round(x, 1) for x in after_flood]}", flush=True)
    baseline = before_flood + after_flood
    mean_before, mean_during = statistics.mean(baseline), statistics.mean(during_flood)
    print(f"mail latency without the flood: {_summary(baseline)}; during it: {_summary(during_flood)} "
          f"({mean_during / mean_before - 1:+.0%}); flood took {timing['flood_s']:.0f} s", flush=True)
    for name, pid in targets.items():
        assert net.pid(name) == pid, f"the flooded {name} died"
        status = net.node_status(name)
        assert status["queue_length"] < 100, (name, status["queue_length"])  # the flood queued nothing
        streams = sum(sent[name][f"{kind}_closed"] for kind in ("quiet", "max_delay", "random"))
        # A connection still waiting for its handshake is refused when its 10 s are up.
        _wait(lambda: sum(_refused(net, name).values()) - sum(refused_before[name].values()) >= streams
              and net.node_status(name)["inbound_unauthenticated"] == 0, 60,
              lambda: f"{name} refused {_refused(net, name)}, before the flood {refused_before[name]}")
        refused = Counter(_refused(net, name))
        refused.subtract(refused_before[name])
        accepted = net.node_status(name)["inbound_accepted"] - accepted_before[name]
        growth_mib = (_rss_kib(pid) - rss_before[name]) / 1024
        print(f"{name}: stranger sent {dict(sent[name])}; {accepted} connections accepted, refusals "
              f"{dict(+refused)}; RSS grew by {growth_mib:.1f} MiB", flush=True)
        assert sent[name]["quiet"] == FLOOD_QUIET and sent[name]["random_packets"] == FLOOD_RANDOM
        assert sent[name]["max_delay_packets"] == FLOOD_MAX_DELAY
        # Every stranger connection is refused once, under its reason: pushed out by newcomers or
        # timed out before a handshake, an unknown link key after one, a packet where a handshake
        # message belongs (the rest of its stream is never read). The node may accept more streams
        # than the stranger opened (its tor retries a stream attempt that is slow to connect), and
        # the few others are the users' and neighbours' connections, admitted.
        assert streams <= sum(refused.values()) <= accepted <= sum(refused.values()) + 20, (name, accepted, refused)
        assert refused["too_many_unauthenticated"] + refused["handshake_timeout"] >= FLOOD_QUIET, (name, refused)
        assert refused["unknown_peer"] > 0 and refused["unexpected"] > 0, (name, refused)
        assert growth_mib < 64, f"{name} grew by {growth_mib:.1f} MiB"
    assert mean_during <= LATENCY_BOUND * mean_before, (baseline, during_flood)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_mail_client_bridge_over_tor_carries_an_attachment_and_threads_the_reply(net: Testnet, tmp_path: Path):
    """Alice's mail client submits over her bridge; Bob's client reads it over his, replies; all over Tor."""
    import re
    import smtplib
    import sys
    from email.message import EmailMessage

    from tests.network.bridge.harness import User, find, submit

    users, procs = {}, []
    try:
        for name in ("alice", "bob"):
            shown = net.anonmail(name, "bridge", "--setup")
            address = re.search(r"user name:\s+(\S+)", shown).group(1)
            password = re.search(r"password:\s+(\S+)", shown).group(1)
            user = users[name] = User(name, net.home(name), address, password, _free_port(), _free_port())
            with open(tmp_path / f"bridge-{name}.log", "wb") as log:  # the child keeps its own descriptor
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "anonmail.cli", "bridge", "--home", str(user.home), "--smtp-port",
                     str(user.smtp_port), "--imap-port", str(user.imap_port)], stdout=log, stderr=subprocess.STDOUT))

            def listening(u=user) -> bool:
                try:
                    smtplib.SMTP("127.0.0.1", u.smtp_port, timeout=5).quit()
                    return True
                except OSError:
                    return False

            _wait(listening, 60, lambda n=name: f"{n}'s bridge: {(tmp_path / f'bridge-{n}.log').read_text()[-2000:]}")
        alice, bob = users["alice"], users["bob"]
        attachment = os.urandom(100 * 1024)
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = alice.address, "bob@petname.anonmail", "over tor, from a mail client"
        msg.set_content("see the attachment\n")
        msg.add_attachment(attachment, maintype="application", subtype="octet-stream", filename="data.bin")
        submit(alice, msg)
        found: list = []
        _wait(lambda: found.append(find(bob, "over tor, from a mail client")) or found[-1] is not None, 300,
              lambda: f"alice's outbox: {_outbox(net, 'alice')}")
        got = found[-1]
        assert [a.get_payload(decode=True) for a in got.iter_attachments()] == [attachment]
        reply = EmailMessage()
        reply["From"], reply["To"], reply["Subject"] = bob.address, alice.address, "Re: over tor"
        reply["In-Reply-To"] = got["Message-ID"]
        reply.set_content("received\n")
        submit(bob, reply)
        found.clear()
        _wait(lambda: found.append(find(alice, "Re: over tor")) or found[-1] is not None, 300,
              lambda: f"bob's outbox: {_outbox(net, 'bob')}")
        assert found[-1]["In-Reply-To"] == got["Message-ID"]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_attack_strangers_are_refused_over_tor_and_the_consensus_stays_as_admitted(net: Testnet, tmp_path: Path):
    """Over Tor, as an outsider: a provider's name under a smaller key, a new mix, a weak Sphinx key."""
    from anonmail.clients.directory import upload_descriptor
    from anonmail.core import pki
    from anonmail.core.keys import IdentityKey
    from anonmail.errors import DirectoryError

    async def attack() -> tuple[pki.Consensus, pki.Consensus, dict[str, str]]:
        async with Injector(net, tmp_path) as injector:
            before = injector.consensus
            alpha = before.by_name("alpha")
            seed = 0
            while (thief := IdentityKey.from_seed(seed.to_bytes(32, "big"))).public >= alpha.identity_key:
                seed += 1
            epoch = before.epoch
            address = [onion(net, "alpha")]
            forged = {
                "thief": pki.sign_descriptor(thief, name="alpha", role="provider", layer=0, epoch=epoch + 1,
                                             sphinx_key=sphinx.generate_node_keypair()[1], addresses=address),
                "sybil": pki.sign_descriptor(IdentityKey.generate(), name="mix1z", role="mix", layer=1,
                                             epoch=epoch + 1, sphinx_key=sphinx.generate_node_keypair()[1],
                                             addresses=address),
            }
            reasons = {}
            for what, descriptor in forged.items():
                try:
                    await upload_descriptor(injector.router, [a for a, _ in net.pins], descriptor, role=Role.MIX)
                except DirectoryError as exc:
                    reasons[what] = exc.reason
            directory = DirectoryClient(injector.router, net.pins, 2, production=True, epoch_seconds=EPOCH)
            with anyio.fail_after(120):
                after = await directory.fetch(epoch)
            return before, after, reasons

    before, after, reasons = anyio.run(attack)
    assert reasons == {"thief": "not_admitted", "sybil": "not_admitted"}
    assert after.digest() == before.digest()
    status = json.loads(subprocess.run(
        [executable("mixnode"), "authority",
         "status", "--config", str(net.dir_of("auth1") / "authority.toml"), "--json"],
        capture_output=True, text=True, timeout=60).stdout)
    assert sorted(e["name"] for e in status["admitted"]) == sorted(d.name for d in before.nodes)
    # alpha's users, who pinned alpha's key at init, keep sending and receiving.
    assert (net.node_status("alice") or {}).get("provider_rebound") is None
    subjects = ["after the attack"]
    _send(net, "alice", "bob", subjects[0])
    _deliver_and_check(net, subjects)


def _code_from(proc: subprocess.Popen, timeout: float) -> str:
    """Read ``anonmail invite``'s output until it shows the code."""
    import re
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline, seen = time.monotonic() + timeout, ""
    while (found := re.search(r"your invitation code: (\S+)", seen)) is None or "waiting" not in seen:
        if time.monotonic() > deadline or proc.poll() is not None:
            pytest.fail(f"no code from `anonmail invite` in {timeout:.0f} s: {seen!r} {proc.stderr.read() if proc.poll() is not None else ''}")
        if selector.select(1.0):  # raw reads: a buffered readline would hide lines that came in one chunk
            seen += os.read(proc.stdout.fileno(), 65536).decode()
    return found.group(1)


def _contacts(net: Testnet, user: str) -> str:
    return run_command([executable("anonmail"), "contact", "list", "--home", str(net.home(user))],
                       f"anonmail contact list ({user})").strip()


def test_invite_and_accept_over_tor_verify_the_contacts_and_mail_flows_both_ways(net: Testnet):
    """The rendezvous at alice's provider over Tor: bob, a pasted (unverified) contact, becomes verified."""
    assert _contacts(net, "alice").endswith("\tunverified")
    inviter = subprocess.Popen([executable("anonmail"), "invite", "--name", "bob", "--home", str(net.home("alice"))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        code = _code_from(inviter, 180)
        assert code.endswith("@alpha")
        accepted = net.anonmail("bob", "accept", code, "--name", "alice")
        out, err = inviter.communicate(timeout=240)
    finally:
        if inviter.poll() is None:
            inviter.kill()
            inviter.communicate()  # reap it and close its pipes
    assert inviter.returncode == 0, err
    assert f"bob is now your contact (verified): {net.address('bob')}" in out
    assert f"alice is now your contact (verified): {net.address('alice')}" in accepted
    assert _contacts(net, "alice") == f"bob\t{net.address('bob')}\tverified"
    assert _contacts(net, "bob") == f"alice\t{net.address('alice')}\tverified"
    # The code worked once; the rendezvous no longer has it.
    with pytest.raises(TestnetError, match="ask for a new invite"):
        net.anonmail("bob", "accept", code)
    _send(net, "alice", "bob", "invited: to bob")
    _send(net, "bob", "alice", "invited: to alice")
    _wait(lambda: _arrived(net, "bob", ["invited: to bob"]) and _arrived(net, "alice", ["invited: to alice"]), 300,
          lambda: f"bob: {_inbox(net, 'bob')}; alice: {_inbox(net, 'alice')}")
