"""End-to-end sessions: forward secrecy, post-compromise security, deniability, simultaneous start.

The three attack tests give the attacker what the issue says and assert on what it can read:
``test_forward_secrecy_*``, ``test_post_compromise_*``, ``test_deniability_*``.
"""

from __future__ import annotations

import copy
import random

import pytest

from anonmail.core import ratchet as R
from anonmail.core.keys import IdentityKey
from anonmail.core.prekeys import (
    InitialHeader,
    PrekeyUpload,
    make_one_time_prekey,
    make_pq_prekey,
    make_signed_prekey,
    respond,
)
from anonmail.core.sessions import (
    KIND_PREKEY,
    KIND_SESSION,
    MAX_OVERHEAD,
    SESSION_OVERHEAD,
    PeerSessions,
    message_kind,
)
from anonmail.errors import SessionError

pytestmark = pytest.mark.unit

NOW = 1_000_000


class User:
    """A user's identity and prekey secrets, as the agent keeps them (one-time prekeys deleted on use)."""

    def __init__(self, one_time: int = 3) -> None:
        self.identity = IdentityKey.generate()
        self.spk_secret, spk = make_signed_prekey(self.identity, 1, not_after=NOW + 86400)
        self.pq_seed, pq = make_pq_prekey(self.identity, 2, not_after=NOW + 86400)
        self.one_time: dict[int, bytes] = {}
        keys = []
        for i in range(one_time):
            secret, key = make_one_time_prekey(100 + i)
            self.one_time[key.key_id] = secret
            keys.append(key)
        self.upload = PrekeyUpload(self.identity.public, spk, pq, tuple(keys))
        self.served = list(keys)

    def bundle(self):
        """What the provider serves: one one-time prekey, then deleted there."""
        return self.upload.bundle(self.served.pop(0) if self.served else None)

    def signed_secret(self, key_id: int) -> bytes | None:
        return self.spk_secret if key_id == 1 else None

    def pq_secret(self, key_id: int) -> bytes | None:
        return self.pq_seed if key_id == 2 else None

    def one_time_secret(self, key_id: int) -> bytes | None:
        return self.one_time.get(key_id)

    def sessions_with(self, other: User) -> PeerSessions:
        return PeerSessions(self.identity.public, other.identity.public)


def _open(user: User, sessions: PeerSessions, data: bytes, ad: bytes = b""):
    opened = sessions.decrypt(user.identity, data, ad, now=NOW, prekeys=user)
    if opened.used_one_time is not None:
        del user.one_time[opened.used_one_time]  # the agent deletes a used one-time prekey
    return opened


@pytest.fixture()
def pair():
    alice, bob = User(), User()
    return alice, bob, alice.sessions_with(bob), bob.sessions_with(alice)


def test_first_message_starts_session_and_answers_confirm(pair) -> None:
    alice, bob, a, b = pair
    a.start(alice.identity, bob.bundle())
    m1, m2 = a.encrypt(b"one", b"id1"), a.encrypt(b"two", b"id2")
    assert message_kind(m1) == KIND_PREKEY and len(m1) == len(b"one") + MAX_OVERHEAD
    opened = _open(bob, b, m2, b"id2")  # the second arrives first: it starts the session
    assert opened.started and opened.plaintext == b"two" and opened.used_one_time == 100
    assert _open(bob, b, m1, b"id1").plaintext == b"one"  # the first finds it, without the one-time key
    reply = b.encrypt(b"three")
    assert message_kind(reply) == KIND_SESSION and len(reply) == len(b"three") + SESSION_OVERHEAD
    _open(alice, a, reply)
    assert message_kind(a.encrypt(b"four")) == KIND_SESSION  # answered: no more prekey header


def test_restored_sessions_keep_working(pair) -> None:
    alice, bob, a, b = pair
    a.start(alice.identity, bob.bundle())
    _open(bob, b, a.encrypt(b"x"))
    b2 = PeerSessions.from_bytes(b.to_bytes())
    a2 = PeerSessions.from_bytes(a.to_bytes())
    _open(alice, a2, b2.encrypt(b"y"))
    assert _open(bob, b2, a2.encrypt(b"z")).plaintext == b"z"
    for bad in (b.to_bytes()[:-1], b.to_bytes() + b"\0", b"X" + b.to_bytes()[1:]):
        with pytest.raises(SessionError):
            PeerSessions.from_bytes(bad)


def test_simultaneous_start_converges_deterministically(pair) -> None:
    alice, bob, a, b = pair
    a.start(alice.identity, bob.bundle())
    b.start(bob.identity, alice.bundle())
    from_a, from_b = a.encrypt(b"hi bob"), b.encrypt(b"hi alice")
    assert _open(bob, b, from_a).plaintext == b"hi bob"
    assert _open(alice, a, from_b).plaintext == b"hi alice"
    # both now hold both sessions and agree on the one to send on
    assert a.sending().session_id == b.sending().session_id
    lower = min(alice.identity.public, bob.identity.public)
    assert a.sending().initiator == lower
    for i in range(3):
        assert _open(bob, b, a.encrypt(b"a%d" % i)).plaintext == b"a%d" % i
        assert _open(alice, a, b.encrypt(b"b%d" % i)).plaintext == b"b%d" % i


def test_prekey_message_refused_without_its_prekeys(pair) -> None:
    alice, bob, a, b = pair
    a.start(alice.identity, bob.bundle())
    m = a.encrypt(b"x")
    bob.one_time.clear()  # as if used by a replay or already deleted
    with pytest.raises(SessionError) as info:
        _open(bob, b, m)
    assert info.value.reason == "unknown_prekey"
    assert b.sessions == []


def test_prekey_message_from_someone_else_refused(pair) -> None:
    alice, bob, a, _b = pair
    a.start(alice.identity, bob.bundle())
    mallory = User()
    with pytest.raises(SessionError) as info:
        _open(bob, bob.sessions_with(mallory), a.encrypt(b"x"))  # alice's message claimed by mallory's fragment
    assert info.value.reason == "auth"


def _exchange(alice, bob, a, b, rounds: int, record: list[bytes]) -> None:
    for i in range(rounds):
        m = a.encrypt(b"alice %d" % i, b"id")
        record.append(m)
        assert _open(bob, b, m, b"id").plaintext == b"alice %d" % i
        m = b.encrypt(b"bob %d" % i, b"id")
        record.append(m)
        assert _open(alice, a, m, b"id").plaintext == b"bob %d" % i


def test_forward_secrecy_recorded_messages_stay_closed(pair) -> None:
    alice, bob, a, b = pair
    a.start(alice.identity, bob.bundle())
    recorded: list[bytes] = []
    _exchange(alice, bob, a, b, 5, recorded)
    # The attacker gets both identity keys, both users' prekey secrets and every session state now.
    stolen = {"alice": (alice.identity, copy.deepcopy(alice), PeerSessions.from_bytes(a.to_bytes())),
              "bob": (bob.identity, copy.deepcopy(bob), PeerSessions.from_bytes(b.to_bytes()))}
    for who, (identity, prekeys, sessions) in stolen.items():
        for m in recorded:
            attempt = PeerSessions.from_bytes(sessions.to_bytes())
            with pytest.raises(SessionError):
                attempt.decrypt(identity, m, b"id", now=NOW, prekeys=prekeys)
    # Nor by redoing the agreement: the one-time prekey it used is gone at bob's.
    header = InitialHeader.from_bytes(recorded[0][18 : 18 + 1170])
    with pytest.raises(SessionError):
        respond(bob.identity, header, signed_secret=bob.spk_secret, pq_secret=bob.pq_seed,
                one_time_secret=stolen["bob"][1].one_time_secret(header.one_time_id))


def test_post_compromise_one_round_trip_heals(pair) -> None:
    alice, bob, a, b = pair
    a.start(alice.identity, bob.bundle())
    _exchange(alice, bob, a, b, 2, [])
    attacker = PeerSessions.from_bytes(b.to_bytes())  # a copy of bob's state, then passive
    m = a.encrypt(b"still readable", b"id")
    assert attacker.decrypt(bob.identity, m, b"id", now=NOW, prekeys=bob).plaintext == b"still readable"
    _open(bob, b, m, b"id")
    reply = b.encrypt(b"bob's fresh ratchet key", b"id")  # one round trip: bob -> alice
    _open(alice, a, reply, b"id")
    secret = a.encrypt(b"after healing", b"id")
    with pytest.raises(SessionError):
        attacker.decrypt(bob.identity, reply, b"id", now=NOW, prekeys=bob)  # not meant for it either
    with pytest.raises(SessionError):
        attacker.decrypt(bob.identity, secret, b"id", now=NOW, prekeys=bob)
    assert _open(bob, b, secret, b"id").plaintext == b"after healing"


def test_deniability_bob_forges_alice_from_his_state_alone(pair) -> None:
    alice, bob, a, b = pair
    a.start(alice.identity, bob.bundle())
    _exchange(alice, bob, a, b, 2, [])
    _open(bob, b, a.encrypt(b"latest from alice", b"id"), b"id")
    # Bob, from a copy of his own state and nothing of alice's, writes the next message of her chain.
    mine = PeerSessions.from_bytes(b.to_bytes())
    session = mine.sending()
    r = session.ratchet
    _chain, key = R.kdf_chain(r.receiving)
    header = R.Header(r.their_public, 0, r.nr).to_bytes()
    frame = bytes([2, KIND_SESSION]) + session.session_id
    forged = frame + header + R.seal(key, b"I owe bob 100 coins", r.ad + header + frame + b"id")
    # It opens at bob's as alice's, exactly like her real messages do: nothing tells them apart.
    assert _open(bob, b, forged, b"id").plaintext == b"I owe bob 100 coins"
    assert session.initiator == alice.identity.public


def test_bundle_of_another_identity_refused(pair) -> None:
    alice, bob, a, _b = pair
    mallory = User()
    with pytest.raises(ValueError):
        a.start(alice.identity, mallory.bundle())


def test_message_kind_refuses_garbage() -> None:
    rng = random.Random(3)
    for n in (0, 10, 73, 200):
        with pytest.raises(SessionError):
            message_kind(bytes(rng.randrange(256) for _ in range(n)) if n else b"")


def test_largest_message_still_fits_the_4_mib_limit(pair) -> None:
    from anonmail.core.fragments import MAX_MESSAGE_BYTES, split_message
    from anonmail.core.sessions import MAX_ENVELOPE_BYTES

    alice, bob, a, b = pair
    a.start(alice.identity, bob.bundle())
    wire = a.encrypt(bytes(MAX_ENVELOPE_BYTES), b"id")  # a prekey message: the largest overhead
    assert len(wire) == MAX_MESSAGE_BYTES == 4 * 1024 * 1024
    assert len(split_message(wire, b"m" * 16)) == 1284
    assert _open(bob, b, wire, b"id").plaintext == bytes(MAX_ENVELOPE_BYTES)
