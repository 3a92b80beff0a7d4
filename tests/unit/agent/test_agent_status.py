"""`anonmail status`: the agent's status file, read back as a table or JSON; exit 3 when no agent runs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from anonmail.agent.service import AgentSettings, AgentStats
from anonmail.agent.status import agent_status
from anonmail.agent.store import AgentStore
from anonmail.cli import main
from anonmail.daemon.cli import EXIT_NOT_RUNNING as NOT_RUNNING
from anonmail.daemon.status import write_status

REQUIRED = {
    "role", "pid", "updated", "started", "running", "provider", "packets_sent", "packets_real", "packets_cover",
    "loops_sent", "loops_returned", "retransmissions", "fetches", "entries_fetched", "outbox_queued",
    "outbox_acknowledged", "outbox_failed", "inbox", "errors", "last_error",
}


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def store(tmp_path):
    s = AgentStore(tmp_path / "agent.sqlite")
    yield s
    s.close()


def fake_agent(store: AgentStore) -> SimpleNamespace:
    stats = AgentStats(packets_real=5, packets_drop=30, packets_loop=7, retransmissions=2, loops_returned=6,
                       fetches=11, entries_fetched=9, errors=1, last_error="fetch: TransportError: timeout")
    return SimpleNamespace(stats=stats, store=store, connected=True, provider_rebound=None, directory=SimpleNamespace(in_grace=False), wall_clock=time.time,
                           settings=AgentSettings(provider="alpha", threads=False))


def queue(store: AgentStore, n: int, kind: str = "mail") -> bytes:
    mid = os.urandom(16)
    store.queue_message(message_id=mid, recipient=f"{'a' * 56}@beta", kind=kind, subject=f"s{n}", body=b"x",
                        size=1, fragments=1, now=time.time())
    return mid


def test_status_document_has_the_counters_and_no_address(store):
    acked, failed = queue(store, 1), queue(store, 2)
    queue(store, 3)
    queue(store, 4, kind="keys")  # key announcements are not the user's mail
    store.record_transmission(acked, 0, os.urandom(16), b"k", time.time())
    store.acknowledge(acked, 0, time.time())
    store.fail_message(failed, "no such user")
    store.finish_message(sender_fpr=os.urandom(32), sender=f"{'b' * 56}@beta", message_id=os.urandom(16),
                         subject="hi", body=b"hello", sent_at=1, now=time.time())
    status = agent_status(fake_agent(store), started=1000.0, running=True, now=1234.5)
    assert REQUIRED <= set(status)
    assert status["role"] == "agent" and status["pid"] == os.getpid() and status["provider"] == "alpha"
    assert status["updated"] == status["updated_at"] == 1234.5 and status["started"] == 1000.0
    assert status["running"] is True and status["connected"] is True
    assert (status["packets_sent"], status["packets_real"], status["packets_cover"]) == (42, 5, 37)
    assert (status["loops_sent"], status["loops_returned"], status["retransmissions"]) == (7, 6, 2)
    assert (status["fetches"], status["entries_fetched"]) == (11, 9)
    assert (status["outbox_queued"], status["outbox_acknowledged"], status["outbox_failed"], status["inbox"]) \
        == (1, 1, 1, 1)
    assert (status["errors"], status["last_error"]) == (1, "fetch: TransportError: timeout")
    assert "address" not in status and "@" not in json.dumps(status)
    assert agent_status(fake_agent(store), started=1000.0, running=False)["connected"] is False


def test_status_without_an_agent_exits_3_with_a_message(tmp_path, capsys):
    code, out, err = cli(capsys, "status", "--home", str(tmp_path / "nobody"))
    assert code == NOT_RUNNING and out == ""
    assert "no agent is running" in err and "no status file" in err and "anonmail agent" in err
    code, out, err = cli(capsys, "status", "--json", "--home", str(tmp_path / "nobody"))
    assert code == NOT_RUNNING and "no agent is running" in err


def live(**extra) -> dict:
    now = time.time()
    return {"role": "agent", "pid": os.getpid(), "started": now - 60, "updated": now, "updated_at": now,
            "running": True, "connected": True, "provider": "alpha", "packets_sent": 1234, "packets_real": 34,
            "packets_cover": 1200, "packets_drop": 1000, "packets_loop": 200, "loops_sent": 200,
            "loops_returned": 190, "retransmissions": 3, "fetches": 12, "entries_fetched": 40, "outbox_queued": 2,
            "outbox_acknowledged": 5, "outbox_failed": 0, "inbox": 4, "errors": 0, "last_error": None} | extra


def test_status_of_a_running_agent_as_table_and_json(tmp_path, capsys):
    write_status(tmp_path, live())
    code, out, err = cli(capsys, "status", "--home", str(tmp_path))
    assert code == 0, err
    assert "agent at provider alpha" in out and "running" in out
    assert "1234 sent (200 loops)" in out and "34 real, 1200 cover" in out and "200 sent, 190 back" in out
    assert "2 waiting for ACKs, 5 acknowledged, 0 failed" in out
    code, out, err = cli(capsys, "status", "--json", "--home", str(tmp_path))
    assert code == 0 and err == ""
    status = json.loads(out)
    assert status["running"] is True and status["packets_sent"] == 1234 and status["inbox"] == 4


def test_status_says_when_the_mailbox_at_the_provider_is_full(tmp_path, capsys):
    write_status(tmp_path, live())
    code, out, _ = cli(capsys, "status", "--home", str(tmp_path))
    assert code == 0 and "FULL" not in out
    write_status(tmp_path, live(mailbox_full=True, mailbox_evicted=17, bad_entries=2))
    code, out, _ = cli(capsys, "status", "--home", str(tmp_path))
    assert code == 0 and "FULL at the provider" in out and "17 entries dropped" in out
    assert "2 dropped (did not open or parse)" in out


def test_status_shows_the_loop_alarm_and_its_suspects(tmp_path, capsys):
    write_status(tmp_path, live(loops_lost=3))
    code, out, _ = cli(capsys, "status", "--home", str(tmp_path))
    assert code == 0 and "200 sent, 190 back, 3 lost" in out and "loop alarm" not in out
    write_status(tmp_path, live(loops_lost=40, loop_alarm=True, loop_loss_rate=0.42,
                                loop_suspects=["mix-2-0 (40 of 40 lost)", "mix-1-1 (12 of 30 lost)"]))
    code, out, _ = cli(capsys, "status", "--home", str(tmp_path))
    assert code == 0 and "loop alarm" in out and "42% of your recent loops were lost" in out
    assert "mix-2-0" in out and "attack" in out  # (the table wraps the long line)


@pytest.mark.parametrize("change, why", [
    ({"running": False}, "it stopped"),
    ({"pid": None}, "its process is gone"),
    ({"updated_at": time.time() - 600}, "no update for"),
])
def test_a_stopped_crashed_or_stale_agent_is_not_running(tmp_path, capsys, change, why):
    status = live(**change)
    if change.get("pid", 0) is None:
        # A PID above the kernel's limit: no process can have it (no child process needed).
        status["pid"] = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    write_status(tmp_path, status)
    code, out, err = cli(capsys, "status", "--home", str(tmp_path))
    # Exit 3 and why on stderr, as every daemon's status; the last known state still on stdout.
    assert code == NOT_RUNNING and why in err and "no agent is running" in err
    assert "agent at provider alpha" in out and f"not running ({why}" in out
    code, out, err = cli(capsys, "status", "--json", "--home", str(tmp_path))
    assert code == NOT_RUNNING and json.loads(out)["running"] is False


def test_attack_the_status_file_is_private_to_its_owner(tmp_path):
    """Another local user must not read the counters (0644 under the default umask before)."""
    os.umask(0o022)
    stale = tmp_path / ".status.json.tmp"
    stale.write_text("{}")  # left 0644 by an older version
    write_status(tmp_path, live())
    assert (tmp_path / "status.json").stat().st_mode & 0o777 == 0o600
    write_status(tmp_path, live())
    assert (tmp_path / "status.json").stat().st_mode & 0o777 == 0o600


def test_attack_info_logs_do_not_split_real_from_cover(store, caplog):
    """A log collector at INFO sees packets sent in all, never which were real (DEBUG only)."""
    import logging

    from anonmail.agent.status import log_counters

    agent = fake_agent(store)
    agent.stats.acks, agent.stats.fragments_received = 4, 3
    with caplog.at_level(logging.INFO, logger="anonmail.agent"):
        log_counters(agent)
    info = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "42 sent" in info
    assert not any(word in info for word in ("real", "cover", "ACK", "received")), info
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="anonmail.agent"):
        log_counters(agent)
    debug = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert "5 real, 37 cover" in debug and "4 ACKs" in debug


def test_the_real_cover_counters_change_only_every_detail_interval(store):
    from anonmail.agent.status import DETAIL_INTERVAL, DETAIL_KEYS, DetailSnapshot

    agent, detail = fake_agent(store), DetailSnapshot()
    first = agent_status(agent, started=0.0, running=True, now=1000.0, detail=detail)
    agent.stats.packets_real += 1
    agent.stats.packets_loop += 1
    queue(store, 9)
    second = agent_status(agent, started=0.0, running=True, now=1001.0, detail=detail)
    assert {k: second[k] for k in DETAIL_KEYS} == {k: first[k] for k in DETAIL_KEYS}
    assert second["detail_as_of"] == 1000.0 and second["packets_sent"] == first["packets_sent"] + 2
    later = agent_status(agent, started=0.0, running=True, now=1000.0 + DETAIL_INTERVAL + 3, detail=detail)
    assert later["packets_real"] == 6 and later["outbox_queued"] == 1
    assert later["detail_as_of"] == 1000.0 + DETAIL_INTERVAL  # on the schedule, not when asked
    final = agent_status(agent, started=0.0, running=False, now=1000.0 + DETAIL_INTERVAL + 4)
    assert final["packets_real"] == 6  # a clean stop writes them as they are
