"""The agent's status file: what ``anonmail status`` shows while ``anonmail agent`` runs.

``anonmail agent`` rewrites ``status.json`` in the user's home about once a second, atomically
(:func:`anonmail.daemon.status.write_status`), as mix nodes and providers do in their data directories,
and writes ``running: false`` when it stops cleanly. A reader decides whether the agent is alive
from ``running``, ``pid`` and the file's age (:func:`anonmail.daemon.status.liveness`).

The file holds counters and the provider's (public) name, never the user's address, identity,
contacts or message ids::

    role "agent", pid, started, updated (= updated_at), running, connected, provider,
    packets_sent = packets_real + packets_cover (packets_drop + packets_loop), loops_sent,
    loops_returned, retransmissions, slots_missed, fetches, entries_fetched, acks,
    fragments_received, duplicates_merged, delivered, bad_entries, bad_entry_reasons,
    partials_expired, partials_evicted, mailbox_full, mailbox_evicted, outbox_queued,
    outbox_acknowledged, outbox_failed, inbox, errors, last_error, last_error_at
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

__all__ = ["STATUS_INTERVAL", "agent_status", "write_agent_status", "keep_status"]

log = logging.getLogger("anonmail.agent")

#: Seconds between rewrites of the status file (readers call it stale after ``STALE_SECONDS``).
STATUS_INTERVAL = 1.0


def agent_status(agent: Agent, *, started: float, running: bool, now: float | None = None) -> dict:
    """The status document at ``now`` (default: the agent's wall clock); reads the agent's store, so
    call it from a worker thread when the agent is threaded.

    Raises StoreError when the store cannot be read.
    """
    now = agent.wall_clock() if now is None else now
    return {
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
    }


def write_agent_status(agent: Agent, home: Path, *, started: float, running: bool) -> bool:
    """Write ``home/status.json`` now; False (and a warning) if it cannot be read or written."""
    try:
        write_status(home, agent_status(agent, started=started, running=running))
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

    Cancelling leaves the last file as it is; write ``running: false`` after a clean stop with
    :func:`write_agent_status`.
    """
    async def once() -> None:
        if agent.settings.threads:
            await anyio.to_thread.run_sync(
                functools.partial(write_agent_status, agent, home, started=started, running=True))
        else:
            write_agent_status(agent, home, started=started, running=True)

    await once()
    task_status.started()
    deadline = anyio.current_time()
    while True:
        deadline = max(deadline + interval, anyio.current_time())
        await anyio.sleep(deadline - anyio.current_time())
        await once()
