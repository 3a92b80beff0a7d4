"""The agent's end-to-end layer on real stores: sealing, opening, prekeys, what stays on disk."""

from __future__ import annotations

import pytest

from anonmail.agent.e2e import PREKEY_GRACE, PREKEY_LIFETIME, EndToEnd
from anonmail.agent.outbox import queue_envelope
from anonmail.agent.store import AgentStore
from anonmail.core.address import Address
from anonmail.core.envelope import decode_envelope, encode_mail
from anonmail.core.keys import IdentityKey
from anonmail.errors import SessionError

pytestmark = pytest.mark.unit

NOW = 1_800_000_000


class Side:
    def __init__(self, tmp_path, name: str, provider: str) -> None:
        self.identity = IdentityKey.generate()
        self.address = Address.for_key(self.identity.public, provider)
        self.path = tmp_path / f"{name}.sqlite"
        self.store = AgentStore(self.path)
        self.e2e = EndToEnd(self.store, self.identity)


@pytest.fixture()
def pair(tmp_path):
    alice, bob = Side(tmp_path, "alice", "alpha"), Side(tmp_path, "bob", "beta")
    yield alice, bob
    alice.store.close()
    bob.store.close()


def send(sender: Side, recipient: Side, text: str) -> tuple[bytes, bytes | None]:
    envelope = encode_mail(text, b"body " + text.encode(), sent_at=NOW)
    message_id = queue_envelope(sender.store, recipient=str(recipient.address), kind="mail", subject=text,
                                envelope=envelope, now=NOW)
    return message_id, sender.e2e.seal_outgoing(message_id, recipient.address, recipient.identity.public,
                                                envelope, now=NOW)


def receive(recipient: Side, sender: Side, message_id: bytes, wire: bytes) -> str:
    with recipient.e2e.lock:
        plaintext, commit = recipient.e2e.open_incoming(sender.address, sender.identity.public, message_id, wire,
                                                        now=NOW)
        envelope = decode_envelope(plaintext)
        recipient.store.finish_message(sender_fpr=sender.address.fingerprint, sender=str(sender.address),
                                       message_id=message_id, subject=envelope.subject, body=envelope.body,
                                       sent_at=envelope.sent_at, now=NOW, session=commit)
    return envelope.subject


def test_first_message_waits_for_a_bundle_then_starts_a_session(pair) -> None:
    alice, bob = pair
    message_id, wire = send(alice, bob, "hello")
    assert wire is None  # no session, no bundle: the agent fetches one
    upload = bob.e2e.prekey_upload(now=NOW, one_time=3)
    alice.store.put_bundle(bob.address.fingerprint, upload.bundle(upload.one_time[0]).to_bytes(), NOW)
    wire = alice.e2e.seal_outgoing(message_id, bob.address, bob.identity.public,
                                   alice.store.message_body(message_id)[3], now=NOW)
    assert wire is not None and alice.store.bundle(bob.address.fingerprint) is None
    assert alice.e2e.seal_outgoing(message_id, bob.address, bob.identity.public, b"other", now=NOW) == wire  # once
    assert alice.store.outbox()[0].fragments == 1
    assert receive(bob, alice, message_id, wire) == "hello"
    assert [k for k, *_ in bob.store.prekeys("one_time")] == [upload.one_time[2].key_id, upload.one_time[1].key_id]
    with pytest.raises(SessionError):  # the same message again: its key is gone
        bob.e2e.open_incoming(alice.address, alice.identity.public, message_id, wire, now=NOW)
    reply_id, reply = send(bob, alice, "re: hello")
    assert receive(alice, bob, reply_id, reply) == "re: hello"


def test_sessions_and_prekeys_are_sealed_at_rest(pair) -> None:
    alice, bob = pair
    upload = bob.e2e.prekey_upload(now=NOW, one_time=2)
    alice.store.put_bundle(bob.address.fingerprint, upload.bundle(upload.one_time[0]).to_bytes(), NOW)
    message_id, wire = send(alice, bob, "sealed")
    receive(bob, alice, message_id, wire)
    spk_secret = bob.e2e.signed_secret(upload.signed.key_id)
    for side in pair:
        assert side.store._conn().execute("PRAGMA secure_delete").fetchone()[0] == 1  # old states overwritten
        side.store.close()
        raw = b"".join(p.read_bytes() for p in side.path.parent.glob(side.path.name + "*"))
        assert b"AMSES1" not in raw and b"AMRAT1" not in raw  # the states' plaintext forms
        assert spk_secret not in raw
    stranger = EndToEnd(bob.store, IdentityKey.generate())
    with pytest.raises(Exception, match="does not open"):
        stranger.signed_secret(upload.signed.key_id)


def test_signed_prekeys_are_replaced_at_half_life_and_deleted_after_grace(pair) -> None:
    _alice, bob = pair
    first = bob.e2e.prekey_upload(now=NOW)
    assert bob.e2e.prekey_upload(now=NOW + PREKEY_LIFETIME // 2 - 10).signed == first.signed
    second = bob.e2e.prekey_upload(now=NOW + PREKEY_LIFETIME // 2 + 10)
    assert second.signed.key_id != first.signed.key_id and second.pq.key_id != first.pq.key_id
    assert bob.e2e.signed_secret(first.signed.key_id) is not None  # late first messages still open
    bob.e2e.prekey_upload(now=first.signed.not_after + PREKEY_GRACE + 1)
    assert bob.e2e.signed_secret(first.signed.key_id) is None
    assert bob.e2e.pq_secret(first.pq.key_id) is None


def test_an_envelope_too_large_for_its_session_is_refused_before_queueing(pair) -> None:
    from anonmail.core.sessions import MAX_ENVELOPE_BYTES
    from anonmail.errors import MailError

    alice, bob = pair
    with pytest.raises(MailError) as info:
        queue_envelope(alice.store, recipient=str(bob.address), kind="mail", subject="",
                       envelope=bytes(MAX_ENVELOPE_BYTES + 1), now=NOW)
    assert info.value.reason == "too_large" and alice.store.outbox() == []
