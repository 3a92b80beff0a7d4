"""Containment: one bad item from outside never stops a loop, a node or an agent.

Every loop that handles remote input (a mix's packets, a provider's client requests and
deliveries, an agent's fetched entries, an authority's requests) handles one item at a time.
Errors anonmail raises on purpose are handled where they are expected; anything else that one
item makes the code raise is a bug an attacker may be able to trigger at will. Such an item is
dropped, the failure is counted under a reason, and the reason is logged the first time it is
seen (later ones are only counted, so a stranger repeating a poison item cannot flood the log)::

    faults = FaultCounter(log, "mix mix-1-0")
    for packet in batch:
        try:
            handle(packet)
        except Exception as exc:          # never BaseException: cancellation must pass
            faults.record(exc)

A reason is the exception's type and the innermost anonmail source line that raised it
(``ValueError at anonmail/core/envelope.py:72``): never the exception's message, which may quote
the input (mail, keys, addresses).
"""

from __future__ import annotations

import logging
import traceback
from collections import Counter
from pathlib import PurePath

__all__ = ["FaultCounter", "fault_reason"]

_MAX_REASONS = 64


def fault_reason(exc: BaseException) -> str:
    """``Type at package/module.py:line`` of the deepest anonmail/mixnode frame; no message text."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        parts = PurePath(frame.filename).parts
        for root in ("anonmail", "mixnode"):
            if root in parts:
                where = f"{'/'.join(parts[parts.index(root):])}:{frame.lineno}"
                break
    name = type(exc).__name__
    return f"{name} at {where}" if where else name


class FaultCounter:
    """Counts unexpected per-item failures by reason; logs each new reason once."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        """Items dropped because of an unexpected failure."""
        return sum(self.counts.values())

    def record(self, exc: BaseException, item: str = "item") -> str:
        """Count one dropped ``item``; log the reason if it is new; return the reason."""
        reason = fault_reason(exc)
        if reason not in self.counts and len(self.counts) >= _MAX_REASONS:
            reason = "other"
        if reason not in self.counts:
            self.logger.error("%s: dropped a %s after an unexpected %s (further ones are only counted)",
                              self.what, item, reason)
        self.counts[reason] += 1
        return reason

    def as_dict(self) -> dict[str, int]:
        """JSON-ready counts by reason."""
        return dict(sorted(self.counts.items()))
