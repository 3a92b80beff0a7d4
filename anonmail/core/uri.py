"""Transport addresses: the URIs that name where a node listens (docs/design.md, "Transports", a contract).

::

    onion://<56 base32 chars>.onion:<port>   Tor v3 onion service (checksum verified)
    i2p://<52 base32 chars>.b32.i2p          I2P destination (hash of the destination)
    tcp://127.0.0.1:<port>                   tests only; loopback hosts only
    mem://<name>                             in-process, tests and simulator only

Production code accepts only ``onion`` and ``i2p``; :func:`parse_transport_address` with
``production=True`` refuses the others with a message that says why. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from anonmail.errors import TransportAddressError

__all__ = [
    "SCHEMES",
    "PRODUCTION_SCHEMES",
    "LOOPBACK_HOSTS",
    "TransportAddress",
    "parse_transport_address",
    "onion_address_from_key",
    "check_onion_host",
]

SCHEMES = ("onion", "i2p", "tcp", "mem")
#: Schemes a production (non-test) configuration may use.
PRODUCTION_SCHEMES = frozenset({"onion", "i2p"})
#: The only hosts a ``tcp://`` address may name.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})

_ONION_HOST = re.compile(r"[a-z2-7]{56}\.onion")
_I2P_HOST = re.compile(r"[a-z2-7]{52}\.b32\.i2p")
_MEM_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_URI = re.compile(r"(?P<scheme>[a-z0-9]+)://(?P<rest>.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class TransportAddress:
    """A parsed transport URI; ``str()`` gives the canonical form back."""

    scheme: str
    host: str
    port: int | None = None

    def __str__(self) -> str:
        if self.scheme == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"tcp://{host}:{self.port}"
        if self.port is None:
            return f"{self.scheme}://{self.host}"
        return f"{self.scheme}://{self.host}:{self.port}"


def _fail(text: str, why: str) -> TransportAddressError:
    shown = text if len(text) <= 120 else text[:117] + "..."
    return TransportAddressError(f"bad transport address {shown!r}: {why}", address=shown)


def _port(text: str, raw: str, *, allow_zero: bool) -> int:
    if not raw.isdigit() or len(raw) > 5:
        raise _fail(text, f"port {raw!r} is not a number")
    port = int(raw)
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise _fail(text, f"port {port} is outside {low}..65535")
    return port


def onion_address_from_key(public_key: bytes) -> str:
    """The ``<56 chars>.onion`` host of a v3 onion service with this Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("an onion service key is 32 bytes")
    version = b"\x03"
    checksum = hashlib.sha3_256(b".onion checksum" + public_key + version).digest()[:2]
    return base64.b32encode(public_key + checksum + version).decode().lower() + ".onion"


def check_onion_host(host: str) -> None:
    """Raise TransportAddressError unless ``host`` is a v3 onion host with a valid checksum."""
    if not _ONION_HOST.fullmatch(host):
        raise _fail(host, "an onion host is 56 base32 characters (a-z, 2-7) followed by .onion")
    raw = base64.b32decode(host[:56].upper())
    key, checksum, version = raw[:32], raw[32:34], raw[34:]
    if version != b"\x03":
        raise _fail(host, "not a version 3 onion address")
    if hashlib.sha3_256(b".onion checksum" + key + version).digest()[:2] != checksum:
        raise _fail(host, "onion address checksum does not match (a typo?)")


def parse_transport_address(
    text: str, *, production: bool = False, allow_port_zero: bool = False
) -> TransportAddress:
    """Parse and validate a transport URI; raise TransportAddressError saying what is wrong.

    ``production=True`` refuses ``tcp`` and ``mem``. ``allow_port_zero`` lets a listen address
    ask for any free port (``tcp://127.0.0.1:0``).
    """
    if not isinstance(text, str):
        raise TransportAddressError(f"a transport address must be a string, got {type(text).__name__}")
    match = _URI.fullmatch(text)
    if match is None:
        raise _fail(text, "expected SCHEME://..., with SCHEME one of " + ", ".join(SCHEMES))
    scheme, rest = match["scheme"], match["rest"]
    if scheme not in SCHEMES:
        raise _fail(text, f"unknown scheme {scheme!r}; use one of " + ", ".join(SCHEMES))
    if production and scheme not in PRODUCTION_SCHEMES:
        raise _fail(
            text,
            f"{scheme}:// is for tests only; production peers must be onion:// or i2p:// "
            "(set test_mode = true only on a private test network)",
        )
    if scheme == "onion":
        host, sep, raw_port = rest.rpartition(":")
        if not sep:
            raise _fail(text, "an onion address needs a port: onion://<56 chars>.onion:PORT")
        check_onion_host(host)
        return TransportAddress("onion", host, _port(text, raw_port, allow_zero=False))
    if scheme == "i2p":
        if not _I2P_HOST.fullmatch(rest):
            raise _fail(text, "an I2P address is i2p://<52 base32 characters>.b32.i2p")
        return TransportAddress("i2p", rest)
    if scheme == "mem":
        if not _MEM_NAME.fullmatch(rest):
            raise _fail(text, "a mem name is 1-64 characters of A-Z a-z 0-9 . _ -")
        return TransportAddress("mem", rest)
    # tcp
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep or not tail.startswith(":"):
            raise _fail(text, "expected tcp://[::1]:PORT")
        raw_port = tail[1:]
    else:
        host, sep, raw_port = rest.rpartition(":")
        if not sep:
            raise _fail(text, "a tcp address needs a port: tcp://127.0.0.1:PORT")
    if host not in LOOPBACK_HOSTS:
        raise _fail(text, f"tcp:// is a test transport bound to loopback; host must be 127.0.0.1 or ::1, not {host!r}")
    return TransportAddress("tcp", host, _port(text, raw_port, allow_zero=allow_port_zero))
