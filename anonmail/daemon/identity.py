"""A daemon's long-term identity key: a 0600 seed file in its data directory.

Mix nodes and providers sign their descriptors with it, and the consensus names them by it; it
is created on ``init`` (or the first run) and read at every start. The file holds a tag and the
32-byte Ed25519 seed, so a file of another kind (a passphrase-sealed user identity, an
authority key) is refused rather than misread.
"""

from __future__ import annotations

import os
from pathlib import Path

from anonmail.core.keys import IdentityKey
from anonmail.keyfiles import read_key_file, write_key_file
from anonmail.errors import StoreError

__all__ = ["IDENTITY_FILE", "load_or_create_identity", "load_or_create_secret"]

IDENTITY_FILE = "identity.key"
_IDENTITY_TAG = b"anonmail-node-identity-v1:"


def load_or_create_identity(data_dir: Path) -> IdentityKey:
    """The node's long-term identity (a 0600 seed file in its data directory)."""
    return IdentityKey.from_seed(load_or_create_secret(data_dir / IDENTITY_FILE, _IDENTITY_TAG, "node identity key"))


def load_or_create_secret(path: Path, tag: bytes, what: str) -> bytes:
    """A 32-byte secret kept in a tagged 0600 file: read it, or make a random one on first use.

    The tag tells key files apart, so a file of another kind is refused (StoreError) rather than misread.
    """
    if path.exists():
        blob = read_key_file(path)
        if not blob.startswith(tag) or len(blob) != len(tag) + 32:
            raise StoreError(f"{path} is not a {what} file")
        return blob[len(tag) :]
    secret = os.urandom(32)
    write_key_file(path, tag + secret)
    return secret
