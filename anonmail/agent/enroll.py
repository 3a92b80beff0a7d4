"""Making a new user: keys, store, registration at a provider (``anonmail init``, the demos, tests)."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread

from anonmail.agent import account
from anonmail.agent.e2e import ONE_TIME_BATCH, EndToEnd
from anonmail.agent.store import AgentStore
from anonmail.core.address import Address
from anonmail.core.keys import IdentityKey
from anonmail.net.router import Router

__all__ = ["enroll"]


async def enroll(
    home: Path,
    identity: IdentityKey,
    provider: str,
    router: Router,
    provider_address: str,
    *,
    now: int,
    key_lifetime: int = account.DEFAULT_KEY_LIFETIME,
    threads: bool = True,
) -> tuple[AgentStore, Address]:
    """Create the user's store, first encryption key and prekeys, then register at ``provider`` and publish them.

    Registration is idempotent: a user already registered with this identity is logged in and
    its certificates are refreshed. Raises ProtocolError (e.g. ``registration_closed``) or
    TransportError when the provider refuses or cannot be reached; the store stays usable.
    """
    from anonmail.clients.provider import ProviderClient

    home.mkdir(parents=True, exist_ok=True, mode=0o700)

    def prepare() -> tuple[AgentStore, list]:
        store = AgentStore(home / account.STORE_FILE)
        if not store.my_keys():
            account.add_encryption_key(store, identity, now=now, lifetime=key_lifetime)
        store.set_meta(address=str(Address.for_key(identity.public, provider)), provider=provider)
        return store, account.my_certs(store, now=now)

    store, certs = await anyio.to_thread.run_sync(prepare) if threads else prepare()
    e2e = EndToEnd(store, identity)

    def prekeys():
        return e2e.prekey_upload(now=now, one_time=ONE_TIME_BATCH)

    upload = await anyio.to_thread.run_sync(prekeys) if threads else prekeys()
    client = await ProviderClient.connect(router, provider_address, identity, provider, op="register", certs=certs)
    try:
        await client.publish_prekeys(upload)  # so that anyone can start a session with us at once
    finally:
        await client.aclose()
    return store, Address.for_key(identity.public, provider)
