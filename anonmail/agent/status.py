"""The agent's status file: what ``anonmail status`` shows while ``anonmail agent`` runs.

``anonmail agent`` rewrites ``status.json`` in the user's home about once a second, atomically
(:func:`anonmail.daemon.status.write_status`), as mix nodes and providers do in their data directories,
and writes ``running: false`` when it stops cleanly. A reader decides whether the agent is alive
from ``running``, ``pid`` and the file's age (:func:`anonmail.daemon.status.liveness`).

The file holds counters and the provider's (public) name, never the user's address, identity,
contacts or message ids::

    role "agent", pid, started, updated (= updated_at), running, connected, provider,
    packets_sent = packets_real + packets_cover (packets_drop + packets_loop), loops_sent,
    loops_returned, loops_lost, loop_loss_rate, loop_alarm, loop_suspects, retransmissions, slots_missed, fetches, entries_fetched, acks,
    fragments_received, duplicates_merged, delivered, bad_entries, bad_entry_reasons,
    partials_expired, partials_evicted, mailbox_full, mailbox_evicted, outbox_queued,
    outbox_acknowledged, outbox_failed, inbox, errors, last_error, last_error_at, detail_as_of

The file is written 0600 (:func:`~anonmail.daemon.status.write_status`), but it may still be
read by a log collector or a backup, so it must not undo what cover traffic hides. The counters
that tell real traffic from cover (:data:`DETAIL_KEYS`: the real/drop split, ACKs, received
fragments and bad entries, the outbox and inbox counts) are refreshed only every :data:`DETAIL_INTERVAL` seconds,
on a schedule that does not depend on what the agent does, and ``detail_as_of`` says when; the
clean-stop write carries them as they are at the end. Every second the file shows only what cover
already shows: packets sent in all, loops, fetch rounds, the session, errors, a full mailbox.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread

from anonmail.agent.service import Agent
from anonmail.errors import StoreError
from anonmail.daemon.status import write_status

__all__ = ["DETAIL_INTERVAL", "DETAIL_KEYS", "REPORT_INTERVAL", "STATUS_INTERVAL", "DetailSnapshot", "agent_status",
           "log_counters", "report_counters", "write_agent_status", "keep_status"]

log = logging.getLogger("anonmail.agent")

#: Seconds between rewrites of the status file (readers call it stale after ``STALE_SECONDS``).
STATUS_INTERVAL = 1.0
#: Seconds between two counter lines in the agent's log.
REPORT_INTERVAL = 30.0
#: Seconds between refreshes of the counters that separate real traffic from cover.
DETAIL_INTERVAL = 600.0
#: Status keys that, alone or together, tell real packets and mail from cover.
DETAIL_KEYS = ("packets_real", "packets_drop", "packets_cover", "retransmissions", "acks", "entries_fetched",
               "fragments_received", "duplicates_merged", "delivered", "bad_entries", "bad_entry_reasons",
               "partials_expired", "partials_evicted", "mailbox_evicted", "outbox_queued", "outbox_acknowledged",
               "outbox_failed", "inbox")


class DetailSnapshot:
    """The :data:`DETAIL_KEYS` as of the last refresh, at most one per ``interval`` seconds."""

    def __init__(self, interval: float = DETAIL_INTERVAL) -> None:
        self.interval = interval
        self.values: dict = {}
        self.at: float | None = None

    def apply(self, status: dict, now: float) -> dict:
        """``status`` with its detail counters replaced by the snapshot (refreshed if it is due)."""
        if self.at is None or now - self.at >= self.interval:
            self.values = {k: status[k] for k in DETAIL_KEYS if k in status}
            self.at = now if self.at is None else self.at + self.interval * ((now - self.at) // self.interval)
        return {**status, **self.values, "detail_as_of": self.at}


def agent_status(agent: Agent, *, started: float, running: bool, now: float | None = None,
                 detail: DetailSnapshot | None = None) -> dict:
    """The status document at ``now`` (default: the agent's wall clock); reads the agent's store, so
    call it from a worker thread when the agent is threaded. With ``detail``, the counters that
    separate real from cover are the snapshot's; without, they are current (``detail_as_of`` = now).

    Raises StoreError when the store cannot be read.
    """
    now = agent.wall_clock() if now is None else now
    status = {
        "role": "agent",
        "pid": os.getpid(),
        "started": started,
        "updated": now,
        "updated_at": now,
        "running": running,
        "connected": agent.connected if running else False,
        "provider": agent.settings.provider,
        "provider_rebound": agent.provider_rebound,
        "directory_grace": agent.directory.in_grace,
        **agent.stats.as_dict(),
        **agent.store.counts(),
        "detail_as_of": now,
    }
    return detail.apply(status, now) if detail is not None else status


def write_agent_status(agent: Agent, home: Path, *, started: float, running: bool,
                       detail: DetailSnapshot | None = None) -> bool:
    """Write ``home/status.json`` now; False (and a warning) if it cannot be read or written."""
    try:
        write_status(home, agent_status(agent, started=started, running=running, detail=detail))
    except OSError as exc:
        log.warning("cannot write the status file: %s", exc.strerror)
        return False
    except StoreError as exc:
        log.warning("cannot read the store for the status file (%s)", type(exc).__name__)
        return False
    return True


async def keep_status(agent: Agent, home: Path, *, started: float, interval: float = STATUS_INTERVAL,
                      task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
    """Write the status file now (then report started) and every ``interval`` s until cancelled.

    The counters that separate real from cover change in the file every :data:`DETAIL_INTERVAL`
    seconds only. Cancelling leaves the last file as it is; write ``running: false`` (and the
    counters as they are) after a clean stop with :func:`write_agent_status`.
    """
    detail = DetailSnapshot()

    async def once() -> None:
        write = functools.partial(write_agent_status, agent, home, started=started, running=True, detail=detail)
        if agent.settings.threads:
            await anyio.to_thread.run_sync(write)
        else:
            write()

    await once()
    task_status.started()
    deadline = anyio.current_time()
    while True:
        deadline = max(deadline + interval, anyio.current_time())
        await anyio.sleep(max(0.0, deadline - anyio.current_time()))  # a write may outlast the interval
        await once()


def log_counters(agent: Agent) -> None:
    """One log line of counters: at INFO only what cover shows anyway, the real/cover split at DEBUG."""
    s = agent.stats
    log.info("packets: %d sent, %d loops back; %d fetches", s.packets_sent, s.loops_returned, s.fetches)
    log.debug("packets: %d real, %d cover; %d ACKs, %d received", s.packets_real, s.packets_cover, s.acks,
              s.fragments_received)


async def report_counters(agent: Agent, interval: float = REPORT_INTERVAL) -> None:
    """Log :func:`log_counters` every ``interval`` seconds until cancelled."""
    while True:
        await anyio.sleep(interval)
        log_counters(agent)
