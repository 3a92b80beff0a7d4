"""What a message carries end to end: a small header and the body (sans-IO).

Encoding (inside the fragments, so only the two ends ever see it)::

    header length (u32 BE) | canonical JSON header | body bytes

The header is ``{"v": 1, "type": "mail", "subject": str, "sent_at": int}`` for mail, or
``{"v": 1, "type": "keys", "certs": [base64 EncryptionKeyCert...], "sent_at": int}`` for a key
announcement (the body is empty), or ``{"v": 1, "type": "rfc822", "sent_at": int}`` for a whole
Internet message (RFC 5322 bytes with its MIME parts, as a mail client submitted it to the bridge;
the body is those bytes, unchanged). Anyone can write to a user, so the header is read with the
strict JSON rules of :mod:`anonmail.core.strictjson` (depth at most 2, 64-bit integers, no lone
surrogates) and ``sent_at`` must lie in ``0 .. MAX_SENT_AT``. Receivers reject anything else with
FragmentError. The subject may hold any character but a newline: whoever shows it escapes
control characters (:func:`anonmail.core.display.for_terminal`).
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass, field

from anonmail.core import strictjson
from anonmail.core.keys import EncryptionKeyCert
from anonmail.errors import FragmentError, JSONError, SignatureError

__all__ = ["Envelope", "encode_mail", "encode_keys", "encode_rfc822", "rfc822_subject", "decode_envelope",
           "MAX_SUBJECT_CHARS", "MAX_SENT_AT"]

MAX_SUBJECT_CHARS = 200
#: Latest ``sent_at`` accepted (SQLite's INTEGER is signed 64-bit).
MAX_SENT_AT = strictjson.MAX_INT
#: A header is one object holding at most one list (``certs``).
_MAX_HEADER_DEPTH = 2
_LEN = struct.Struct(">I")
_MAX_HEADER = 64 * 1024


@dataclass(frozen=True)
class Envelope:
    """A decoded message: mail (subject, body), an RFC 5322 message (body) or a key announcement (certs).

    For ``rfc822`` the subject is the message's decoded Subject header (shortened), for listings.
    """

    type: str
    sent_at: int
    subject: str = ""
    body: bytes = b""
    certs: tuple[EncryptionKeyCert, ...] = field(default=())


def _encode(header: dict, body: bytes) -> bytes:
    try:
        raw = strictjson.dumps(header, what="envelope header", max_depth=_MAX_HEADER_DEPTH)
    except JSONError as exc:
        raise ValueError(f"cannot encode this envelope: {exc}") from None
    return _LEN.pack(len(raw)) + raw + body


def encode_mail(subject: str, body: bytes, *, sent_at: int) -> bytes:
    """The message bytes of a mail (subject limited to MAX_SUBJECT_CHARS, no newlines)."""
    if len(subject) > MAX_SUBJECT_CHARS or "\n" in subject or "\r" in subject:
        raise ValueError(f"a subject is one line of at most {MAX_SUBJECT_CHARS} characters")
    return _encode({"v": 1, "type": "mail", "subject": subject, "sent_at": int(sent_at)}, body)


def encode_keys(certs: list[EncryptionKeyCert], *, sent_at: int) -> bytes:
    """The message bytes of a key announcement (our current encryption-key certificates)."""
    return _encode(
        {"v": 1, "type": "keys", "sent_at": int(sent_at),
         "certs": [base64.b64encode(c.to_bytes()).decode("ascii") for c in certs]},
        b"",
    )


def encode_rfc822(message: bytes, *, sent_at: int) -> bytes:
    """The message bytes of a whole RFC 5322 message, carried unchanged (the mail-client bridge)."""
    if not message:
        raise ValueError("an RFC 5322 message cannot be empty")
    return _encode({"v": 1, "type": "rfc822", "sent_at": int(sent_at)}, message)


def rfc822_subject(message: bytes) -> str:
    """The decoded Subject header of an RFC 5322 message, one line, at most MAX_SUBJECT_CHARS ("" if none)."""
    import email.parser
    import email.policy

    end = message.find(b"\r\n\r\n")
    end = message.find(b"\n\n") if end < 0 else end
    head = message if end < 0 else message[:end]
    try:
        parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head[:_MAX_HEADER])
        subject = str(parsed.get("subject", ""))
    except Exception:  # noqa: BLE001 - hostile bytes; the stdlib parser's errors are not a closed set
        return ""
    return " ".join(subject.split())[:MAX_SUBJECT_CHARS]


def decode_envelope(data: bytes) -> Envelope:
    """Parse message bytes; FragmentError saying what is wrong if they are not an envelope."""
    if len(data) < _LEN.size:
        raise FragmentError("message too short for an envelope header")
    (length,) = _LEN.unpack_from(data)
    if length > min(_MAX_HEADER, len(data) - _LEN.size):
        raise FragmentError(f"envelope header length {length} is out of range")
    try:
        header = strictjson.loads(data[_LEN.size : _LEN.size + length], what="envelope header",
                                  max_depth=_MAX_HEADER_DEPTH)
    except JSONError as exc:
        raise FragmentError(f"envelope header is not strict JSON: {exc}") from None
    body = data[_LEN.size + length :]
    if not isinstance(header, dict) or header.get("v") != 1:
        raise FragmentError("unknown envelope version")
    sent_at = header.get("sent_at")
    if not isinstance(sent_at, int) or isinstance(sent_at, bool) or not 0 <= sent_at <= MAX_SENT_AT:
        raise FragmentError(f"envelope sent_at must be an integer from 0 to {MAX_SENT_AT}")
    kind = header.get("type")
    if kind == "mail" and set(header) == {"v", "type", "subject", "sent_at"}:
        subject = header["subject"]
        if not isinstance(subject, str) or len(subject) > MAX_SUBJECT_CHARS:
            raise FragmentError("envelope subject is malformed")
        return Envelope("mail", sent_at, subject=subject, body=body)
    if kind == "rfc822" and set(header) == {"v", "type", "sent_at"}:
        if not body:
            raise FragmentError("an rfc822 envelope carries no message")
        return Envelope("rfc822", sent_at, subject=rfc822_subject(body), body=body)
    if kind == "keys" and set(header) == {"v", "type", "certs", "sent_at"} and not body:
        certs = header["certs"]
        if not isinstance(certs, list) or not 1 <= len(certs) <= 16:
            raise FragmentError("key announcement must carry 1 to 16 certificates")
        try:
            parsed = tuple(EncryptionKeyCert.from_bytes(base64.b64decode(c, validate=True)) for c in certs)
        except (binascii.Error, TypeError, ValueError, SignatureError) as exc:
            raise FragmentError(f"key announcement certificate is malformed: {exc}") from exc
        return Envelope("keys", sent_at, certs=parsed)
    raise FragmentError(f"unknown envelope type {kind!r} or wrong fields")
