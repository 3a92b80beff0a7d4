"""The node's I2P private destination on disk: mode 0600, checked when read, written atomically."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from i2plib import sam

from anonmail.errors import KeyFileError
from anonmail.net.i2p.sam import b32_address

__all__ = ["DESTINATION_FILE", "load_destination", "save_destination"]

#: File in the node's data directory holding the I2P private destination (I2P base64).
DESTINATION_FILE = "i2p_destination.key"


def _check_private_destination(text: str, path: Path) -> str:
    text = text.strip()
    try:
        raw = sam.i2p_b64decode(text)
        if len(raw) < 387 + 3:
            raise ValueError("too short")
        cert_len = int.from_bytes(raw[385:387], "big")
        if len(raw) < 387 + cert_len + 32:
            raise ValueError("truncated")
        b32_address(text, private=True)
    except Exception as exc:  # binascii.Error, ValueError, struct.error
        raise KeyFileError(f"{path} does not hold an I2P private destination ({exc}); "
                           "restore it from a backup or delete it to get a new I2P address") from None
    return text


def load_destination(data_dir: Path) -> str | None:
    """Read the node's private destination from ``data_dir`` (None if there is none yet).

    Raises KeyFileError when the file is unreadable, corrupt or accessible by other users.
    """
    path = Path(data_dir) / DESTINATION_FILE
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                           f"run: chmod 600 {path}")
    try:
        text = path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read {path}: {exc}") from exc
    return _check_private_destination(text, path)


def save_destination(data_dir: Path, private_b64: str) -> Path:
    """Write the private destination atomically with mode 0600; return the file's path."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DESTINATION_FILE
    _check_private_destination(private_b64, path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(private_b64.strip() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
