"""The bridge's login: one user name and a random password, shown once, stored only as a hash.

``anonmail init`` and ``anonmail bridge --setup`` make them. The file ``HOME/bridge.login``
(0600) holds the user name and an scrypt hash of the password, so reading it gives nobody the
password. Mail clients log in with these over loopback (SMTP AUTH PLAIN/LOGIN, IMAP LOGIN).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from anonmail.errors import ConfigError

__all__ = ["LOGIN_FILE", "BridgeLogin", "create_login", "load_login"]

LOGIN_FILE = "bridge.login"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)


@dataclass(frozen=True)
class BridgeLogin:
    """A user name and a password hash; :meth:`verify` checks a login."""

    username: str
    salt: bytes
    digest: bytes

    def verify(self, username: str, password: str) -> bool:
        """Whether a client's user name and password are right (constant time in the password)."""
        ok_user = hmac.compare_digest(username.strip().casefold().encode(), self.username.casefold().encode())
        ok_pass = hmac.compare_digest(_hash(password, self.salt), self.digest)
        return ok_user and ok_pass


def create_login(home: Path, username: str) -> str:
    """Make a new password for ``username``, store its hash (0600), return the password (show it once)."""
    password = "-".join(secrets.token_hex(3) for _ in range(4))
    salt = os.urandom(16)
    record = {"username": username, "salt": salt.hex(), "scrypt": _hash(password, salt).hex()}
    path = home / LOGIN_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)
    return password


def load_login(home: Path) -> BridgeLogin:
    """The stored login; ConfigError saying what to run if there is none or it is unsafe."""
    path = home / LOGIN_FILE
    try:
        mode = path.stat().st_mode & 0o777
        record = json.loads(path.read_text())
        login = BridgeLogin(record["username"], bytes.fromhex(record["salt"]), bytes.fromhex(record["scrypt"]))
    except FileNotFoundError:
        raise ConfigError(f"no bridge login in {home}; run `anonmail bridge --setup` to make one") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); run `anonmail bridge --setup` for a new login") from None
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")
    return login
