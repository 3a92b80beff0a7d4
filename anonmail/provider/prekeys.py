"""The provider's prekey desk: users publish prekeys, anyone may take a bundle (one one-time prekey each).

Two requests of the client protocol (:mod:`anonmail.core.mailproto`)::

    CONTROL {"type": "publish_prekeys", "upload"}   (authenticated)  ◀── {"type": "prekeys_ok", "one_time": held}
    CONTROL {"type": "bundle", "address"}           (anyone)         ◀── {"type": "bundle", "identity", "bundle"}

An upload (:class:`~anonmail.core.prekeys.PrekeyUpload`) must be the session's own identity's,
its signed prekeys valid now; it replaces the signed prekeys and adds its one-time prekeys (at
most :data:`MAX_ONE_TIME_HELD` are held; the reply says how many, so the agent knows when to
refill). A bundle answer carries the user's identity key (self-certifying: it must hash to the
address) and the bundle with one one-time prekey, deleted here as it is handed out; ``null``
for both if the user does not exist or published no prekeys.

Asking is anonymous (a lookup comes on an isolated connection), so a stranger could take every
one-time prekey a user has, and make the agent refill again and again. :class:`OneTimeBudget`
bounds that per user: :data:`ONE_TIME_BURST` one-time prekeys at once, then
:data:`ONE_TIME_PER_HOUR`; past it, bundles go out without one (the agreement then rests on the
signed prekeys alone, as it does when a user's one-time prekeys run out), and none is used up.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from anonmail.core.mailproto import b64d, b64e, lookup_address, require_fields
from anonmail.core.prekeys import OneTimePrekey, PrekeyBundle, PrekeyUpload
from anonmail.errors import ProtocolError, SessionError
from anonmail.provider.store import MailboxStore
from mixnode.inbound import TokenBucket

__all__ = [
    "MAX_ONE_TIME_HELD",
    "MAX_UPLOAD_BYTES",
    "ONE_TIME_BURST",
    "ONE_TIME_PER_HOUR",
    "OneTimeBudget",
    "verified_upload",
    "stored_parts",
    "bundle_answer",
]

#: One-time prekeys a provider holds per user.
MAX_ONE_TIME_HELD = 400
#: Largest upload accepted (both signed prekeys and the largest batch of one-time prekeys).
MAX_UPLOAD_BYTES = 12 * 1024
#: One-time prekeys of one user handed out at once, before the hourly rate applies.
ONE_TIME_BURST = 30
#: One-time prekeys of one user handed out per hour after the burst (new correspondents are rare).
ONE_TIME_PER_HOUR = 30
#: Users whose budgets are remembered (the least recently asked are forgotten first).
MAX_BUDGETS = 100_000


class OneTimeBudget:
    """How many one-time prekeys of each user may go out: a burst, then a slow refill (thread-safe)."""

    def __init__(self, *, burst: int = ONE_TIME_BURST, per_hour: float = ONE_TIME_PER_HOUR,
                 max_users: int = MAX_BUDGETS) -> None:
        self.burst, self.rate, self.max_users = burst, per_hour / 3600.0, max_users
        self._buckets: OrderedDict[bytes, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, mailbox_id: bytes, now: float) -> bool:
        """Whether a bundle for this user may carry a one-time prekey now (spending one if so)."""
        with self._lock:
            bucket = self._buckets.get(mailbox_id)
            if bucket is None:
                bucket = self._buckets[mailbox_id] = TokenBucket(self.rate, self.burst, now)
                if len(self._buckets) > self.max_users:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(mailbox_id)
            return bucket.take(now)


def verified_upload(identity: bytes, message: dict, *, now: int) -> PrekeyUpload:
    """The upload of a ``publish_prekeys`` request, checked: ProtocolError(bad_prekeys) if it is not the user's."""
    require_fields(message, ["upload"])
    raw = b64d(message["upload"], "upload")
    if len(raw) > MAX_UPLOAD_BYTES:
        raise ProtocolError(f"a prekey upload has at most {MAX_UPLOAD_BYTES} bytes", reason="malformed")
    try:
        upload = PrekeyUpload.from_bytes(raw)
        upload.bundle(None).verify(identity, now=now)
    except SessionError as exc:
        raise ProtocolError(f"the prekeys are not valid: {exc}", reason="bad_prekeys") from None
    return upload


def stored_parts(upload: PrekeyUpload) -> tuple[bytes, list[tuple[int, bytes]]]:
    """What the store keeps: the signed part (the bundle without a one-time prekey) and the one-time prekeys."""
    return upload.bundle(None).to_bytes(), [(k.key_id, k.to_bytes()) for k in upload.one_time]


def bundle_answer(store: MailboxStore, provider: str, message: dict, budget: OneTimeBudget,
                  now: float) -> tuple[dict, bool]:
    """(Blocking.) The answer to a ``bundle`` request, and whether it carries a one-time prekey (deleted here)."""
    address = lookup_address(message, provider)
    account = store.account(address.mailbox_id)
    taken = None
    if account is not None:
        taken = store.take_prekeys(address.mailbox_id, one_time=budget.take(address.mailbox_id, now))
    if account is None or taken is None:
        return {"type": "bundle", "identity": None, "bundle": None}, False
    signed, one_time = taken
    bundle = PrekeyBundle.from_bytes(signed)
    if one_time is not None:
        key_id = int.from_bytes(one_time[:4], "big")
        bundle = PrekeyBundle(bundle.identity, bundle.signed, bundle.pq, OneTimePrekey(key_id, one_time[4:]))
    answer = {"type": "bundle", "identity": b64e(account.identity), "bundle": b64e(bundle.to_bytes())}
    return answer, one_time is not None
