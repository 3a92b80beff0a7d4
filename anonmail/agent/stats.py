"""What the agent did, for ``status.json`` and the demo, and how its errors are described there."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AgentStats", "why"]


@dataclass
class AgentStats:
    """What the agent did (``anonmail agent`` prints it; the demo reports it)."""

    packets_real: int = 0
    packets_drop: int = 0
    packets_loop: int = 0
    retransmissions: int = 0
    slots_missed: int = 0
    loops_returned: int = 0
    #: Loops that did not come back in time, and what the recent ones say (:mod:`anonmail.core.loopwatch`).
    loops_lost: int = 0
    loop_loss_rate: float = 0.0
    loop_alarm: bool = False
    loop_suspects: list[str] = field(default_factory=list)
    acks: int = 0
    #: ACKs of our drop cover that came back (every payload slot returns one ACK, mail or cover).
    cover_acks: int = 0
    fetches: int = 0
    #: Real entries fetched from our mailbox (fragments and ACKs; the padding dummies not counted).
    entries_fetched: int = 0
    fragments_received: int = 0
    duplicates_merged: int = 0
    delivered: int = 0
    #: Fetched entries dropped because they did not open, parse or store (``bad_entry_reasons`` says why).
    bad_entries: int = 0
    bad_entry_reasons: dict[str, int] = field(default_factory=dict)
    #: Incomplete messages dropped: their other fragments never came, or room was needed (bounds).
    partials_expired: int = 0
    partials_evicted: int = 0
    #: Whether our provider said at the last fetch that our mailbox is at its quota.
    mailbox_full: bool = False
    #: Entries our full mailbox dropped (oldest first) to take new ones, as the provider told us.
    mailbox_evicted: int = 0
    #: Failed logins, broken sessions (a send, fetch or key publication that failed) and failed key lookups.
    errors: int = 0
    #: The latest of those, as ``"what: ErrorType: reason"`` (never an address), or None.
    last_error: str | None = None
    last_error_at: float | None = None
    emissions: list[float] = field(default_factory=list)

    @property
    def packets_cover(self) -> int:
        """Drop plus loop cover."""
        return self.packets_drop + self.packets_loop

    @property
    def packets_sent(self) -> int:
        """Every packet handed to our provider: real fragments (first sends and retransmissions) and cover."""
        return self.packets_real + self.packets_cover

    @property
    def loops_sent(self) -> int:
        """Loop cover packets sent (the same as ``packets_loop``)."""
        return self.packets_loop

    def as_dict(self) -> dict:
        """JSON-ready counters."""
        return {k: dict(v) if isinstance(v, dict) else v for k, v in self.__dict__.items() if k != "emissions"} | {
            "packets_cover": self.packets_cover, "packets_sent": self.packets_sent, "loops_sent": self.loops_sent}


def why(exc: BaseException) -> str:
    """A short, secret-free description of an error for logs and the status file (never an address)."""
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}{f': {reason}' if reason else ''}"
