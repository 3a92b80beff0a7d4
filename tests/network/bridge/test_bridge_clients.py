"""The bridge driven by mail clients nobody here wrote, over an in-memory anonmail network.

CPython's ``smtplib``/``imaplib`` and, when installed, ``swaks``, ``neomutt`` (headless in
tmux) and ``fetchmail``. Alice and Bob each run an agent and a bridge (``harness.BridgeNet``).
"""

from __future__ import annotations

import email.utils
import imaplib
import os
import smtplib
import socket
from email.message import EmailMessage

import pytest

from tests.network.bridge.harness import BridgeNet, find as _find, messages as _messages, submit as _submit, wait_for

pytestmark = [pytest.mark.network, pytest.mark.slow]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with BridgeNet(tmp_path_factory.mktemp("bridge")) as running:
        yield running


def _sender(msg) -> str:
    """The address in a received message's X-Anonmail-Sender header."""
    return email.utils.parseaddr(str(msg["X-Anonmail-Sender"]))[1]


class _Idle:
    """An IMAP IDLE session on INBOX (imaplib has no IDLE command: the protocol lines by hand)."""

    def __init__(self, user) -> None:
        self.client = user.imap()
        self.client.select("INBOX")
        self.client.send(b"I1 IDLE\r\n")
        assert self.client.readline().startswith(b"+")

    def wait_exists(self, timeout: float) -> bytes:
        self.client.sock.settimeout(timeout)
        while True:
            line = self.client.readline()
            if line.endswith(b"EXISTS\r\n"):
                return line

    def close(self) -> None:
        try:
            self.client.send(b"DONE\r\n")
            self.client.sock.settimeout(30)
            while not self.client.readline().startswith(b"I1 "):
                pass
        except BaseException:
            self.client.shutdown()
            raise
        self.client.logout()


def test_pdf_attachment_arrives_byte_identical_and_the_reply_is_threaded(net):
    alice, bob = net.users["alice"], net.users["bob"]
    pdf = b"%PDF-1.4\n" + os.urandom(1024 * 1024) + b"\n%%EOF\n"
    msg = EmailMessage()
    msg["From"] = f"Alice <{alice.address}>"
    msg["To"] = "bob@petname.anonmail"
    msg["Subject"] = "the report"
    msg.set_content("Bob, the report is attached.\n")
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="report.pdf")
    _submit(alice, msg)

    got = wait_for(lambda: _find(bob, "the report"), timeout=900, step=1.0, what="the PDF mail in Bob's INBOX")
    assert _sender(got) == alice.address
    attachments = [part for part in got.iter_attachments()]
    assert [a.get_filename() for a in attachments] == ["report.pdf"]
    assert attachments[0].get_content_type() == "application/pdf"
    assert attachments[0].get_payload(decode=True) == pdf
    assert got.get_body(("plain",)).get_content().strip() == "Bob, the report is attached."

    wait_for(lambda: b"X-Anonmail-Delivery: acknowledged" in b"".join(_messages(alice, "Sent")), timeout=300,
             what="the Sent copy acknowledged")

    idle = _Idle(alice)
    try:
        reply = EmailMessage()
        reply["From"] = bob.address
        reply["To"] = _sender(got)
        reply["Subject"] = "Re: the report"
        reply["In-Reply-To"] = got["Message-ID"]
        reply["References"] = got["Message-ID"]
        reply.set_content("Thanks, got it.\n")
        _submit(bob, reply)
        assert idle.wait_exists(timeout=300)
    finally:
        idle.close()
    back = wait_for(lambda: _find(alice, "Re: the report"), timeout=60, what="Bob's reply in Alice's INBOX")
    assert back["In-Reply-To"] == got["Message-ID"]
    assert _sender(back) == bob.address


def test_smtp_refusals_name_the_problem_and_store_nothing(net):
    alice, bob = net.users["alice"], net.users["bob"]
    store = alice.store()
    before = len(store.outbox())
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=60) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
            smtp.login(alice.address, "not-the-password")
        assert wrong.value.smtp_code == 535 and b"anonmail bridge --setup" in wrong.value.smtp_error
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=60) as smtp:
        smtp.ehlo()
        code, _ = smtp.mail(alice.address)
        assert code == 530  # a login comes first
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=60) as smtp:
        smtp.login(alice.address, alice.password)
        code, text = smtp.mail(bob.address)
        assert code == 553 and alice.address.encode() in text
        smtp.rset()
        assert smtp.mail(alice.address)[0] == 250
        code, text = smtp.rcpt("bbo@petname.anonmail")
        assert code == 550 and b"unknown contact 'bbo'" in text and b"bob" in text
        typo = bob.address[:5] + ("a" if bob.address[5] != "a" else "b") + bob.address[6:]
        code, text = smtp.rcpt(typo)
        assert code == 553 and b"checksum does not match" in text
        code, text = smtp.rcpt("someone@example.com")
        assert code == 553 and b"Internet address" in text
        assert smtp.rcpt("bob@petname.anonmail")[0] == 250
        code, text = smtp.data(f"From: {bob.address}\r\nSubject: forged\r\n\r\nhi\r\n".encode())
        assert code == 550 and b"not your address" in text
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=120) as smtp:
        smtp.login(alice.address, alice.password)
        big = f"From: {alice.address}\r\nSubject: big\r\n\r\n".encode() + (b"x" * 998 + b"\r\n") * 4300
        with pytest.raises(smtplib.SMTPSenderRefused) as too_big:  # SIZE= is refused at MAIL FROM
            smtp.sendmail(alice.address, ["bob@petname.anonmail"], big)
        assert too_big.value.smtp_code == 552
        smtp.rset()
        smtp.mail(alice.address)  # without SIZE=, the refusal comes after DATA
        smtp.rcpt("bob@petname.anonmail")
        code, _ = smtp.data(big)
        assert code == 552
    assert len(store.outbox()) == before
    store.close()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED|wrong user name"):
        client = imaplib.IMAP4("127.0.0.1", alice.imap_port, timeout=30)
        try:
            client.login(alice.address, "wrong")
        finally:
            client.shutdown()


def test_bcc_is_not_carried_and_plain_cli_mail_reads_as_mail(net):
    alice, bob = net.users["alice"], net.users["bob"]
    raw = (f"From: {alice.address}\r\nTo: bob@petname.anonmail\r\nBcc: bob@petname.anonmail\r\n"
           "Subject: with bcc\r\n\r\nhello\r\n").encode()
    with smtplib.SMTP("127.0.0.1", alice.smtp_port, timeout=60) as smtp:
        smtp.login(alice.address, alice.password)
        smtp.sendmail(alice.address, ["bob@petname.anonmail"], raw)
    from anonmail.agent.outbox import queue_mail

    store = alice.store()
    import time

    queue_mail(store, to="bob", subject="from the command line", body="plain words\n".encode(), now=time.time())
    store.close()
    got = wait_for(lambda: _find(bob, "with bcc"), what="the Bcc mail")
    assert got["Bcc"] is None and got["Message-ID"]
    plain = wait_for(lambda: _find(bob, "from the command line"), what="the CLI mail")
    assert plain["From"].addresses[0].addr_spec == alice.address
    assert plain.get_content().replace("\r\n", "\n") == "plain words\n"


def test_flags_moves_and_deletes_persist_and_the_cli_agrees(net):
    alice, bob = net.users["alice"], net.users["bob"]
    for i in range(3):
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = alice.address, "bob@petname.anonmail", f"keep {i}"
        m.set_content(f"number {i}\n")
        _submit(alice, m)
    wait_for(lambda: all(_find(bob, f"keep {i}") for i in range(3)), what="three mails")

    client = bob.imap()
    client.select("INBOX")
    uid_of = {}
    _t, data = client.uid("SEARCH", None, "ALL")
    for uid in data[0].split():
        _t, got = client.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        header = next(part[1] for part in got if isinstance(part, tuple))
        uid_of[header.decode().strip()] = uid
    assert client.create("Archive")[0] == "OK"
    assert client.uid("STORE", uid_of["Subject: keep 0"], "+FLAGS", "(\\Flagged \\Seen)")[0] == "OK"
    assert client.uid("MOVE", uid_of["Subject: keep 1"], "Archive")[0] == "OK"
    assert client.uid("STORE", uid_of["Subject: keep 2"], "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert client.expunge()[0] == "OK"
    client.logout()

    client = bob.imap()  # a new session sees what the last one did
    client.select("INBOX")
    _t, data = client.uid("FETCH", uid_of["Subject: keep 0"], "(FLAGS)")
    assert any(b"\\Flagged" in d and b"\\Seen" in d for d in data if isinstance(d, bytes)), data
    client.select("Archive")
    _t, data = client.search(None, "ALL")
    assert len(data[0].split()) == 1
    client.logout()
    store = bob.store()
    subjects = {m.subject: m for m in store.inbox()}
    assert "keep 2" not in subjects  # expunged in IMAP = deleted for the CLI too
    assert subjects["keep 0"].read and "keep 1" in subjects
    store.mark_read(subjects["keep 1"].id)  # `anonmail read` in the CLI ...
    store.delete_inbox(subjects["keep 0"].id)  # ... and `anonmail delete`
    store.close()

    def cli_changes_visible():
        c = bob.imap()
        try:
            c.select("Archive")
            _t, flags = c.fetch(b"1", "(FLAGS)")
            c.select("INBOX")
            _t, data = c.search(None, 'SUBJECT "keep 0"')
            return b"\\Seen" in flags[0] and not data[0].split()
        finally:
            c.logout()

    wait_for(cli_changes_visible, timeout=30, what="CLI read/delete seen over IMAP")


def test_greeting_refuses_with_a_reason_when_no_agent_runs(tmp_path):
    from tests.network.bridge.standalone import standalone_bridge

    with standalone_bridge(tmp_path) as (user, ports):
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", ports.smtp_port, timeout=30)
        assert refused.value.smtp_code == 554 and b"anonmail agent" in refused.value.smtp_error
        with socket.create_connection(("127.0.0.1", ports.imap_port), timeout=30) as sock:
            greeting = sock.makefile("rb").readline()
        assert greeting.startswith(b"* BYE [UNAVAILABLE]") and b"start it with `anonmail agent`" in greeting


def test_a_sender_forged_past_the_bridge_shows_as_the_verified_sender(net):
    """Attack: software at Alice's end skips the bridge and writes someone else's From into a message."""
    import time

    from anonmail.agent.outbox import queue_envelope
    from anonmail.core.address import Address
    from anonmail.core.envelope import encode_rfc822

    alice, bob = net.users["alice"], net.users["bob"]
    carol = str(Address(bytes(32), "alpha"))
    forged = (f"X-Anonmail-Sender: {carol}\r\nFrom: Carol <{carol}>\r\nSubject: forged sender\r\n\r\n"
              "pay carol\r\n").encode()
    store = alice.store()
    queue_envelope(store, recipient=bob.address, kind="rfc822", subject="forged sender",
                   envelope=encode_rfc822(forged, sent_at=int(time.time())), now=time.time())
    store.close()
    got = wait_for(lambda: _find(bob, "forged sender"), what="the forged mail")
    assert got.get_all("X-Anonmail-Sender") and len(got.get_all("X-Anonmail-Sender")) == 1
    assert _sender(got) == alice.address
    assert email.utils.parseaddr(str(got["From"]))[1] == alice.address
    assert carol in str(got["X-Anonmail-Claimed-From"])
