"""Epoch keys: made ahead, tried around boundaries, deleted after (in memory and on disk)."""

from __future__ import annotations

import pytest
from nacl.bindings import crypto_scalarmult_base

from anonmail.clients.directory import GRACE_FRACTION
from mixnode.epochkeys import EPOCH_GRACE_MAX, EpochKeys

pytestmark = pytest.mark.unit

SECONDS = 3600


def test_keys_persist_and_old_epochs_are_deleted(tmp_path):
    keys = EpochKeys(tmp_path, SECONDS)
    keys.load(10, create=False)
    assert not keys.has(10) and not list(tmp_path.iterdir())  # not made unless asked
    for epoch in (9, 10, 11):
        keys.load(epoch, create=True)
    again = EpochKeys(tmp_path, SECONDS)
    again.load(10, create=False)
    assert again.public(10) == keys.public(10)
    assert crypto_scalarmult_base(dict(again.candidates(10 * SECONDS + 1000))[10]) == keys.public(10)
    assert keys.forget_before(11) == [9, 10]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sphinx-11.key"]
    assert list(keys.publics()) == [11] and not keys.has(10)


def test_neighbouring_epoch_is_tried_only_near_the_boundary(tmp_path):
    keys = EpochKeys(tmp_path, SECONDS)
    start = 10 * SECONDS
    assert keys.candidate_epochs(start + 1) == [10, 9]
    assert keys.candidate_epochs(start + SECONDS * GRACE_FRACTION + 1) == [10]
    assert keys.candidate_epochs(start + SECONDS - EPOCH_GRACE_MAX - 1) == [10]
    assert keys.candidate_epochs(start + SECONDS - 1) == [10, 11]
    for epoch in (10, 11):
        keys.load(epoch, create=True)
    assert [e for e, _ in keys.candidates(start + 1)] == [10]  # 9 is not held


def test_previous_key_is_tried_while_agents_may_still_use_the_last_consensus(tmp_path):
    # When the next epoch's document is late, agents keep the last consensus (and so the previous
    # epoch's Sphinx keys) for the directory grace period; their packets must still unwrap
    # after EPOCH_GRACE_MAX, instead of being dropped as bad_mac by every mix.
    keys = EpochKeys(tmp_path, SECONDS)
    for epoch in (9, 10):
        keys.load(epoch, create=True)
    start = 10 * SECONDS
    two_minutes_in = start + 2 * EPOCH_GRACE_MAX
    assert two_minutes_in - start < SECONDS * GRACE_FRACTION
    assert [e for e, _ in keys.candidates(two_minutes_in)] == [10, 9]
    assert [e for e, _ in keys.candidates(start + SECONDS * GRACE_FRACTION + 1)] == [10]
    short = EpochKeys(tmp_path, SECONDS, previous_grace=0)
    assert short.candidate_epochs(two_minutes_in) == [10]
