"""Queueing mail: what ``anonmail send`` does (and the demo), checked before anything is stored.

Sending never touches the network: the message goes into the outbox in one durable transaction
and the running agent sends it in its payload slots. Every refusal is a :class:`MailError`
with a one-line message that says what to do.
"""

from __future__ import annotations

import os

from anonmail.agent import account
from anonmail.agent.store import AgentStore, OutboxFullError
from anonmail.core import fragments as F
from anonmail.core.address import Address, parse_address
from anonmail.core.envelope import MAX_SUBJECT_CHARS, encode_mail
from anonmail.core.sessions import MAX_ENVELOPE_BYTES, MAX_OVERHEAD
from anonmail.errors import AddressError, KeyExpiredError, MailError

__all__ = ["DEFAULT_OUTBOX_QUOTA", "resolve_recipient", "queue_mail", "queue_envelope"]

#: Unacknowledged bytes the outbox accepts before ``send`` refuses (``[agent] outbox_quota``).
DEFAULT_OUTBOX_QUOTA = 32 * 1024 * 1024


def resolve_recipient(store: AgentStore, to: str) -> Address:
    """A contact's petname or an address, as an Address; MailError if it is neither."""
    address = store.contact_address(to)
    if address is not None:
        return parse_address(address)
    if "@" not in to:
        names = ", ".join(name for name, _ in store.contacts()) or "none yet"
        raise MailError(f"unknown contact {to!r} (contacts: {names}); add it with "
                        f"`anonmail contact add {to} ADDRESS` or give a full address", reason="unknown_contact")
    try:
        return parse_address(to)
    except AddressError as exc:
        raise MailError(f"{exc}", reason="bad_address") from exc


def queue_envelope(store: AgentStore, *, recipient: str, kind: str, subject: str, envelope: bytes, now: float,
                   quota_bytes: int | None = None) -> bytes:
    """Store an encoded message in the outbox; returns its message id (MailError(too_large) above MAX_ENVELOPE_BYTES).

    The fragment count is that of the message as its session will encrypt it (at most
    MAX_OVERHEAD more bytes); the agent sets the exact count when it encrypts.
    """
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise MailError(f"the message is {len(envelope)} bytes encoded; the limit is {MAX_ENVELOPE_BYTES} bytes:"
                        " split it or send a link", reason="too_large")
    message_id = os.urandom(F.MESSAGE_ID_BYTES)
    try:
        store.queue_message(message_id=message_id, recipient=recipient, kind=kind, subject=subject, body=envelope,
                            size=len(envelope), fragments=F.fragment_count(len(envelope) + MAX_OVERHEAD), now=now,
                            quota_bytes=quota_bytes)
    except OutboxFullError as exc:
        raise MailError(f"{exc}; wait until `anonmail outbox` shows earlier mail acknowledged, or raise "
                        "[agent] outbox_quota in agent.toml", reason="outbox_full") from exc
    return message_id


def queue_mail(store: AgentStore, *, to: str, subject: str, body: bytes, now: float,
               quota_bytes: int | None = DEFAULT_OUTBOX_QUOTA) -> tuple[bytes, Address]:
    """Check and queue a mail; returns (message id, recipient). Nothing is stored on error."""
    recipient = resolve_recipient(store, to)
    if len(subject) > MAX_SUBJECT_CHARS or "\n" in subject or "\r" in subject:
        raise MailError(f"the subject must be one line of at most {MAX_SUBJECT_CHARS} characters", reason="bad_subject")
    envelope = encode_mail(subject, body, sent_at=int(now))
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise MailError(f"the message is {len(body)} bytes; the limit is about {MAX_ENVELOPE_BYTES - len(envelope) + len(body)}"
                        " bytes: split it or send a link", reason="too_large")
    try:
        account.contact_key(store, recipient.fingerprint, now=int(now))
    except KeyExpiredError as exc:
        raise MailError(f"cannot send to {to}: {exc} (or run `anonmail contact refresh {to}`)",
                        reason="key_expired") from exc
    message_id = queue_envelope(store, recipient=str(recipient), kind="mail", subject=subject, envelope=envelope,
                                now=now, quota_bytes=quota_bytes)
    return message_id, recipient
