"""The node's onion service key: its file, its address, and creating it before the first run."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

from anonmail.keyfiles import read_key_file, write_key_file
from anonmail.errors import KeyFileError
from anonmail.net.tor.settings import DEFAULT_VIRTUAL_PORT

__all__ = ["ONION_KEY_FILE", "onion_host", "create_onion_key", "load_onion_key"]

#: File in the node's data directory holding the onion service key (``ED25519-V3:<base64>``).
ONION_KEY_FILE = "onion_service_ed25519.key"


def onion_host(public_key: bytes) -> str:
    """The v3 onion host (56 base32 characters + ``.onion``) of an Ed25519 public key (rend-spec-v3)."""
    version = b"\x03"
    checksum = hashlib.sha3_256(b".onion checksum" + public_key + version).digest()[:2]
    return base64.b32encode(public_key + checksum + version).decode("ascii").lower() + ".onion"


def create_onion_key(data_dir: str | os.PathLike[str], virtual_port: int = DEFAULT_VIRTUAL_PORT) -> str:
    """Create the node's onion key offline (0600) and return the ``onion://`` address it will serve.

    Lets an operator (or a testnet) know a node's address before its first run. Tor's
    ED25519-V3 key blob is the expanded secret key: the clamped SHA-512 of a random seed.
    Refuses to replace an existing key (the address would change).
    """
    from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp

    path = Path(data_dir) / ONION_KEY_FILE
    if path.exists():
        raise KeyFileError(f"{path} already exists; keeping it (its onion address must not change)")
    expanded = bytearray(hashlib.sha512(os.urandom(32)).digest())
    expanded[0] &= 248
    expanded[31] &= 127
    expanded[31] |= 64
    public = crypto_scalarmult_ed25519_base_noclamp(bytes(expanded[:32]))
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    write_key_file(path, b"ED25519-V3:" + base64.b64encode(bytes(expanded)) + b"\n")
    return f"onion://{onion_host(public)}:{virtual_port}"



def load_onion_key(data_dir: str | os.PathLike[str] | None) -> tuple[str, str] | None:
    """The saved ``(key_type, key_content)`` to publish the same address again; None if there is none.

    Raises KeyFileError when the file is readable by others or is not a key anonmail wrote.
    """
    if data_dir is None:
        return None
    path = Path(data_dir) / ONION_KEY_FILE
    if not path.exists():
        return None
    text = read_key_file(path).decode("ascii", "replace").strip()
    key_type, sep, content = text.partition(":")
    if not sep or key_type != "ED25519-V3" or not re.fullmatch(r"[A-Za-z0-9+/=]{80,100}", content):
        raise KeyFileError(f"onion key file {str(path)!r} is not an ED25519-V3 key written by anonmail")
    return key_type, content
