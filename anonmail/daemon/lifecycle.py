"""Running a long-lived service from the command line until SIGINT or SIGTERM.

Every daemon command (``mixnode run``, ``mixnode authority run``, ``anonmail provider run``,
``anonmail agent``) serves the same way: start the service in a task group, report it started,
and on SIGINT/SIGTERM cancel the group, so every task unwinds and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

__all__ = ["serve_until_signal"]


async def serve_until_signal(
    run: Callable[..., Awaitable[Any]],
    *,
    log: logging.Logger,
    on_started: Callable[[Any, anyio.abc.TaskGroup], None] | None = None,
) -> None:
    """Start ``run`` (a ``tg.start``-able service), call ``on_started(value, tg)``, serve until a signal."""
    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            value = await tg.start(run)
            if on_started is not None:
                on_started(value, tg)
            async for signum in signals:
                log.info("signal %s: stopping", signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                return
