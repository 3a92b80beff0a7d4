"""The agent's end-to-end layer: our prekeys, sessions per correspondent, sealing and opening messages.

Blocking (SQLite and crypto): the agent calls it from worker threads. One lock serialises every
read-modify-write of a correspondent's sessions, so a message sealed in a payload slot and one
opened after a fetch never work on the same state at once.

* **Prekeys** (:meth:`EndToEnd.prekey_upload`): a signed X25519 prekey and a signed ML-KEM-768
  prekey, each living :data:`PREKEY_LIFETIME` and replaced at half of it (old secrets are kept
  :data:`PREKEY_GRACE` past their end for late first messages, then deleted), and one-time
  prekeys made in batches of :data:`ONE_TIME_BATCH` when the provider holds fewer than
  :data:`ONE_TIME_LOW`; each is deleted when a session starts on it.
* **Sending** (:meth:`EndToEnd.seal_outgoing`): the whole message (its envelope) is encrypted once,
  on the session the tie-break picks or a new one started on a fetched bundle; the encrypted form
  is stored with the outbox row, so every retransmission sends the same bytes.
* **Receiving** (:meth:`EndToEnd.open_incoming`): a reassembled message is opened; what the
  sessions became is returned as a :class:`~anonmail.agent.sessionstore.SessionCommit` that the
  inbox stores in the same transaction as the message.

Existing contacts move to sessions without the user doing anything: the first message to one
after the upgrade finds no session, the agent fetches their bundle and starts one.
"""

from __future__ import annotations

import threading

import nacl.exceptions
import nacl.secret

from anonmail.agent.account import vault_key
from anonmail.agent.sessionstore import SessionCommit
from anonmail.agent.store import AgentStore
from anonmail.core import fragments as F
from anonmail.core.address import Address
from anonmail.core.keys import IdentityKey
from anonmail.core.prekeys import (
    OneTimePrekey,
    PrekeyBundle,
    PrekeyUpload,
    SignedPrekey,
    make_one_time_prekey,
    make_pq_prekey,
    make_signed_prekey,
    sign_prekey,
)
from anonmail.core.sessions import PeerSessions
from anonmail.errors import KeyFileError, SessionError

__all__ = ["EndToEnd", "PREKEY_LIFETIME", "PREKEY_GRACE", "ONE_TIME_BATCH", "ONE_TIME_LOW", "ONE_TIME_KEPT"]

#: Lifetime of a signed prekey (X25519 and ML-KEM-768); a new one is made at half of it.
PREKEY_LIFETIME = 7 * 86400
#: How long an expired signed prekey's secret is kept for first messages still on their way.
PREKEY_GRACE = 3 * 86400
#: One-time prekeys made and published at once.
ONE_TIME_BATCH = 100
#: Below this many at the provider, a new batch is published.
ONE_TIME_LOW = 50
#: Unused one-time prekey secrets kept at most (the oldest go first).
ONE_TIME_KEPT = 1000


class EndToEnd:
    """One user's prekeys and sessions, on the agent store."""

    def __init__(self, store: AgentStore, identity: IdentityKey) -> None:
        self.store = store
        self.identity = identity
        self.lock = threading.RLock()
        self._box = nacl.secret.SecretBox(vault_key(identity))

    def _seal(self, data: bytes) -> bytes:
        return bytes(self._box.encrypt(data))

    def _unseal(self, box: bytes) -> bytes:
        try:
            return bytes(self._box.decrypt(box))
        except nacl.exceptions.CryptoError as exc:
            raise KeyFileError(f"a session or prekey in {self.store.path} does not open with this identity") from exc

    # ------------------------------------------------------------------ prekeys

    def prekey_upload(self, *, now: int, one_time: int = 0) -> PrekeyUpload:
        """(Thread.) Our current signed prekeys (made or replaced as needed) and ``one_time`` new one-time prekeys."""
        with self.lock:
            signed = self._current_signed("signed", now)
            pq = self._current_signed("pq", now)
            fresh: list[OneTimePrekey] = []
            if one_time:
                first = self.store.next_prekey_id()
                rows = []
                for key_id in range(first, first + one_time):
                    secret, key = make_one_time_prekey(key_id)
                    rows.append(("one_time", key_id, self._seal(secret), key.public, 2**62, float(now)))
                    fresh.append(key)
                self.store.add_prekeys(rows)
                self.store.note_prekey_id(first + one_time - 1)
                self.store.drop_oldest_one_time(ONE_TIME_KEPT)
            for kind in ("signed", "pq"):
                self.store.drop_prekeys(kind, not_after_before=now - PREKEY_GRACE)
            return PrekeyUpload(self.identity.public, signed, pq, tuple(fresh))

    def _current_signed(self, kind: str, now: int) -> SignedPrekey:
        rows = self.store.prekeys(kind)
        if rows and rows[0][3] - now > PREKEY_LIFETIME // 2:
            key_id, _box, public, not_after = rows[0]
            return sign_prekey(self.identity, key_id, public, not_after=not_after)  # Ed25519: the published signature
        key_id = self.store.next_prekey_id()
        not_after = now + PREKEY_LIFETIME
        if kind == "signed":
            secret, key = make_signed_prekey(self.identity, key_id, not_after=not_after)
        else:
            secret, key = make_pq_prekey(self.identity, key_id, not_after=not_after)
        self.store.add_prekeys([(kind, key_id, self._seal(secret), key.public, not_after, float(now))])
        self.store.note_prekey_id(key_id)
        return key

    # PrekeySecrets, for PeerSessions.decrypt
    def signed_secret(self, key_id: int) -> bytes | None:
        """The secret of one of our signed X25519 prekeys."""
        box = self.store.prekey_box("signed", key_id)
        return self._unseal(box) if box is not None else None

    def pq_secret(self, key_id: int) -> bytes | None:
        """The seed of one of our signed ML-KEM-768 prekeys."""
        box = self.store.prekey_box("pq", key_id)
        return self._unseal(box) if box is not None else None

    def one_time_secret(self, key_id: int) -> bytes | None:
        """The secret of one of our one-time prekeys not yet used."""
        box = self.store.prekey_box("one_time", key_id)
        return self._unseal(box) if box is not None else None

    # ------------------------------------------------------------------ sessions

    def _sessions(self, peer_fpr: bytes, peer_identity: bytes) -> PeerSessions:
        found = self.store.sessions_box(peer_fpr)
        if found is None:
            return PeerSessions(self.identity.public, peer_identity)
        identity, box = found
        sessions = PeerSessions.from_bytes(self._unseal(box))
        if identity != peer_identity or sessions.peer != peer_identity or sessions.me != self.identity.public:
            raise SessionError("stored sessions belong to another identity", reason="malformed")
        return sessions

    def seal_outgoing(self, message_id: bytes, recipient: Address, recipient_identity: bytes, envelope: bytes,
                      *, now: int) -> bytes | None:
        """(Thread.) The message's encrypted form (stored with it), or None if a bundle must be fetched first."""
        with self.lock:
            stored = self.store.message_wire(message_id)
            if stored is not None:
                return stored
            sessions = self._sessions(recipient.fingerprint, recipient_identity)
            started = False
            if sessions.sending() is None:
                raw = self.store.bundle(recipient.fingerprint)
                if raw is None:
                    return None
                try:
                    bundle = PrekeyBundle.from_bytes(raw)
                    bundle.verify(recipient_identity, now=now)
                except SessionError:
                    self.store.drop_bundle(recipient.fingerprint)
                    return None
                sessions.start(self.identity, bundle)
                started = True
            wire = sessions.encrypt(envelope, message_id)
            commit = SessionCommit(recipient.fingerprint, recipient_identity, self._seal(sessions.to_bytes()))
            if not self.store.seal_outgoing(message_id, wire, F.fragment_count(len(wire)), commit, drop_bundle=started):
                return self.store.message_wire(message_id)
            return wire

    def open_incoming(self, sender: Address, sender_identity: bytes, message_id: bytes, wire: bytes,
                      *, now: int) -> tuple[bytes, SessionCommit]:
        """(Thread, under :attr:`lock`.) Open a reassembled message; SessionError if it does not open.

        Nothing is stored here: the caller stores the returned commit with the message.
        """
        sessions = self._sessions(sender.fingerprint, sender_identity)
        opened = sessions.decrypt(self.identity, wire, message_id, now=now, prekeys=self)
        commit = SessionCommit(sender.fingerprint, sender_identity, self._seal(sessions.to_bytes()),
                               opened.used_one_time)
        return opened.plaintext, commit

