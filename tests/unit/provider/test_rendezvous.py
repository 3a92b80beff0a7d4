"""The provider's invitation rendezvous (anonmail.provider.rendezvous) and its messages, without I/O."""

from __future__ import annotations

import itertools

import pytest

from anonmail.core.invite import CODE_TTL_S, PAKE_BYTES, SEALED_BYTES
from anonmail.core.rendezvous import (
    CloseRequest,
    GetRequest,
    JoinRequest,
    OpenRequest,
    PutRequest,
    parse_joined,
    parse_opened,
    parse_request,
    parse_state,
)
from anonmail.errors import ProtocolError
from anonmail.provider.node import TokenBucket
from anonmail.provider.rendezvous import JOIN_BURST, JOIN_RATE, MAX_PER_ACCOUNT, RendezvousTable

pytestmark = pytest.mark.unit

ALICE, BOB = b"a" * 16, b"b" * 16
PAKE_A, PAKE_B = b"A" + bytes(32), b"B" + bytes(32)


def table(**kwargs) -> RendezvousTable:
    kwargs.setdefault("join_bucket", TokenBucket(1000, 1000, 0.0))
    kwargs.setdefault("open_bucket", TokenBucket(1000, 1000, 0.0))
    return RendezvousTable(**kwargs)


def refused(t, request, account=None, now=0.0) -> str:
    with pytest.raises(ProtocolError) as info:
        t.handle(request, account=account, now=now)
    return info.value.reason


def opened(t, account=ALICE, now=0.0):
    o = parse_opened(t.handle(OpenRequest(), account=account, now=now))
    t.handle(PutRequest(o.nameplate, o.token, "pake", PAKE_A), account=account, now=now)
    return o


def test_a_whole_exchange_and_the_table_empties():
    t = table()
    o = opened(t)
    assert o.expires_in == CODE_TTL_S == 600
    j = parse_joined(t.handle(JoinRequest(o.nameplate, PAKE_B), account=None, now=1))
    assert j.pake == PAKE_A and j.expires_in == 599
    t.handle(PutRequest(o.nameplate, j.token, "sealed", b"s" * SEALED_BYTES), account=None, now=2)
    state = parse_state(t.handle(GetRequest(o.nameplate, o.token), account=ALICE, now=3))
    assert (state.state, state.pake, state.sealed) == ("joined", PAKE_B, b"s" * SEALED_BYTES)
    t.handle(PutRequest(o.nameplate, o.token, "sealed", b"t" * SEALED_BYTES), account=ALICE, now=4)
    t.handle(CloseRequest(o.nameplate, o.token, "done"), account=ALICE, now=5)
    assert parse_state(t.handle(GetRequest(o.nameplate, j.token), account=None, now=6)).sealed == b"t" * SEALED_BYTES
    t.handle(CloseRequest(o.nameplate, j.token, "done"), account=None, now=7)
    assert len(t) == 0


def test_opening_needs_an_account_and_is_bounded_per_account_and_in_all():
    t = table(max_open=5)
    assert refused(t, OpenRequest()) == "not_authenticated"
    for _ in range(MAX_PER_ACCOUNT):
        opened(t)
    assert refused(t, OpenRequest(), ALICE) == "too_many_invitations"
    opened(t, BOB), opened(t, BOB)
    assert refused(t, OpenRequest(), b"c" * 16) == "provider_busy"
    assert len(t) == 5


def test_opens_draw_on_a_provider_wide_bucket():
    t = table(open_bucket=TokenBucket(0.01, 2, 0.0))
    opened(t, ALICE), opened(t, BOB)
    assert refused(t, OpenRequest(), b"c" * 16) == "provider_busy"


def test_one_join_per_nameplate_the_second_guess_finds_nothing():
    t = table()
    o = opened(t)
    t.handle(JoinRequest(o.nameplate, PAKE_B), account=None, now=1)
    assert refused(t, JoinRequest(o.nameplate, PAKE_B)) == "no_invitation"


def test_a_join_before_the_inviter_put_its_pake_looks_like_no_invitation():
    t = table()
    o = parse_opened(t.handle(OpenRequest(), account=ALICE, now=0))
    assert refused(t, JoinRequest(o.nameplate, PAKE_B)) == "no_invitation"


def test_invitations_expire_after_ten_minutes_and_their_nameplate_is_not_reused_soon():
    numbers = itertools.cycle([17, 17, 17, 42])
    t = table(randbelow=lambda n: next(numbers) - 1)
    o = opened(t)
    assert o.nameplate == 17
    assert len(t) == 1 and t.sweep(599.9) == 0
    assert refused(t, JoinRequest(17, PAKE_B), now=600.0) == "no_invitation"
    assert len(t) == 0
    # Within the quarantine the ended nameplate is skipped: a late old code cannot meet a new invitation.
    assert opened(t, now=601).nameplate == 42


def test_joins_are_rate_limited_hits_and_misses_alike():
    """Attack: a stranger probes nameplates; after the burst every join, even a right one, waits."""
    t = table(join_bucket=TokenBucket(JOIN_RATE, JOIN_BURST, 0.0))
    o = opened(t)
    misses = [refused(t, JoinRequest(n, PAKE_B)) for n in range(1, 10000) if n != o.nameplate][:JOIN_BURST + 5]
    assert misses[:JOIN_BURST] == ["no_invitation"] * JOIN_BURST
    assert set(misses[JOIN_BURST:]) == {"busy"}
    assert refused(t, JoinRequest(o.nameplate, PAKE_B)) == "busy"  # no oracle while the bucket is empty
    # At JOIN_RATE per second, probing all 9999 nameplates takes hours; a code lives ten minutes.
    assert 9999 / JOIN_RATE > 6 * CODE_TTL_S
    t.handle(JoinRequest(o.nameplate, PAKE_B), account=None, now=1 / JOIN_RATE)


def test_tokens_guard_each_half_and_puts_happen_once_in_order():
    t = table()
    o = opened(t)
    assert refused(t, GetRequest(o.nameplate, bytes(16))) == "no_invitation"
    assert refused(t, PutRequest(o.nameplate, o.token, "pake", PAKE_A)) == "already_put"
    assert refused(t, PutRequest(o.nameplate, o.token, "sealed", bytes(SEALED_BYTES))) == "wrong_state"
    j = parse_joined(t.handle(JoinRequest(o.nameplate, PAKE_B), account=None, now=1))
    t.handle(PutRequest(o.nameplate, j.token, "sealed", bytes(SEALED_BYTES)), account=None, now=1)
    assert refused(t, PutRequest(o.nameplate, j.token, "sealed", bytes(SEALED_BYTES))) == "already_put"
    assert refused(t, GetRequest(o.nameplate + 1 if o.nameplate < 9999 else 1, j.token)) == "no_invitation"


def test_a_mismatch_fails_the_invitation_for_the_other_side_and_wipes_the_ciphertexts():
    t = table()
    o = opened(t)
    j = parse_joined(t.handle(JoinRequest(o.nameplate, PAKE_B), account=None, now=1))
    t.handle(PutRequest(o.nameplate, j.token, "sealed", bytes(SEALED_BYTES)), account=None, now=1)
    t.handle(CloseRequest(o.nameplate, o.token, "mismatch"), account=ALICE, now=2)
    state = parse_state(t.handle(GetRequest(o.nameplate, j.token), account=None, now=3))
    assert (state.state, state.sealed) == ("failed", None)
    assert t.stored()[0]["sealed"] == {}
    t.handle(CloseRequest(o.nameplate, j.token, "mismatch"), account=None, now=4)
    assert len(t) == 0


def test_the_inviter_may_withdraw_before_anyone_joined():
    t = table()
    o = opened(t)
    t.handle(CloseRequest(o.nameplate, o.token, "done"), account=ALICE, now=1)
    assert len(t) == 0 and refused(t, JoinRequest(o.nameplate, PAKE_B)) == "no_invitation"


def test_what_is_stored_names_no_account():
    t = table()
    opened(t)
    assert ALICE not in repr(t.stored()).encode() and ALICE.hex() not in repr(t.stored())


# ---------------------------------------------------------------------- message parsers

@pytest.mark.parametrize("request_", [
    OpenRequest(), JoinRequest(9999, PAKE_B), PutRequest(1, bytes(16), "sealed", bytes(SEALED_BYTES)),
    PutRequest(1, bytes(16), "pake", PAKE_A), GetRequest(5, bytes(16)), CloseRequest(5, bytes(16), "mismatch"),
])
def test_requests_round_trip(request_):
    assert parse_request(request_.to_message()) == request_


@pytest.mark.parametrize("message", [
    {"type": "invite_open", "x": 1},
    {"type": "invite_join", "nameplate": 0, "pake": "QQ=="},
    {"type": "invite_join", "nameplate": True, "pake": "QQ=="},
    {"type": "invite_join", "nameplate": 10000, "pake": "QQ=="},
    {"type": "invite_join", "nameplate": 5, "pake": "QQ=="},
    {"type": "invite_put", "nameplate": 5, "token": "AAAAAAAAAAAAAAAAAAAAAA==", "slot": "other", "data": ""},
    {"type": "invite_put", "nameplate": 5, "token": "AAAAAAAAAAAAAAAAAAAAAA==", "slot": "pake", "data": "AAAA"},
    {"type": "invite_get", "nameplate": 5, "token": "AAAA"},
    {"type": "invite_close", "nameplate": 5, "token": "AAAAAAAAAAAAAAAAAAAAAA==", "outcome": "fine"},
    {"type": "invite_close", "nameplate": 5, "token": "AAAAAAAAAAAAAAAAAAAAAA=="},
    {"type": "invite_other"},
])
def test_malformed_requests_are_refused_typed(message):
    with pytest.raises(ProtocolError) as info:
        parse_request(message)
    assert info.value.reason == "malformed"


@pytest.mark.parametrize("parser, message", [
    (parse_opened, {"type": "invite_opened", "nameplate": 5, "token": "AAAAAAAAAAAAAAAAAAAAAA==", "expires_in": -1}),
    (parse_joined, {"type": "invite_joined", "token": "AAAAAAAAAAAAAAAAAAAAAA==", "pake": "AA==", "expires_in": 5}),
    (parse_state, {"type": "invite_state", "state": "done", "pake": None, "sealed": None}),
    (parse_state, {"type": "invite_state", "state": "open", "pake": None}),
])
def test_malformed_answers_are_refused_typed(parser, message):
    with pytest.raises(ProtocolError):
        parser(message)


def test_sizes_are_what_the_core_says():
    assert PAKE_BYTES == 33 and SEALED_BYTES == 6184
