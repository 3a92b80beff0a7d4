"""Key files on disk: 0600 from creation, written atomically, refused when others may read them.

The one place anonmail writes secrets to the filesystem (node identities, sealed user identities,
onion service keys, epoch keys), kept out of the sans-IO :mod:`anonmail.core`. A key file is
written to a 0600 temporary file in the same directory, fsync-ed, moved into place and the
directory fsync-ed; reading refuses a file that is missing, not a regular file, too large, or
group/other-accessible (the message gives the ``chmod 600`` that fixes it). Every failure is a
:class:`~anonmail.errors.KeyFileError` or :class:`~anonmail.errors.PassphraseError` naming the path.
"""

from __future__ import annotations

import errno
import os
import secrets
import shlex
import stat
from typing import Any

from anonmail.core.keys import IdentityKey, open_sealed, seal_secret
from anonmail.errors import KeyFileError, PassphraseError

__all__ = ["write_key_file", "read_key_file", "save_identity", "load_identity"]

_SEED_BYTES = 32


_MAX_KEY_FILE_BYTES = 1 << 20
_IDENTITY_TAG = b"anonmail-identity-ed25519-v1\n"


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        if os.name == "nt":
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> None:
    """Write a key file atomically, readable by its owner only (mode 0600 from creation).

    The data goes to a temporary file in the same directory, created with mode 0600 (and
    ``fchmod``-ed, whatever the umask), is fsync-ed, then moved into place and the directory
    fsync-ed. Raises KeyFileError if ``path`` exists and ``overwrite`` is false, or on any
    OS error (the message names the path).
    """
    target = os.fspath(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"key file data must be bytes, got {type(data).__name__}")
    directory = os.path.dirname(target) or "."
    if not overwrite and os.path.lexists(target):
        raise KeyFileError(f"key file {target!r} already exists; refusing to overwrite it")
    tmp = os.path.join(
        directory, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp"
    )
    flags = (
        os.O_WRONLY | os.O_CREAT | os.O_EXCL
        | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    )
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot create key file in {directory!r}: {exc.strerror}") from exc
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)
            view = memoryview(bytes(data))
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                # link() fails atomically if the target appeared meanwhile.
                os.link(tmp, target)
            except FileExistsError:
                raise KeyFileError(
                    f"key file {target!r} already exists; refusing to overwrite it"
                ) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                    raise
                if os.path.lexists(target):
                    raise KeyFileError(
                        f"key file {target!r} already exists; refusing to overwrite it"
                    ) from None
                os.replace(tmp, target)
        _fsync_dir(directory)
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {target!r}: {exc.strerror}") from exc
    finally:
        # After link() the temporary name is still there; after a failure it may be.
        try:
            os.unlink(tmp)
        except OSError:
            pass  # already moved; or a leftover 0600 temporary file: untidy, not unsafe


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """Read a key file; refuse one that is missing, not a regular file, or group/other-readable.

    Raises KeyFileError naming the path; for unsafe permissions the message gives the mode
    and the ``chmod 600 PATH`` command that fixes it.
    """
    target = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(target, flags)
    except FileNotFoundError:
        raise KeyFileError(f"key file {target!r} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {target!r}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {target!r} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if os.name != "nt" and mode & 0o077:
            raise KeyFileError(
                f"key file {target!r} has mode {mode:04o}: group or others may access it; "
                f"run `chmod 600 {shlex.quote(target)}` and try again"
            )
        if st.st_size > _MAX_KEY_FILE_BYTES:
            raise KeyFileError(
                f"key file {target!r} is too large ({st.st_size} bytes) to be a key file"
            )
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            total += len(chunk)
            if total > _MAX_KEY_FILE_BYTES:
                raise KeyFileError(f"key file {target!r} is too large to be a key file")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {target!r}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def save_identity(
    path: str | os.PathLike[str],
    key: IdentityKey,
    passphrase: str | bytes,
    *,
    overwrite: bool = False,
    **seal_kwargs: Any,
) -> None:
    """Seal an identity key's seed under a passphrase and write it as a 0600 key file."""
    blob = seal_secret(_IDENTITY_TAG + key.seed, passphrase, **seal_kwargs)
    write_key_file(path, blob, overwrite=overwrite)


def load_identity(path: str | os.PathLike[str], passphrase: str | bytes) -> IdentityKey:
    """Read and open an identity key file; PassphraseError or KeyFileError if it fails."""
    target = os.fspath(path)
    blob = read_key_file(target)
    try:
        plain = open_sealed(blob, passphrase)
    except KeyFileError as exc:
        raise KeyFileError(f"key file {target!r}: {exc}") from exc
    except PassphraseError as exc:
        raise PassphraseError(f"key file {target!r}: {exc}") from exc
    if not plain.startswith(_IDENTITY_TAG) or len(plain) != len(_IDENTITY_TAG) + _SEED_BYTES:
        raise KeyFileError(f"key file {target!r} does not hold an identity key")
    return IdentityKey.from_seed(plain[len(_IDENTITY_TAG) :])
