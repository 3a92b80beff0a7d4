"""The bridge's sans-IO mail handling: recipients, senders, what a client is shown; config and login."""

from __future__ import annotations

import email
import email.policy
import os

import pytest

from anonmail.bridge.config import bridge_settings_from_table
from anonmail.bridge.credentials import create_login, load_login
from anonmail.bridge.message import check_sender, render_received, render_sent, resolve_recipient
from anonmail.config import Table
from anonmail.core.address import Address
from anonmail.core.envelope import decode_envelope, encode_rfc822
from anonmail.errors import ConfigError, MailError

ALICE = str(Address(bytes(range(32)), "alpha"))
BOB = str(Address(bytes(range(1, 33)), "beta"))
MALLORY = str(Address(bytes(range(2, 34)), "beta"))


def _mistype(address: str) -> str:
    i = 10
    ch = "a" if address[i] != "a" else "b"
    return address[:i] + ch + address[i + 1:]


def test_recipients_by_petname_or_address():
    contacts = {"bob": BOB}
    assert str(resolve_recipient("bob@petname.anonmail", contacts)) == BOB
    assert str(resolve_recipient("<Bob@PETNAME.anonmail>", contacts)) == BOB
    assert str(resolve_recipient(MALLORY, contacts)) == MALLORY


def test_unknown_petname_names_the_contacts():
    with pytest.raises(MailError) as info:
        resolve_recipient("bbo@petname.anonmail", {"bob": BOB, "carol": MALLORY})
    assert info.value.reason == "unknown_contact"
    assert "'bbo'" in str(info.value) and "bob, carol" in str(info.value)


def test_mistyped_address_carries_the_checksum_hint():
    with pytest.raises(MailError) as info:
        resolve_recipient(_mistype(BOB), {})
    assert info.value.reason == "bad_address"
    assert "checksum does not match" in str(info.value) and "mistyped" in str(info.value)


def test_an_ordinary_email_address_is_refused_with_why():
    with pytest.raises(MailError) as info:
        resolve_recipient("bob@example.com", {})
    assert "Internet address" in str(info.value) and "petname.anonmail" in str(info.value)


def test_sender_must_be_me():
    ok = f"From: Alice <{ALICE}>\r\nSubject: x\r\n\r\nhi\r\n".encode()
    check_sender(ALICE, ok, ALICE)
    check_sender("me@petname.anonmail", ok, ALICE)
    with pytest.raises(MailError):
        check_sender(BOB, ok, ALICE)
    with pytest.raises(MailError) as info:
        check_sender(ALICE, f"From: {BOB}\r\n\r\nhi".encode(), ALICE)
    assert info.value.reason == "not_own_address"
    with pytest.raises(MailError):
        check_sender(ALICE, f"From: {ALICE}, {BOB}\r\n\r\nhi".encode(), ALICE)


def test_forged_from_on_received_mail_is_replaced_by_the_verified_sender():
    """Attack: Mallory writes From: Alice and X-Anonmail-Sender: Alice into a message she sends Bob."""
    raw = (f"X-Anonmail-Sender: {ALICE}\r\nFrom: Alice <{ALICE}>\r\nSubject: pay me\r\n\r\nbody\r\n").encode()
    shown = render_received(kind="rfc822", sender=MALLORY, sender_name=None, own=BOB, subject="pay me", body=raw,
                            sent_at=0, message_id=b"1" * 16)
    msg = email.message_from_bytes(shown, policy=email.policy.default)
    assert msg.get_all("X-Anonmail-Sender") == [MALLORY]
    assert msg["From"].addresses[0].addr_spec == MALLORY
    assert ALICE in msg["X-Anonmail-Claimed-From"]
    assert shown.endswith(b"\r\n\r\nbody\r\n")


def test_honest_received_mail_keeps_its_bytes_after_the_stamp():
    raw = (f"From: Alice <{ALICE}>\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nbody\r\n").encode()
    shown = render_received(kind="rfc822", sender=ALICE, sender_name="alice", own=BOB, subject="hi", body=raw,
                            sent_at=0, message_id=b"1" * 16)
    assert shown.endswith(raw) and shown.startswith(b"X-Anonmail-Sender: alice <")


def test_plain_mail_and_sent_copies_are_rfc5322():
    shown = render_received(kind="mail", sender=ALICE, sender_name=None, own=BOB, subject="héllo",
                            body="grüße\n".encode(), sent_at=1_700_000_000, message_id=b"2" * 16)
    msg = email.message_from_bytes(shown, policy=email.policy.default)
    assert msg["Subject"] == "héllo" and msg.get_content() == "grüße\r\n" or msg.get_content() == "grüße\n"
    sent = render_sent(kind="rfc822", state="queued", own=ALICE, recipient=BOB, recipient_name="bob", subject="",
                       body=b"From: x\r\n\r\nb", created_at=0, message_id=b"3" * 16)
    assert sent == b"X-Anonmail-Delivery: queued\r\nFrom: x\r\n\r\nb"


def test_rfc822_envelope_round_trip_keeps_bytes():
    raw = os.urandom(5000)
    decoded = decode_envelope(encode_rfc822(b"Subject: s\r\n\r\n" + raw, sent_at=3))
    assert decoded.type == "rfc822" and decoded.body == b"Subject: s\r\n\r\n" + raw and decoded.subject == "s"


def test_bridge_binds_loopback_only():
    assert bridge_settings_from_table(Table({"host": "::1"}, "agent.toml", "bridge.")).host == "::1"
    for host in ("0.0.0.0", "192.168.1.5", "example.org"):
        with pytest.raises(ConfigError) as info:
            bridge_settings_from_table(Table({"host": host}, "agent.toml", "bridge."))
        assert "loopback" in str(info.value) and "agent.toml" in str(info.value)


def test_login_is_stored_hashed_and_0600(tmp_path):
    password = create_login(tmp_path, ALICE)
    path = tmp_path / "bridge.login"
    assert path.stat().st_mode & 0o777 == 0o600
    assert password.encode() not in path.read_bytes()
    login = load_login(tmp_path)
    assert login.verify(ALICE, password) and not login.verify(ALICE, password + "x")
    assert not login.verify(BOB, password)
    path.chmod(0o644)
    with pytest.raises(ConfigError):
        load_login(tmp_path)


def test_agent_toml_carries_a_bridge_table_checked_at_load(tmp_path):
    from anonmail.agent.config import load_agent_config, render_agent_config

    import base64

    key = base64.b64encode(bytes(32)).decode()
    text = render_agent_config(provider="alpha", authorities=[("tcp://127.0.0.1:7000", key)], threshold=1,
                               test_mode=True)
    assert "[bridge]" in text
    (tmp_path / "agent.toml").write_text(text)
    config = load_agent_config(tmp_path)
    assert config.bridge.enabled is False and config.bridge.host == "127.0.0.1"
    (tmp_path / "agent.toml").write_text(text.replace('host = "127.0.0.1"', 'host = "0.0.0.0"'))
    with pytest.raises(ConfigError) as info:
        load_agent_config(tmp_path)
    assert "bridge.host" in str(info.value) and "loopback" in str(info.value)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=600))
def test_any_message_bytes_decode_to_an_rfc822_envelope(junk):
    """Attack: a sender's arbitrary header bytes must not crash the recipient's agent while it decodes."""
    decoded = decode_envelope(encode_rfc822(b"Subject: " + junk, sent_at=1))
    assert decoded.type == "rfc822" and decoded.body == b"Subject: " + junk
    assert "\n" not in decoded.subject and len(decoded.subject) <= 200
    shown = render_received(kind="rfc822", sender=ALICE, sender_name=None, own=BOB, subject="", body=decoded.body,
                            sent_at=0, message_id=b"x" * 16)
    assert shown.startswith(b"X-Anonmail-Sender: ")


@pytest.mark.parametrize("verified, shown", [(True, "verified"), (False, "unverified"), (None, "not a contact")])
def test_received_mail_says_whether_the_sender_is_a_verified_contact(verified, shown):
    """Attack included: the sender writes its own X-Anonmail-Contact: verified; only the bridge's line shows."""
    raw = b"X-Anonmail-Contact: verified\r\nFrom: x\r\nSubject: hi\r\n\r\nbody\r\n"
    for kind, body in (("rfc822", raw), ("mail", b"body")):
        out = render_received(kind=kind, sender=MALLORY, sender_name=None, own=BOB, subject="hi", body=body,
                              sent_at=0, message_id=b"1" * 16, verified=verified)
        msg = email.message_from_bytes(out, policy=email.policy.default)
        assert msg.get_all("X-Anonmail-Contact") == [shown]
