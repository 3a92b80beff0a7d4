"""The bridge's SMTP submission server (aiosmtpd): mail from a mail client into the agent's outbox.

Every check happens before anything is stored, and every refusal is an SMTP reply that says
what to do:

* login: ``AUTH PLAIN`` or ``LOGIN`` with the bridge login is required (``530`` before it,
  ``535`` for a wrong one). No TLS: the server listens on loopback only.
* ``MAIL FROM`` must be your own address (``553 5.7.1``).
* ``RCPT TO`` must be a contact (``bob@petname.anonmail``: ``550 5.1.1 unknown contact ...``)
  or a full anonmail address (``553 5.1.3`` with what is wrong, checksum hint included).
* ``DATA``: the ``From`` header must be yours (``550 5.7.1``); a message over the size limit is
  refused with ``552`` (``SIZE`` is announced, so good clients learn it before sending).
  ``Bcc`` headers are removed and a missing ``Message-ID`` is added, then the whole message
  is queued once per recipient as an ``rfc822`` envelope (its bytes and MIME parts unchanged).
* While no agent runs (a stand-alone ``anonmail bridge``), the greeting itself is
  ``554 5.3.2 ... start it with `anonmail agent```, so the client shows why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import warnings
import weakref
from collections.abc import Callable

import anyio.to_thread
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from anonmail.agent.outbox import queue_envelope
from anonmail.bridge.credentials import BridgeLogin
from anonmail.bridge.message import PETNAME_DOMAIN, check_sender, header_block, resolve_recipient
from anonmail.bridge.maildb import MailStore
from anonmail.core.sessions import MAX_ENVELOPE_BYTES
from anonmail.core.address import Address
from anonmail.core.envelope import encode_rfc822, rfc822_subject
from anonmail.errors import MailError

__all__ = ["start_smtp_server", "close_sessions", "MAX_SUBMISSION_BYTES"]

#: Largest message accepted: the 4 MiB message limit less the envelope header and a Message-ID.
MAX_SUBMISSION_BYTES = MAX_ENVELOPE_BYTES - 512

# aiosmtpd logs peers and recipients at INFO, and warns at every connection that AUTH without TLS
# is risky (the bridge listens on loopback only): a bridge log must not carry addresses or noise.
logging.getLogger("mail.log").setLevel(logging.ERROR)


def _prepare(message: bytes, own: Address) -> bytes:
    """Drop Bcc fields; add a Message-ID if the client sent none."""
    head, rest = header_block(message)
    lines, skipping = [], False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                lines.append(line)
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            lines.append(line)
    if not any(line.lower().startswith(b"message-id:") for line in lines):
        lines.insert(0, f"Message-ID: <{os.urandom(12).hex()}@{own.provider}.anonmail>\r\n".encode("ascii"))
    return b"".join(lines) + rest


class _Handler:
    """aiosmtpd hooks: check, then queue in the agent's outbox."""

    def __init__(self, store: MailStore, own: Address, quota: int | None) -> None:
        self.store, self.own, self.quota = store, own, quota

    async def handle_MAIL(self, server, session: Session, envelope: Envelope, address: str, options) -> str:
        if address and address.casefold() not in {str(self.own), f"me@{PETNAME_DOMAIN}"}:
            return f"553 5.7.1 you can send only as yourself ({self.own}), not as {address}"
        envelope.mail_from, envelope.mail_options = address, list(options)
        return "250 OK"

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, options) -> str:
        contacts = dict(await anyio.to_thread.run_sync(self.store.contacts))
        try:
            resolved = resolve_recipient(address, contacts)
        except MailError as exc:
            code = "550 5.1.1" if exc.reason == "unknown_contact" else "553 5.1.3"
            return f"{code} {_one_line(exc)}"
        if len(envelope.rcpt_tos) >= 50:
            return "452 4.5.3 at most 50 recipients per message"
        envelope.rcpt_tos.append(str(resolved))
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            check_sender(envelope.mail_from or "", raw, str(self.own))
        except MailError as exc:
            return f"550 5.7.1 {_one_line(exc)}"
        message = _prepare(raw, self.own)
        now = time.time()
        body = encode_rfc822(message, sent_at=int(now))
        if len(body) > MAX_ENVELOPE_BYTES:
            return (f"552 5.3.4 the message is {len(message)} bytes; anonmail carries at most "
                    f"{MAX_SUBMISSION_BYTES} bytes per message")
        subject = rfc822_subject(message)
        try:
            for recipient in envelope.rcpt_tos:
                await anyio.to_thread.run_sync(lambda r=recipient: queue_envelope(
                    self.store, recipient=r, kind="rfc822", subject=subject, envelope=body, now=now,
                    quota_bytes=self.quota))
        except MailError as exc:
            return f"452 4.3.1 {_one_line(exc)}"
        return f"250 2.0.0 queued for {len(envelope.rcpt_tos)} recipient(s); the Sent folder shows delivery"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class _Authenticator:
    def __init__(self, login: BridgeLogin) -> None:
        self.login = login

    def __call__(self, server, session, envelope, mechanism: str, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = self.login.verify(auth_data.login.decode("utf-8", "replace"), auth_data.password.decode("utf-8", "replace"))
        if not ok:
            return AuthResult(success=False, handled=False,
                              message="535 5.7.8 wrong user name or password: use the login `anonmail bridge --setup` "
                                      "showed")
        return AuthResult(success=True)


class _SMTP(SMTP):
    """aiosmtpd's protocol with a refusal greeting while the bridge cannot serve."""

    def __init__(self, *args, refusal: Callable[[], str | None], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._refusal = refusal

    async def _handle_client(self) -> None:  # aiosmtpd's per-connection entry point
        why = self._refusal()
        if why is not None:
            await self.push(f"554 5.3.2 {why}")
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()


async def start_smtp_server(store: MailStore, own: Address, login: BridgeLogin, host: str, port: int, *,
                            quota: int | None, refusal: Callable[[], str | None]) -> tuple[asyncio.base_events.Server,
                                                                                          weakref.WeakSet]:
    """Listen for SMTP submission on ``host:port`` (asyncio); returns the server and its open sessions."""
    handler = _Handler(store, own, quota)
    loop = asyncio.get_running_loop()
    sessions: weakref.WeakSet = weakref.WeakSet()

    def factory() -> _SMTP:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            protocol = _SMTP(handler, data_size_limit=MAX_SUBMISSION_BYTES, enable_SMTPUTF8=True, decode_data=False,
                         hostname="anonmail-bridge", ident="anonmail bridge", auth_required=True,
                         auth_require_tls=False, authenticator=_Authenticator(login), refusal=refusal,
                         loop=loop)
        sessions.add(protocol)
        return protocol

    server = await loop.create_server(factory, host=host, port=port)
    return server, sessions


def close_sessions(sessions: weakref.WeakSet) -> None:
    """Drop every open SMTP session (the bridge is stopping)."""
    for protocol in list(sessions):
        if protocol.transport is not None:
            protocol.transport.close()
