"""The fetch round's bookkeeping: what is handed to the worker, what the next confirm carries."""

from __future__ import annotations

import pytest

from anonmail.agent.mailbox import ConfirmLedger
from anonmail.core.mailproto import ENTRY_FRAGMENT, ENTRY_REPLY, Entry

pytestmark = pytest.mark.unit


def entries(*ids: int) -> list[Entry]:
    return [Entry(ENTRY_FRAGMENT if i % 2 else ENTRY_REPLY, i, 0, b"x") for i in ids]


def test_handled_entries_are_confirmed_by_the_next_round_and_then_forgotten():
    ledger = ConfirmLedger()
    assert ledger.to_confirm(4) == []
    taken = ledger.take(entries(10, 11, 12))
    assert [e.entry_id for e in taken] == [10, 11, 12] and ledger.in_flight == 3
    ledger.handled(taken, [10, 12])  # 11 could not be stored: it stays at the provider
    assert ledger.in_flight == 0 and ledger.to_confirm(4) == [10, 12]
    ledger.confirmed([10, 12])
    assert ledger.to_confirm(4) == [] and ledger.waiting == 0


def test_entries_fetched_again_before_their_confirm_are_not_handled_twice():
    ledger = ConfirmLedger()
    first = ledger.take(entries(1, 2))
    assert ledger.take(entries(1, 2, 3)) == entries(3)  # 1 and 2 still in flight
    ledger.handled(first, [1, 2])
    assert ledger.take(entries(1, 2, 4)) == entries(4)  # written, waiting for the confirm
    ledger.handled(entries(3), [])  # not stored: fetched and taken again later
    assert ledger.take(entries(3)) == entries(3)


def test_a_failed_confirm_keeps_the_ids_and_a_confirm_never_carries_more_than_a_batch():
    ledger = ConfirmLedger()
    batch = ledger.take(entries(*range(1, 8)))
    ledger.handled(batch, range(1, 8))
    assert ledger.to_confirm(3) == [1, 2, 3]
    assert ledger.to_confirm(3) == [1, 2, 3]  # the link broke before the confirm went: same ids
    ledger.confirmed([1, 2, 3])
    assert ledger.to_confirm(3) == [4, 5, 6]


def test_released_entries_are_taken_again():
    ledger = ConfirmLedger()
    taken = ledger.take(entries(5, 6))
    ledger.release(taken)
    assert ledger.in_flight == 0 and ledger.take(entries(5, 6)) == entries(5, 6)
