"""What the bridge does to mail on the way in and out (sans-IO: bytes and strings in, decisions out).

Submission (SMTP):

* :func:`resolve_recipient` turns an ``RCPT TO`` mailbox into an anonmail :class:`Address`: a
  contact written ``<petname>@petname.anonmail`` (:data:`PETNAME_DOMAIN`), or a full address
  ``<56 characters>@<provider>``. Anything else is a :class:`~anonmail.errors.MailError` whose
  message names the problem (an unknown petname lists the contacts; a mistyped address carries
  :func:`~anonmail.core.address.parse_address`'s explanation, checksum hint included).
* :func:`check_sender` insists that ``MAIL FROM`` and the ``From`` header name the user's own
  address (or ``me@petname.anonmail``): the recipient learns the sender from inside the
  end-to-end encryption, and a From header that says something else would only mislead.

Reading (IMAP): every message is shown as RFC 5322 bytes.

* :func:`render_received` keeps a received message's bytes and prepends
  ``X-Anonmail-Sender: <verified address>``. Anything the sender wrote into ``X-Anonmail-*``
  headers is dropped, and a ``From`` header that does not name the verified sender is renamed
  ``X-Anonmail-Claimed-From`` and replaced by the verified one, so a client never shows a forged
  sender. The body (every MIME part) is untouched. Plain mail sent with ``anonmail send`` is
  given headers (From, To, Subject, Date, Message-ID) and a text/plain body.
* :func:`render_sent` shows a sent message with ``X-Anonmail-Delivery: queued | sending |
  acknowledged | failed`` as its first header (the Sent folder).
"""

from __future__ import annotations

import email.utils
import hashlib
import time
from collections.abc import Mapping

from anonmail.core.address import Address, parse_address
from anonmail.errors import AddressError, MailError

__all__ = [
    "PETNAME_DOMAIN",
    "DELIVERY_HEADER",
    "SENDER_HEADER",
    "CONTACT_HEADER",
    "resolve_recipient",
    "check_sender",
    "header_block",
    "render_received",
    "render_sent",
]

#: ``bob@petname.anonmail`` is the contact called ``bob``; ``me@petname.anonmail`` is yourself.
PETNAME_DOMAIN = "petname.anonmail"
#: Header of the Sent folder's copies that shows the delivery state.
DELIVERY_HEADER = "X-Anonmail-Delivery"
#: Header of received mail that names the sender as the end-to-end signature proved it.
SENDER_HEADER = "X-Anonmail-Sender"
#: Header of received mail that says whether the sender is a contact and whether its keys were
#: verified (``verified``: by an invitation or a compared fingerprint; ``unverified``: an address
#: pasted by hand; ``not a contact``).
CONTACT_HEADER = "X-Anonmail-Contact"
_SELF = "me"
_CRLF = b"\r\n"


def resolve_recipient(mailbox: str, contacts: Mapping[str, str]) -> Address:
    """The anonmail address for an ``RCPT TO`` mailbox; MailError naming the problem otherwise."""
    text = mailbox.strip().strip("<>").strip()
    local, at, domain = text.rpartition("@")
    if at and domain.lower() == PETNAME_DOMAIN:
        address = contacts.get(local)
        if address is None:
            folded = {name.casefold(): addr for name, addr in contacts.items()}
            address = folded.get(local.casefold())
        if address is None:
            names = ", ".join(sorted(contacts)) or "none yet"
            raise MailError(f"unknown contact {local!r} (your contacts: {names}); add it with "
                            f"`anonmail contact add {local} ADDRESS` or write the full address",
                            reason="unknown_contact")
        return parse_address(address)
    if at and "." in domain:
        raise MailError(f"{text!r} is an Internet address; anonmail delivers only to anonmail addresses "
                        f"(<56 characters>@<provider>) and to contacts written <petname>@{PETNAME_DOMAIN}",
                        reason="bad_address")
    try:
        return parse_address(text)
    except AddressError as exc:
        raise MailError(f"{exc}; a contact is written <petname>@{PETNAME_DOMAIN}", reason="bad_address") from exc


def _same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _is_me(mailbox: str, own: str) -> bool:
    return _same(mailbox, own) or _same(mailbox, f"{_SELF}@{PETNAME_DOMAIN}")


def header_block(message: bytes) -> tuple[bytes, bytes]:
    """(header lines including their line ends, the rest: blank line and body) of an RFC 5322 message."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = message.find(sep)
        if end >= 0:
            cut = end + len(sep) // 2
            return message[:cut], message[cut:]
    return message, b""


def _fields(head: bytes) -> list[tuple[str, bytes]]:
    """Header fields as (lower-case name, raw bytes with folded continuation lines and line ends)."""
    fields: list[tuple[str, bytes]] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower() if b":" in line else ""
        fields.append((name, line))
    return fields


def _addresses(fields: list[tuple[str, bytes]], name: str) -> list[str]:
    values = [raw.split(b":", 1)[1].decode("utf-8", "replace") for n, raw in fields if n == name]
    return [addr for _display, addr in email.utils.getaddresses(values) if addr]


def check_sender(mail_from: str, message: bytes, own: str) -> None:
    """MailError unless the envelope sender and the From header are the user's own address."""
    if mail_from and not _is_me(mail_from, own):
        raise MailError(f"you can send only as yourself ({own}), not as {mail_from!r}", reason="not_own_address")
    head, _ = header_block(message)
    senders = _addresses(_fields(head), "from")
    if len(senders) != 1:
        raise MailError(f"the message needs exactly one From address, yours ({own}); it has {len(senders)}",
                        reason="bad_from")
    if not _is_me(senders[0], own):
        raise MailError(f"From: {senders[0]!r} is not your address; set your identity's address to {own}",
                        reason="not_own_address")


def _header(name: str, value: str) -> bytes:
    return f"{name}: {value}".encode("utf-8") + _CRLF


def _date(ts: float) -> str:
    return email.utils.formatdate(ts, localtime=False)


def _message_id(message_id: bytes, own: str) -> str:
    return f"<{hashlib.blake2b(message_id, digest_size=16).hexdigest()}@{own.rpartition('@')[2]}.anonmail>"


def _named(address: str, name: str | None) -> str:
    return email.utils.formataddr((name, address)) if name else address


def _plain(*, sender: str, sender_name: str | None, to: str, to_name: str | None, subject: str, body: bytes,
           sent_at: float, message_id: str, extra: list[bytes]) -> bytes:
    """An RFC 5322 text/plain message for mail written with ``anonmail send``."""
    import email.header

    try:
        body.decode("utf-8")
        ctype = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        text = body.replace(b"\r\n", b"\n").replace(b"\n", _CRLF)
    except UnicodeDecodeError:
        import base64

        ctype = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        text = base64.encodebytes(body).replace(b"\n", _CRLF)
    head = [
        *extra,
        _header("From", _named(sender, sender_name)),
        _header("To", _named(to, to_name)),
        _header("Subject", email.header.Header(subject, "utf-8").encode() if not subject.isascii() else subject),
        _header("Date", _date(sent_at)),
        _header("Message-ID", message_id),
        b"MIME-Version: 1.0\r\n",
        ctype,
    ]
    return b"".join(head) + _CRLF + text


def render_received(*, kind: str, sender: str, sender_name: str | None, own: str, subject: str, body: bytes,
                    sent_at: float, message_id: bytes, verified: bool | None = None) -> bytes:
    """A received message as the mail client sees it (the sender as verified end to end).

    ``verified``: None when the sender is not a contact, else whether the contact is verified.
    """
    trust = "not a contact" if verified is None else "verified" if verified else "unverified"
    stamp = _header(SENDER_HEADER, _named(sender, sender_name)) + _header(CONTACT_HEADER, trust)
    if kind != "rfc822":
        return _plain(sender=sender, sender_name=sender_name, to=own, to_name=None, subject=subject, body=body,
                      sent_at=sent_at, message_id=_message_id(message_id, sender), extra=[stamp])
    head, rest = header_block(body)
    fields = [(n, raw) for n, raw in _fields(head) if not n.startswith("x-anonmail-")]
    if not all(_same(addr, sender) for addr in _addresses(fields, "from")) or not _addresses(fields, "from"):
        fields = [(n, b"X-Anonmail-Claimed-From:" + raw.split(b":", 1)[1]) if n == "from" else (n, raw)
                  for n, raw in fields]
        fields.insert(0, ("from", _header("From", _named(sender, sender_name))))
    if fields and not fields[-1][1].endswith(b"\n"):
        fields[-1] = (fields[-1][0], fields[-1][1] + _CRLF)
    return stamp + b"".join(raw for _n, raw in fields) + (rest if rest else _CRLF)


def render_sent(*, kind: str, state: str, own: str, recipient: str, recipient_name: str | None, subject: str,
                body: bytes, created_at: float, message_id: bytes) -> bytes:
    """A sent message for the Sent folder, its delivery state in the first header."""
    stamp = _header(DELIVERY_HEADER, state)
    if kind == "rfc822":
        return stamp + body
    return _plain(sender=own, sender_name=None, to=recipient, to_name=recipient_name, subject=subject, body=body,
                  sent_at=created_at, message_id=_message_id(message_id, own), extra=[stamp])


def now_date() -> str:
    """An RFC 5322 Date for now (what the bridge adds when a client sent none)."""
    return _date(time.time())
