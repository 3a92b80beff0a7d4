"""When authorities build an epoch's document: build points derived from shared settings (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from anonmail.core import pki

__all__ = ["build_points", "next_build_point"]


def build_points(epoch: int, epoch_seconds: int, lead: int, round_seconds: int) -> Iterator[int]:
    """The wall-clock cutoffs at which every authority tries to build ``epoch``'s consensus.

    The first lies ``lead`` seconds before the epoch starts; then one every ``round_seconds``
    until the epoch ends. All authorities derive the same points from the same settings.
    """
    first = pki.epoch_start(epoch, epoch_seconds) - lead
    end = pki.epoch_start(epoch + 1, epoch_seconds)
    point = first
    while point < end:
        yield point
        point += round_seconds


def next_build_point(epoch: int, epoch_seconds: int, lead: int, round_seconds: int, after: float) -> int | None:
    """The first build point of ``epoch`` at or after ``after`` (None once the epoch is over)."""
    first = pki.epoch_start(epoch, epoch_seconds) - lead
    end = pki.epoch_start(epoch + 1, epoch_seconds)
    if after <= first:
        return first
    point = first + math.ceil((after - first) / round_seconds) * round_seconds
    return point if point < end else None
