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
"""

from __future__ import annotations

from anonmail.core.mailproto import b64d, b64e, lookup_address, require_fields
from anonmail.core.prekeys import OneTimePrekey, PrekeyBundle, PrekeyUpload
from anonmail.errors import ProtocolError, SessionError
from anonmail.provider.store import MailboxStore

__all__ = ["MAX_ONE_TIME_HELD", "MAX_UPLOAD_BYTES", "verified_upload", "stored_parts", "bundle_answer"]

#: One-time prekeys a provider holds per user.
MAX_ONE_TIME_HELD = 400
#: Largest upload accepted (both signed prekeys and the largest batch of one-time prekeys).
MAX_UPLOAD_BYTES = 12 * 1024


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


def bundle_answer(store: MailboxStore, provider: str, message: dict) -> dict:
    """(Blocking.) The answer to a ``bundle`` request; the one-time prekey in it is deleted here."""
    address = lookup_address(message, provider)
    account = store.account(address.mailbox_id)
    taken = store.take_prekeys(address.mailbox_id) if account is not None else None
    if account is None or taken is None:
        return {"type": "bundle", "identity": None, "bundle": None}
    signed, one_time = taken
    bundle = PrekeyBundle.from_bytes(signed)
    if one_time is not None:
        key_id = int.from_bytes(one_time[:4], "big")
        bundle = PrekeyBundle(bundle.identity, bundle.signed, bundle.pq, OneTimePrekey(key_id, one_time[4:]))
    return {"type": "bundle", "identity": b64e(account.identity), "bundle": b64e(bundle.to_bytes())}
