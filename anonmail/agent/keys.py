"""The agent's key work: rotating our own encryption key and prekeys, and looking up contacts' keys and bundles.

Mixed into :class:`anonmail.agent.service.Agent`, whose task group runs :meth:`AgentKeys._key_rotator`
and whose packet builder asks :meth:`AgentKeys._want_keys` for a recipient's keys and
:meth:`AgentKeys._want_bundle` for their prekey bundle (to start an end-to-end session).
"""

from __future__ import annotations

import logging

import anyio
import anyio.from_thread

from anonmail.agent import account
from anonmail.core.address import Address
from anonmail.core.envelope import encode_keys
from anonmail.agent.stats import why
from anonmail.errors import AnonmailError, ProtocolError, TransportError

__all__ = ["AgentKeys"]

log = logging.getLogger("anonmail.agent")


class AgentKeys:
    """Key rotation and contact key lookups of an :class:`~anonmail.agent.service.Agent`."""

    # ------------------------------------------------------------------ contacts' keys

    def _want_keys(self, recipient: Address) -> None:
        """Look a recipient's keys up at their provider (at most once a minute per recipient)."""
        self._schedule_lookup(recipient.fingerprint, self._lookup, recipient)

    def _schedule_lookup(self, key: bytes, lookup, recipient: Address) -> None:
        last = self._lookups.get(key)
        now = self.wall_clock()
        if last is not None and now - last < 60:
            return
        self._lookups[key] = now
        assert self._tg is not None
        if self.settings.threads:  # called from a worker thread
            anyio.from_thread.run_sync(self._tg.start_soon, lookup, recipient)
        else:
            self._tg.start_soon(lookup, recipient)

    def _their_provider(self, recipient: Address) -> str | None:
        """An address of the recipient's provider that we can reach, from the consensus."""
        consensus, _ = self._home()
        target = consensus.by_name(recipient.provider) if consensus is not None else None
        return next((a for a in target.addresses if self.router.can_reach(a)), None) if target else None

    async def _lookup(self, recipient: Address) -> None:
        from anonmail.clients.provider import lookup_keys

        address = self._their_provider(recipient)
        if address is None:
            log.warning("cannot look up a contact's keys: their provider is not reachable in the consensus")
            return
        try:
            identity, certs = await lookup_keys(self.router, address, recipient, timeout=60.0)
        except ProtocolError as exc:
            if exc.reason == "unknown_user":
                await self._blocking(self._fail_to, recipient, f"{recipient} does not exist at {recipient.provider}")
            log.warning("key lookup failed: %s", exc.reason)
            return
        except (AnonmailError, TimeoutError) as exc:
            self._error("key lookup", exc)
            log.warning("key lookup failed (%s); will retry", why(exc))
            self._lookups.pop(recipient.fingerprint, None)
            return
        except Exception as exc:  # containment: a provider's odd answer never stops the agent
            self._error("key lookup", exc)
            self.inbound.faults.record(exc, "key lookup answer")
            return
        rows = [(c.to_bytes(), c.not_before, c.not_after) for c in certs if c.identity_public == identity]
        await self._blocking(self.store.add_contact_certs, recipient.fingerprint, identity, rows)

    def _want_bundle(self, recipient: Address) -> None:
        """Fetch a recipient's prekey bundle at their provider (at most once a minute per recipient)."""
        self._schedule_lookup(b"bundle:" + recipient.fingerprint, self._lookup_bundle, recipient)

    async def _lookup_bundle(self, recipient: Address) -> None:
        from anonmail.clients.provider import lookup_bundle

        address = self._their_provider(recipient)
        if address is None:
            log.warning("cannot fetch a contact's prekeys: their provider is not reachable in the consensus")
            return
        try:
            bundle = await lookup_bundle(self.router, address, recipient, timeout=60.0)
            bundle.verify(bundle.identity, now=self.now())
        except (AnonmailError, TimeoutError) as exc:
            self._error("prekey lookup", exc)
            log.warning("prekey bundle lookup failed (%s); will retry", why(exc))
            return
        except Exception as exc:  # containment: a provider's odd answer never stops the agent
            self._error("prekey lookup", exc)
            self.inbound.faults.record(exc, "prekey bundle answer")
            return
        await self._blocking(self.store.put_bundle, recipient.fingerprint, bundle.to_bytes(), self.wall_clock())

    async def _refresh_prekeys(self) -> None:
        """Publish our signed prekeys (new ones at half their lifetime) and refill one-time prekeys when low."""
        from anonmail.agent.e2e import ONE_TIME_BATCH, ONE_TIME_LOW

        client = self._client
        if client is None:
            return
        now = self.now()
        upload = await self._blocking(self.e2e.prekey_upload, now=now)
        try:
            with anyio.fail_after(60):
                held = await client.publish_prekeys(upload)
            if held < ONE_TIME_LOW:
                batch = await self._blocking(self.e2e.prekey_upload, now=now, one_time=ONE_TIME_BATCH)
                with anyio.fail_after(60):
                    await client.publish_prekeys(batch)
        except (TransportError, ProtocolError, TimeoutError) as exc:
            self._drop_session(exc, "publish prekeys")  # the next login publishes them

    def _fail_to(self, recipient: Address, error: str) -> None:
        for message in self.store.outbox(include_acknowledged=False):
            if message.recipient == str(recipient):
                self.store.fail_message(message.message_id, error)

    # ------------------------------------------------------------------ key rotation

    async def _key_rotator(self) -> None:
        """Rotate our encryption key at half its lifetime; publish and announce the new one."""
        lifetime = self.settings.key_lifetime
        while True:
            now = self.now()
            keys = await self._blocking(self.store.my_keys)
            if not keys or now >= keys[0][3] + lifetime // 2:
                await self.rotate_key()
            await self._blocking(self.store.drop_my_keys_before, now)
            await self._refresh_prekeys()
            await anyio.sleep(max(1.0, min(3600.0, lifetime / 20)))

    async def rotate_key(self) -> None:
        """Make a new encryption key now, publish it at our provider and announce it to contacts."""
        now = self.now()
        cert = await self._blocking(lambda: account.add_encryption_key(
            self.store, self.identity, now=now, lifetime=self.settings.key_lifetime))
        self.inbound.secrets = await self._blocking(account.my_secrets, self.store, self.identity)
        client = self._client
        if client is not None:
            try:
                certs = await self._blocking(account.my_certs, self.store, now=now)
                with anyio.fail_after(60):
                    await client.publish_keys(certs)
            except (TransportError, ProtocolError, TimeoutError) as exc:
                self._drop_session(exc, "publish keys")  # the next login publishes them
        await self._blocking(self._announce, cert, now)
        log.info("rotated our encryption key; announced it to contacts")

    def _announce(self, cert, now: int) -> None:
        from anonmail.agent.outbox import queue_envelope

        body = encode_keys([cert], sent_at=now)
        for _name, address in self.store.contacts():
            queue_envelope(self.store, recipient=address, kind="keys", subject="", envelope=body,
                           now=self.wall_clock())
