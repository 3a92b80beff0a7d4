"""A daemon's long-term identity key: a 0600 seed file in its data directory.

Mix nodes and providers sign their descriptors with it, and the consensus names them by it; it
is created on ``init`` (or the first run) and read at every start. The file holds a tag and the
32-byte Ed25519 seed, so a file of another kind (a passphrase-sealed user identity, an
authority key) is refused rather than misread.
"""

from __future__ import annotations

from pathlib import Path

from anonmail.core.keys import IdentityKey
from anonmail.keyfiles import read_key_file, write_key_file
from anonmail.errors import StoreError

__all__ = ["IDENTITY_FILE", "load_or_create_identity"]

IDENTITY_FILE = "identity.key"
_IDENTITY_TAG = b"anonmail-node-identity-v1:"


def load_or_create_identity(data_dir: Path) -> IdentityKey:
    """The node's long-term identity (a 0600 seed file in its data directory)."""
    path = data_dir / IDENTITY_FILE
    if path.exists():
        blob = read_key_file(path)
        if not blob.startswith(_IDENTITY_TAG) or len(blob) != len(_IDENTITY_TAG) + 32:
            raise StoreError(f"{path} is not a node identity key file")
        return IdentityKey.from_seed(blob[len(_IDENTITY_TAG) :])
    key = IdentityKey.generate()
    write_key_file(path, _IDENTITY_TAG + key.seed)
    return key
