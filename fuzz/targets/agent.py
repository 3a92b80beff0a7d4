"""Targets for what the agent does with fetched entries: its durable reassembly in SQLite."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

from anonmail.agent.store import MAX_PARTIALS_PER_SENDER, AgentStore
from anonmail.core import fragments as F
from anonmail.errors import FragmentError, ReassemblyError
from fuzz.registry import target

_STEP = struct.Struct(">BBHHIH")  # sender, message, index, count, total, data length
_store: AgentStore | None = None


def _the_store() -> AgentStore:
    global _store
    if _store is None:
        folder = Path(tempfile.mkdtemp(prefix="anonmail-fuzz-agent-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        _store = AgentStore(folder / "agent.sqlite")
        _store._conn().execute("PRAGMA synchronous=OFF")  # fuzzing speed; durability is not under test
    return _store


def _seeds():
    n = F.FRAGMENT_DATA_BYTES
    return [_STEP.pack(0, 0, 0, 2, n + 10, n) + _STEP.pack(0, 0, 1, 2, n + 10, 10) + _STEP.pack(0, 0, 1, 2, n + 10, 10),
            _STEP.pack(1, 1, 0, 1, 5, 5)]


@target("agent_reassembly", seeds=_seeds)
def agent_reassembly(data: bytes) -> None:
    """Stored fragments complete a message only when all are there and the length adds up; bounded."""
    store = _the_store()
    with store._tx() as c:  # a fresh state per input
        c.execute("DELETE FROM partials")
        c.execute("DELETE FROM received")
    for offset in range(0, len(data) - _STEP.size + 1, _STEP.size):
        who, msg, index, count, total, length = _STEP.unpack_from(data, offset)
        sender = bytes([who % 8]) * 20
        frag = F.Fragment(bytes([msg]) * 16, index % 8, count % 8, total % (8 * F.FRAGMENT_DATA_BYTES),
                          bytes(length % (F.FRAGMENT_DATA_BYTES + 1)))
        try:
            F._check_fragment(frag)  # open_fragment lets no other fragment through
        except FragmentError:
            continue
        try:
            state = store.add_fragment(sender_fpr=sender, sender="s@alpha", message_id=frag.message_id,
                                       idx=frag.index, count=frag.count, total=frag.total_length, data=frag.data,
                                       now=float(offset))
        except ReassemblyError:
            continue
        assert state in ("duplicate", "stored", "complete")
        if state == "complete":
            assembled = store.assemble(sender, frag.message_id)
            assert assembled is not None and len(assembled[1]) == frag.total_length
        with store._tx() as c:
            (held,) = c.execute("SELECT COUNT(DISTINCT message_id) FROM partials WHERE sender_fpr = ?",
                                [sender]).fetchone()
        assert held <= MAX_PARTIALS_PER_SENDER
