"""Attacks by anyone who can write to a user, through the in-memory network, in virtual time.

Mallory is an ordinary user with a (modified) agent: she queues raw envelope bytes, or sends
only the first fragments of long messages. Each attack must cost the victim one bad entry at
most: Bob's agent keeps running and receives the next mail.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import AsyncExitStack

import anyio
import pytest
import trio.testing

from anonmail.agent import account, inbound
from anonmail.agent.outbox import queue_envelope, queue_mail
from anonmail.agent.status import agent_status
from anonmail.cli import main
from anonmail.core import fragments as F
from anonmail.core.envelope import encode_mail
from tests.network.agent.test_agent import network, restart_user, start_user, wait_until, wall_clock

pytestmark = pytest.mark.network


@pytest.fixture
def anyio_backend():
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def raw_envelope(header: bytes, body: bytes = b"") -> bytes:
    """Envelope bytes as a hostile sender writes them: length, header (anything), body."""
    return len(header).to_bytes(4, "big") + header + body


POISONS = {
    # ~3 KB of nested arrays: RecursionError in json.loads.
    "nested_arrays": raw_envelope(b'{"v":1,"type":"mail","subject":' + b"[" * 1500 + b"]" * 1500 + b',"sent_at":1}'),
    # 5,000 digits: ValueError (int-string conversion limit).
    "huge_integer": raw_envelope(b'{"v":1,"type":"mail","subject":"x","sent_at":1' + b"0" * 5000 + b"}"),
    # Decodes, then OverflowError when SQLite stores it.
    "sent_at_2_63": raw_envelope(b'{"v":1,"type":"mail","subject":"x","sent_at":%d}' % 2**63, b"body"),
    # A lone surrogate: UnicodeEncodeError when SQLite stores the subject.
    "lone_surrogate": raw_envelope(b'{"v":1,"type":"mail","subject":"\\ud800","sent_at":1}', b"body"),
}


async def two_users(stack, tmp_path, **network_kwargs):
    net, tg = await network(stack, tmp_path, **network_kwargs)
    mallory = await start_user(stack, net, tg, "mallory", "alpha", 1)
    bob = await start_user(stack, net, tg, "bob", "beta", 2)
    mallory.store.add_contact("bob", str(bob.address), now=wall_clock())
    return net, tg, mallory, bob


@pytest.mark.anyio
@pytest.mark.parametrize("poison", sorted(POISONS))
async def test_a_poison_envelope_is_one_bad_entry_and_the_next_mail_arrives(tmp_path, poison):
    async with AsyncExitStack() as stack:
        _net, _tg, mallory, bob = await two_users(stack, tmp_path)
        queue_envelope(mallory.store, recipient=str(bob.address), kind="mail", subject="poison",
                       envelope=POISONS[poison], now=wall_clock())
        await wait_until(lambda: bob.stats.bad_entries >= 1, timeout=300)
        assert bob.store.inbox() == []
        queue_mail(mallory.store, to="bob", subject="after the poison", body=b"still there?", now=wall_clock())
        await wait_until(lambda: len(bob.store.inbox()) == 1, timeout=300)
        assert bob.store.inbox()[0].subject == "after the poison"
        assert bob.stats.bad_entries == 1  # the poison, once (its retransmissions are merged)


@pytest.mark.anyio
async def test_an_unexpected_parser_failure_is_contained_counted_and_logged_once(tmp_path, monkeypatch, caplog):
    real = inbound.decode_envelope

    def exploding(data: bytes):
        envelope = real(data)
        if envelope.subject.startswith("boom"):
            raise ZeroDivisionError("a bug some input can reach")
        return envelope

    monkeypatch.setattr(inbound, "decode_envelope", exploding)
    caplog.set_level(logging.ERROR, logger="anonmail.agent")
    async with AsyncExitStack() as stack:
        _net, _tg, mallory, bob = await two_users(stack, tmp_path)
        for i in range(3):
            queue_mail(mallory.store, to="bob", subject=f"boom {i}", body=b"x", now=wall_clock())
        await wait_until(lambda: bob.stats.bad_entries >= 3, timeout=300)
        queue_mail(mallory.store, to="bob", subject="fine", body=b"y", now=wall_clock())
        await wait_until(lambda: len(bob.store.inbox()) == 1, timeout=300)
    (reason,) = bob.stats.bad_entry_reasons
    assert reason.startswith("ZeroDivisionError at ") and "test_hostile_mail.py" not in reason
    assert bob.stats.bad_entry_reasons[reason] == 3
    logged = [r for r in caplog.records if "ZeroDivisionError" in r.getMessage()]
    assert len(logged) == 1  # once per reason, not once per poison
    assert "a bug some input can reach" not in caplog.text  # reasons, never exception text


@pytest.mark.anyio
async def test_terminal_escapes_in_subject_and_body_never_reach_stdout(tmp_path, capsys):
    subject = "\x1b]52;c;cm0gLXJmIH4=\x07hi \x1b[2J\x9b31m\u202eevil"
    body = b"\x1b[31mred\x1b[0m\r\nFrom: the bank\n\x07bell \x1b]0;title\x07 ok\n"
    async with AsyncExitStack() as stack:
        net, _tg, mallory, bob = await two_users(stack, tmp_path)
        queue_envelope(mallory.store, recipient=str(bob.address), kind="mail", subject="x",
                       envelope=encode_mail(subject, body, sent_at=int(wall_clock())), now=wall_clock())
        await wait_until(lambda: len(bob.store.inbox()) == 1, timeout=300)
    home = net.data_dir / "users" / "bob"
    (home / account.IDENTITY_FILE).touch()  # the CLI only checks that a user lives here
    capsys.readouterr()
    assert main(["inbox", "--home", str(home)]) == 0
    assert main(["read", "1", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    for raw in ("\x1b", "\x07", "\x9b", "\r", "\u202e"):
        assert raw not in out
    assert "\\x1b]52;c;cm0gLXJmIH4=\\x07hi" in out and "\\u202eevil" in out
    assert "\\x1b[31mred\\x1b[0m\\x0d\nFrom: the bank\n" in out  # lines kept, escapes visible


@pytest.mark.anyio
async def test_incomplete_messages_are_bounded_per_sender_and_expire(tmp_path, monkeypatch):
    monkeypatch.setattr(inbound, "PARTIAL_TTL", 120)
    async with AsyncExitStack() as stack:
        _net, _tg, mallory, bob = await two_users(stack, tmp_path)
        body = bytes(F.FRAGMENT_DATA_BYTES + 100)  # two fragments
        for _ in range(12):
            message_id, _ = queue_mail(mallory.store, to="bob", subject="half", body=body, now=wall_clock())
            mallory.store.acknowledge(message_id, 1, wall_clock())  # her agent never sends the second half
        await wait_until(lambda: bob.stats.fragments_received >= 12, timeout=600)

        def incomplete() -> int:
            with sqlite3.connect(bob.store.path) as db:
                return db.execute("SELECT COUNT(DISTINCT message_id) FROM partials").fetchone()[0]

        assert incomplete() <= 8  # per-sender bound: the oldest made room
        await anyio.sleep(200)
        assert incomplete() == 0
        assert bob.stats.partials_expired >= 1 and bob.stats.partials_evicted >= 4
        # Real mail still arrives.
        queue_mail(mallory.store, to="bob", subject="whole", body=b"complete", now=wall_clock())
        await wait_until(lambda: len(bob.store.inbox()) == 1, timeout=300)


@pytest.mark.anyio
async def test_a_full_mailbox_acks_everything_and_tells_its_owner(tmp_path):
    async with AsyncExitStack() as stack:
        net, tg, mallory, bob = await two_users(stack, tmp_path, provider_overrides={"quota_entries": 6})
        await wait_until(lambda: mallory.stats.loops_returned > 0)
        bob.scope.cancel()  # offline: his mailbox at beta fills up
        for i in range(10):
            queue_mail(mallory.store, to="bob", subject=f"m{i}", body=b"x", now=wall_clock())
        # Every fragment is ACKed, full or not: no retransmission for ever, no "owner fetched" signal.
        await wait_until(lambda: all(m.state == "acknowledged" for m in mallory.store.outbox()), timeout=600)
        beta = net.providers["beta"]
        assert beta.store.usage(bob.address.mailbox_id).entries <= 6
        assert beta.mail["evicted"] >= 4
        bob_again = await restart_user(stack, net, tg, bob, "beta")
        await wait_until(lambda: bob_again.stats.fetches >= 1, timeout=120)
        assert bob_again.stats.mailbox_full and bob_again.stats.mailbox_evicted >= 4
        status = agent_status(bob_again, started=wall_clock(), running=True)
        assert status["mailbox_full"] is True and status["mailbox_evicted"] >= 4
        json.dumps(status)
        await wait_until(lambda: len(bob_again.store.inbox()) >= 1, timeout=120)
        await anyio.sleep(20)
        # What was kept arrives; what made room does not (bob was told how much).
        assert 1 <= len(bob_again.store.inbox()) <= 6
