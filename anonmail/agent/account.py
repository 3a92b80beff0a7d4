"""A user's keys on disk and in the store: identity, encryption keys and their certificates.

Layout of a user's home directory::

    identity.key    the Ed25519 identity seed, sealed under the passphrase (Argon2id), 0600
    agent.toml      settings: provider, authorities, transports, rates (written by ``init``)
    agent.sqlite    contacts, keys, outbox, inbox (see :mod:`anonmail.agent.store`), 0600

Encryption-key secrets live in the store encrypted under a *vault key* derived from the identity
seed, so the database alone opens nothing, and only one passphrase derivation is needed to start.
"""

from __future__ import annotations

import hashlib
import nacl.exceptions
import nacl.secret

from anonmail.agent.store import AgentStore
from anonmail.core.keys import (
    EncryptionKey,
    EncryptionKeyCert,
    IdentityKey,
    certify_encryption_key,
    newest_valid,
)
from anonmail.errors import KeyFileError, SignatureError

__all__ = [
    "IDENTITY_FILE",
    "CONFIG_FILE",
    "STORE_FILE",
    "DEFAULT_KEY_LIFETIME",
    "vault_key",
    "add_encryption_key",
    "my_secrets",
    "my_certs",
    "contact_key",
]

IDENTITY_FILE = "identity.key"
CONFIG_FILE = "agent.toml"
STORE_FILE = "agent.sqlite"
#: How long an encryption key is valid; the agent rotates at half of it.
DEFAULT_KEY_LIFETIME = 14 * 86400


def vault_key(identity: IdentityKey) -> bytes:
    """The key that encrypts this user's encryption-key secrets in the store."""
    return hashlib.blake2b(identity.seed, digest_size=32, person=b"anonmail-vault01").digest()


def add_encryption_key(store: AgentStore, identity: IdentityKey, *, now: int,
                       lifetime: int = DEFAULT_KEY_LIFETIME) -> EncryptionKeyCert:
    """Make a new encryption key, certify it with the identity key, keep it; return its cert."""
    key = EncryptionKey.generate()
    cert = certify_encryption_key(identity, key.public, not_before=int(now), lifetime_s=int(lifetime))
    box = nacl.secret.SecretBox(vault_key(identity)).encrypt(key.secret)
    store.add_my_key(key.public, bytes(box), cert.to_bytes(), cert.not_before, cert.not_after)
    return cert


def my_secrets(store: AgentStore, identity: IdentityKey) -> list[bytes]:
    """Our encryption secrets, newest first (old ones still open late mail until they expire)."""
    box = nacl.secret.SecretBox(vault_key(identity))
    secrets = []
    for _public, sealed, _cert, _nb, _na in store.my_keys():
        try:
            secrets.append(bytes(box.decrypt(sealed)))
        except nacl.exceptions.CryptoError as exc:
            raise KeyFileError(f"an encryption key in {store.path} does not open with this identity") from exc
    return secrets


def my_certs(store: AgentStore, *, now: int) -> list[EncryptionKeyCert]:
    """Our certificates that are valid now (what we publish and announce), newest first."""
    certs = []
    for _public, _sealed, blob, not_before, not_after in store.my_keys():
        if not_before <= now < not_after:
            certs.append(EncryptionKeyCert.from_bytes(blob))
    return certs


def contact_key(store: AgentStore, fingerprint: bytes, *, now: int) -> EncryptionKeyCert | None:
    """A contact's newest valid encryption key; None if we hold none; KeyExpiredError if all expired."""
    blobs = store.contact_certs(fingerprint)
    if not blobs:
        return None
    certs = []
    for blob in blobs:
        try:
            certs.append(EncryptionKeyCert.from_bytes(blob))
        except SignatureError:
            continue
    return newest_valid(certs, now=now)
