"""Logs carry no plaintext metadata: a whole in-memory delivery, every anonmail/mixnode record read.

The standard (docs/agent.md, "Logs"): no user address, identity fingerprint or key, mailbox id,
message id, contact name, subject or body in any record at INFO or above; counts, reasons and the
(public) names of mixes and providers are fine.
"""

from __future__ import annotations

import base64
import logging
from contextlib import AsyncExitStack

import pytest

from anonmail.agent.outbox import queue_mail
from anonmail.core.address import Address
from anonmail.core.keys import IdentityKey
from tests.network.agent.test_agent import network, start_user, wait_until, wall_clock

pytestmark = [pytest.mark.network, pytest.mark.virtual_time]


def spellings(secret: bytes) -> list[str]:
    """The ways a byte string could show up in a log line (also shortened: the first 12 characters)."""
    b32 = base64.b32encode(secret).decode().rstrip("=")
    full = [secret.hex(), base64.b64encode(secret).decode().rstrip("="),
            base64.urlsafe_b64encode(secret).decode().rstrip("="), b32.lower(), b32]
    return full + [text[:12] for text in full]


def about(address: Address, identity_public: bytes | None = None) -> list[str]:
    """What must not be logged about a user: the address (also its user part, shortened) and keys."""
    user = str(address).split("@")[0]
    found = [str(address), user, user[:12], *spellings(address.fingerprint), *spellings(address.mailbox_id)]
    return found + (spellings(identity_public) if identity_public is not None else [])


@pytest.mark.anyio
async def test_a_delivery_logs_no_addresses_fingerprints_mailboxes_or_message_ids(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    async with AsyncExitStack() as stack:
        net, tg = await network(stack, tmp_path)
        alice = await start_user(stack, net, tg, "alice", "alpha", 1)
        bob = await start_user(stack, net, tg, "bob", "beta", 2)
        ghost = Address.for_key(IdentityKey.generate().public, "beta")  # no such user: a failed key lookup
        alice.store.add_contact("petname-bobby", str(bob.address), now=wall_clock())
        alice.store.add_contact("petname-ghost", str(ghost), now=wall_clock())
        bob.store.add_contact("petname-alicia", str(alice.address), now=wall_clock())
        ids = [queue_mail(alice.store, to="petname-bobby", subject="subject-zq81", body=b"body-x7" * 700,
                          now=wall_clock())[0],
               queue_mail(alice.store, to="petname-ghost", subject="subject-zq82", body=b"boo", now=wall_clock())[0],
               queue_mail(bob.store, to="petname-alicia", subject="subject-zq83", body=b"reply-k2", now=wall_clock())[0]]
        await wait_until(lambda: len(bob.store.inbox()) == 1 and len(alice.store.inbox()) == 1
                         and {m.state for m in alice.store.outbox() + bob.store.outbox()} == {"acknowledged", "failed"})
        await alice.rotate_key()  # announces the new key to both contacts
        await wait_until(lambda: all(m.state != "sending" for m in alice.store.outbox() if m.kind == "keys"))
        assert alice.stats.loops_returned > 0 and bob.stats.delivered == 1

    secrets = [*about(alice.address, alice.identity.public), *about(bob.address, bob.identity.public), *about(ghost),
               "petname-bobby", "petname-ghost", "petname-alicia", "subject-zq8", "body-x7", "reply-k2"]
    for message_id in ids:
        secrets += spellings(message_id)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    records = [r for r in caplog.records if r.name.split(".")[0] in ("anonmail", "mixnode")]
    lines = [formatter.format(r) for r in records]
    # Something was logged, at INFO and at WARNING (the failed lookup), so this test can fail.
    assert any("session with our provider is up" in line for line in lines)
    assert any(r.levelno >= logging.WARNING and "unknown_user" in r.getMessage() for r in records)
    leaks = [(secret, line) for line in lines for secret in secrets if secret and secret in line]
    assert leaks == []
