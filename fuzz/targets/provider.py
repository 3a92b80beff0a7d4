"""Targets for the client–provider protocol as the provider serves it (auth, keys, fetch, confirm)."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from nacl.public import PrivateKey

from anonmail.core import mailproto, wire
from anonmail.core.address import Address
from anonmail.core.keys import IdentityKey, certify_encryption_key
from anonmail.errors import WireError
from anonmail.provider import node as provider_node
from anonmail.provider.config import ProviderConfig
from anonmail.provider.store import MailboxStore, NewEntry
from fuzz.registry import target
from mixnode.inbound import ClientSlot, Inbound

_NOW = 1_800_000_000.0
_NONCE = bytes(range(32))
# a valid X25519 public key (an all-zero one is of small order and refused on certification)
_ENCRYPTION_KEY = bytes(PrivateKey(bytes([7]) * 32).public_key)
_USER = IdentityKey.from_seed(bytes([5]) * 32)
_provider: provider_node.Provider | None = None


def _the_provider() -> provider_node.Provider:
    """One provider with a store, driven without an event loop (workers = 0 runs store calls inline)."""
    global _provider
    if _provider is None:
        folder = Path(tempfile.mkdtemp(prefix="anonmail-fuzz-provider-",
                                       dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        config = ProviderConfig(
            path=folder / "provider.toml", name="alpha", data_dir=folder, test_mode=True, tcp_listen=None, tor=None,
            i2p=None, authorities=(), threshold=1, epoch_seconds=3600, queue_limit=100, inbound_limit=100,
            link_queue_limit=100, workers=0, batch=8, lambda_loop=0.0, loop_delay_mean=0.1, loop_timeout=60.0,
            fetch_batch=4, quota_entries=3)
        _provider = provider_node.Provider(config, [], wall_clock=lambda: _NOW)
        _provider.store = MailboxStore(folder / "mailboxes.sqlite")
        _provider.store._conn.execute("PRAGMA synchronous=OFF")  # fuzzing speed; durability is not under test
        mailbox = Address.for_key(_USER.public, "alpha").mailbox_id
        _provider.store.register(mailbox, _USER.public, _NOW)
        _provider._mailboxes.add(mailbox)
    return _provider


def _drive(coroutine):
    """Run a coroutine that never waits (inline store calls) to completion, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AssertionError("a provider request waited for I/O")


def _requests_seed(*messages: dict) -> bytes:
    return b"".join(wire.encode_frame(wire.Control(m)) for m in messages)


def _seeds():
    cert = certify_encryption_key(_USER, _ENCRYPTION_KEY, not_before=int(_NOW) - 10, lifetime_s=3600)
    auth = {"type": "auth", "op": "login", "identity": mailproto.b64e(_USER.public),
            "signature": mailproto.b64e(mailproto.sign_auth(_USER, _NONCE, "alpha", "login")),
            "certs": [mailproto.b64e(cert.to_bytes())]}
    address = str(Address.for_key(_USER.public, "alpha"))
    return [
        _requests_seed(auth, {"type": "fetch"}, {"type": "confirm", "ids": [1, 2, 3, 2**62]},
                       {"type": "publish_keys", "certs": [mailproto.b64e(cert.to_bytes())]}),
        _requests_seed({"type": "keys", "address": address}, {"type": "fetch"}),
        _requests_seed({**auth, "op": "register"}),
    ]


@target("provider_request", allowed=(WireError,), seeds=_seeds, max_len=16384)
def provider_request(data: bytes) -> None:
    """Every request gets well-formed reply frames, and nothing fails unexpectedly (no contained fault)."""
    provider = _the_provider()
    mailbox = Address.for_key(_USER.public, "alpha").mailbox_id
    if provider.store.usage(mailbox).entries == 0:  # keep something to fetch and confirm
        provider.store.store_many([NewEntry(mailbox, mailproto.ENTRY_FRAGMENT, b"x" * 10)], _NOW)
    # Fresh budgets per input (the provider's own Inbound is made when it runs): logins never run out.
    budgets = Inbound(link_secret=bytes(32), me=lambda: b"", consensuses=lambda: [],
                      submit=lambda packet, at: None, dropped=Counter())
    session = provider_node._Session(_NONCE, ClientSlot(budgets, 0))
    before = provider.faults.total
    for frame in wire.FrameDecoder().feed(data):
        if not isinstance(frame, wire.Control):
            continue
        replies, _keep = _drive(provider._control(session, frame.message))
        decoded = wire.FrameDecoder().feed(b"".join(replies))
        assert decoded and isinstance(decoded[0], wire.Control)
        if decoded[0].message["type"] == "entries":
            assert len(decoded) == 1 + provider.config.fetch_batch
    assert provider.faults.total == before, provider.faults.as_dict()
