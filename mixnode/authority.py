"""The directory authority: collects node descriptors and publishes a signed consensus per epoch.

Overview
--------
Nodes upload a signed descriptor (:mod:`anonmail.core.pki`) for the current or the next epoch
to every authority. For each epoch E the authorities must all sign the *same* document, so
that a client can gather ``threshold`` signatures over one digest. Agreement rests on two
facts: :func:`~anonmail.core.pki.build_consensus` is deterministic, and every honest authority
feeds it the same descriptor set. That set is fixed by a wall-clock **cutoff** shared by all
authorities:

* **Build points** (:func:`build_points`, pure): the first for epoch E is
  ``start(E) - freeze_lead`` (default a quarter epoch before E begins); after it, one every
  ``round_seconds`` until E ends.
* At a build point ``t`` every authority waits ``sync_delay`` seconds (clock skew and uploads
  in flight), then asks each peer for the descriptors of E it *learned before t*
  (``get_descriptors {epoch, before: t}``). Any descriptor an authority learned before ``t``
  was uploaded directly to some authority before ``t``; so the union of its own set and the
  peers' answers is exactly "every descriptor uploaded anywhere before ``t``", the same at
  every authority that reached all peers up at that moment.
* If that union is empty (no node registered yet), nothing is built and the next build point
  is tried. This is also how the network **bootstraps**: when nodes first register in the
  middle of an epoch, the current epoch's consensus is built at the next point after their
  uploads, i.e. within ``round_seconds + sync_delay`` seconds (5 + 2 by default), and the
  next epoch's at its regular point.
* Having built and signed, the authority polls its peers for their signatures over the same
  digest (``get_signature {epoch, digest}``) until it holds all of them or the epoch ends, so a
  client gets ``threshold`` signatures from a single authority (``get_consensus``).
* An authority that missed the agreed build point (it was down or restarted) adopts a document
  a peer already holds with ``threshold`` valid signatures of pinned authorities, and adds its
  own signature: it never makes acceptable what was not already acceptable.

Authorities' clocks must agree to within ``sync_delay`` seconds (NTP is plenty); a skewed
authority may sign a different document, which then simply lacks the others' signatures.

One authority down does not stop the others: they skip it (every network wait is bounded by
``fail_after``) and still agree among themselves.

Protocol: one connection per request. The client sends HELLO (any role) and one CONTROL
request; the authority answers HELLO(AUTHORITY) and one CONTROL reply, ``{"type": "error",
"reason": ..., "message": ...}`` for anything it refuses (reasons: ``unknown_request``,
``bad_request``, ``malformed``, ``bad_descriptor``, ``stale``, ``future``, ``too_late``,
``too_many``, ``full``, ``not_ready``, ``digest_mismatch``, ``unavailable``, ``internal``)::

    upload_descriptor {descriptor}        -> accepted {epoch}
    get_consensus {epoch}                 -> consensus {epoch, document, signatures{id: b64}}
    get_descriptors {epoch, before?}      -> descriptors {epoch, descriptors[]}
    get_signature {epoch, digest (hex)}   -> signature {epoch, digest, signature}

State lives in SQLite (sqlite-utils, WAL) in the data directory: descriptors per epoch with
the time the authority learned them, consensus documents and signatures. Epochs older than the
previous one are purged. The store is small and its statements take well under a millisecond,
so they run inline on the event loop (this keeps virtual-time tests deterministic). The
authority rewrites ``status.json`` in its data directory every second for ``mixnode authority
status``.

All timing comes from the injected ``wall_clock()`` (Unix seconds) and :func:`anyio.sleep`, so
tests can run in virtual time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import sqlite_utils

from anonmail.config import load_toml
from anonmail.core import pki
from anonmail.core.keys import IdentityKey, read_key_file
from anonmail.core.wire import MAX_DIRECTORY_CONTROL_BYTES, Control, Role
from anonmail.errors import (
    AnonmailError,
    ConfigError,
    DirectoryError,
    StoreError,
    WireError,
)
from anonmail.net.framed import FramedStream
from anonmail.net.router import Router
from anonmail.net.settings import i2p_settings_from_table, tor_settings_from_table
from mixnode.status import STATUS_FILE, write_status

if TYPE_CHECKING:
    from anonmail.net.i2p import I2PSettings
    from anonmail.net.tor import TorSettings

__all__ = [
    "DEFAULT_EPOCH_SECONDS",
    "DEFAULT_ROUND_SECONDS",
    "DEFAULT_SYNC_DELAY",
    "MAX_DESCRIPTORS_PER_EPOCH",
    "MAX_DESCRIPTORS_PER_NODE",
    "REQUEST_TIMEOUT",
    "STATUS_FILE",
    "PeerAuthority",
    "AuthorityConfig",
    "load_authority_config",
    "parse_public_key",
    "build_points",
    "AuthorityStore",
    "Authority",
]

log = logging.getLogger("mixnode.authority")

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

DEFAULT_EPOCH_SECONDS = pki.DEFAULT_EPOCH_SECONDS
#: Seconds between build points once the first one for an epoch has passed (bootstrap rounds).
DEFAULT_ROUND_SECONDS = 5
#: Seconds after a build point before peers are asked for their descriptors.
DEFAULT_SYNC_DELAY = 2
#: Seconds between background descriptor pulls from peers (before the cutoff).
DEFAULT_GOSSIP_SECONDS = 30
#: Seconds between polls for peers' signatures.
SIGNATURE_POLL_SECONDS = 2
#: Bound on every request to a peer (connect, HELLO, request, reply).
REQUEST_TIMEOUT = 10.0
#: Bound on how long a client may take to send its request.
SERVE_TIMEOUT = 10.0
#: Seconds between rewrites of the status file.
STATUS_SECONDS = 1.0
DATABASE_FILE = "authority.sqlite"
#: More descriptors than this for one epoch are refused (keeps the document under the frame limit).
MAX_DESCRIPTORS_PER_EPOCH = 4096
#: Distinct descriptors one identity may upload per epoch.
MAX_DESCRIPTORS_PER_NODE = 4


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PeerAuthority:
    """Another authority: where to reach it and the key its signatures verify with."""

    address: str
    public_key: bytes

    @property
    def authority_id(self) -> str:
        """How its signatures are named in consensus replies."""
        return pki.authority_id(self.public_key)


@dataclass(frozen=True)
class AuthorityConfig:
    """A validated authority configuration (see :func:`load_authority_config`)."""

    name: str
    data_dir: Path
    key_file: Path
    listen: tuple[str, ...]  # addresses served directly (tcp in test mode; mem in-process)
    peers: tuple[PeerAuthority, ...] = ()
    threshold: int = 1
    epoch_seconds: int = DEFAULT_EPOCH_SECONDS
    test_mode: bool = False
    freeze_lead: int | None = None  # default: epoch_seconds // 4
    round_seconds: int = DEFAULT_ROUND_SECONDS
    sync_delay: int = DEFAULT_SYNC_DELAY
    gossip_seconds: int = DEFAULT_GOSSIP_SECONDS
    #: Test networks that start every node at once: build an epoch whose previous epoch has no
    #: document only from at least this many nodes (so the first consensus lists them all).
    bootstrap_nodes: int = 0
    tor: TorSettings | None = None  # serve as an onion service
    i2p: I2PSettings | None = None  # serve as an I2P destination
    config_path: Path | None = field(default=None, compare=False)

    @property
    def production(self) -> bool:
        """Whether only onion and I2P addresses are allowed."""
        return not self.test_mode

    @property
    def lead(self) -> int:
        """Seconds before an epoch starts at which its first build point lies."""
        return self.freeze_lead if self.freeze_lead is not None else self.epoch_seconds // 4

    def check(self) -> None:
        """Cross-field rules; ValueError names the field."""
        if not 1 <= self.threshold <= len(self.peers) + 1:
            raise ValueError(f"threshold must be 1..{len(self.peers) + 1} (peers + this authority), got {self.threshold}")
        if self.epoch_seconds < 10:
            raise ValueError("epoch_seconds must be at least 10")
        if not 0 <= self.lead < self.epoch_seconds:
            raise ValueError("freeze_lead must be 0..epoch_seconds-1")
        if self.round_seconds < 1 or self.sync_delay < 0 or self.sync_delay >= self.round_seconds:
            raise ValueError("need round_seconds >= 1 and 0 <= sync_delay < round_seconds")
        keys = [p.public_key for p in self.peers]
        if len(set(keys)) != len(keys):
            raise ValueError("peers lists the same public key twice")


def parse_public_key(text: str) -> bytes:
    """A 32-byte Ed25519 public key from base64; ValueError saying what is wrong."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public key is not valid base64") from None
    if len(key) != 32:
        raise ValueError(f"public key must be 32 bytes, got {len(key)}")
    return key


def load_authority_config(path: str | os.PathLike[str]) -> AuthorityConfig:
    """Read and validate an authority's TOML config; ConfigError naming the file and key."""
    table = load_toml(path)
    base = Path(path).resolve().parent
    test_mode = table.bool("test_mode", default=False)
    production = not test_mode
    name = table.str("name", check=lambda v: None if _NAME.fullmatch(v) else "must be 1-63 characters of a-z, 0-9 and '-'")
    data_dir = table.path_value("data_dir", base=base, default=".")
    key_file = table.path_value("key_file", base=data_dir, default="identity.key")
    listen = table.addresses("listen", production=production, listen=True, default=[])
    tor = tor_settings_from_table(table.table("tor")) if table.has("tor") else None
    i2p = i2p_settings_from_table(table.table("i2p")) if table.has("i2p") else None
    if not listen and tor is None and i2p is None:
        raise table.error("listen", "configure a transport: [tor] or [i2p] (or listen = [\"tcp://...\"] in test mode)")
    if not listen and not any(t is not None and t.serve for t in (tor, i2p)):
        raise table.error("tor", "no transport serves: set serve = true in [tor] or [i2p] (nodes connect to the authority)")
    peers = []
    for peer in table.tables("peers"):
        address = peer.address("address", production=production)
        key = peer.public_key("public_key")
        peers.append(PeerAuthority(address, key))
    threshold = table.int("threshold", default=len(peers) // 2 + 1, minimum=1, maximum=len(peers) + 1)
    epoch_seconds = table.int("epoch_seconds", default=DEFAULT_EPOCH_SECONDS, minimum=10)
    freeze_lead = table.int("freeze_lead", default=None, minimum=0, maximum=epoch_seconds - 1)
    round_seconds = table.int("round_seconds", default=DEFAULT_ROUND_SECONDS, minimum=1)
    sync_delay = table.int("sync_delay", default=DEFAULT_SYNC_DELAY, minimum=0, maximum=round_seconds - 1)
    gossip_seconds = table.int("gossip_seconds", default=DEFAULT_GOSSIP_SECONDS, minimum=1)
    bootstrap_nodes = table.int("bootstrap_nodes", default=0, minimum=0)
    table.finish()
    config = AuthorityConfig(
        name=name,
        data_dir=data_dir,
        key_file=key_file,
        listen=tuple(listen),
        peers=tuple(peers),
        threshold=threshold,
        epoch_seconds=epoch_seconds,
        test_mode=test_mode,
        freeze_lead=freeze_lead,
        round_seconds=round_seconds,
        sync_delay=sync_delay,
        gossip_seconds=gossip_seconds,
        bootstrap_nodes=bootstrap_nodes,
        tor=tor,
        i2p=i2p,
        config_path=Path(path),
    )
    try:
        config.check()
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


# --------------------------------------------------------------------------- schedule (pure)


def build_points(epoch: int, epoch_seconds: int, lead: int, round_seconds: int) -> Iterator[int]:
    """The wall-clock cutoffs at which every authority tries to build ``epoch``'s consensus.

    The first lies ``lead`` seconds before the epoch starts; then one every ``round_seconds``
    until the epoch ends. All authorities derive the same points from the same settings.
    """
    first = pki.epoch_start(epoch, epoch_seconds) - lead
    end = pki.epoch_start(epoch + 1, epoch_seconds)
    point = first
    while point < end:
        yield point
        point += round_seconds


def next_build_point(epoch: int, epoch_seconds: int, lead: int, round_seconds: int, after: float) -> int | None:
    """The first build point of ``epoch`` at or after ``after`` (None once the epoch is over)."""
    first = pki.epoch_start(epoch, epoch_seconds) - lead
    end = pki.epoch_start(epoch + 1, epoch_seconds)
    if after <= first:
        return first
    point = first + math.ceil((after - first) / round_seconds) * round_seconds
    return point if point < end else None


# --------------------------------------------------------------------------- store


class AuthorityStore:
    """Descriptors, documents and signatures per epoch, in SQLite (WAL)."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.db = sqlite_utils.Database(self._conn)
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db["descriptors"].create(
                {"epoch": int, "identity_key": str, "digest": str, "body": str, "learned_at": float},
                pk=("epoch", "digest"),
                if_not_exists=True,
            )
            self.db["consensus"].create(
                {"epoch": int, "digest": str, "document": str, "built_at": float},
                pk="epoch",
                if_not_exists=True,
            )
            self.db["signatures"].create(
                {"epoch": int, "authority_id": str, "digest": str, "signature": str},
                pk=("epoch", "authority_id"),
                if_not_exists=True,
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open authority store {path}: {exc}") from exc

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def add_descriptor(self, descriptor: pki.NodeDescriptor, learned_at: float) -> bool:
        """Store a verified descriptor; False if it was already known."""
        body = pki.canonical_json(descriptor.to_dict())
        digest = _sha256_hex(body)
        with self._write():
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO descriptors (epoch, identity_key, digest, body, learned_at) VALUES (?,?,?,?,?)",
                (descriptor.epoch, _b64(descriptor.identity_key), digest, body.decode(), learned_at),
            )
        return cursor.rowcount == 1

    def count_descriptors(self, epoch: int, identity_key: bytes | None = None) -> int:
        """How many descriptors are stored for an epoch (of one identity if given)."""
        if identity_key is None:
            row = self._conn.execute("SELECT COUNT(*) FROM descriptors WHERE epoch=?", (epoch,)).fetchone()
        else:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM descriptors WHERE epoch=? AND identity_key=?", (epoch, _b64(identity_key))
            ).fetchone()
        return int(row[0])

    def has_descriptor(self, descriptor: pki.NodeDescriptor) -> bool:
        """Whether this exact descriptor is stored."""
        digest = _sha256_hex(pki.canonical_json(descriptor.to_dict()))
        row = self._conn.execute(
            "SELECT 1 FROM descriptors WHERE epoch=? AND digest=?", (descriptor.epoch, digest)
        ).fetchone()
        return row is not None

    def descriptor_dicts(self, epoch: int, before: float | None = None) -> list[dict]:
        """Stored descriptors of an epoch as JSON objects (learned before ``before`` if given)."""
        if before is None:
            rows = self._conn.execute("SELECT body FROM descriptors WHERE epoch=? ORDER BY digest", (epoch,))
        else:
            rows = self._conn.execute(
                "SELECT body FROM descriptors WHERE epoch=? AND learned_at<? ORDER BY digest", (epoch, before)
            )
        return [json.loads(row[0]) for row in rows]

    def descriptors(self, epoch: int, before: float | None = None) -> list[pki.NodeDescriptor]:
        """Stored descriptors as objects (they were verified on the way in)."""
        return [_descriptor_from_stored(d) for d in self.descriptor_dicts(epoch, before)]

    def put_consensus(self, consensus: pki.Consensus, built_at: float) -> None:
        """Record the document this authority signs for an epoch (only once per epoch)."""
        document = pki.canonical_json(consensus.to_dict()).decode()
        with self._write():
            self._conn.execute(
                "INSERT OR IGNORE INTO consensus (epoch, digest, document, built_at) VALUES (?,?,?,?)",
                (consensus.epoch, consensus.digest().hex(), document, built_at),
            )

    def consensus(self, epoch: int) -> tuple[dict, str] | None:
        """The stored document of an epoch and its hex digest, or None."""
        row = self._conn.execute("SELECT document, digest FROM consensus WHERE epoch=?", (epoch,)).fetchone()
        return (json.loads(row[0]), row[1]) if row else None

    def built_epochs(self) -> list[int]:
        """Epochs with a document."""
        return [r[0] for r in self._conn.execute("SELECT epoch FROM consensus ORDER BY epoch")]

    def put_signature(self, epoch: int, aid: str, digest: str, signature: bytes) -> None:
        """Record a verified signature over the epoch's document."""
        with self._write():
            self._conn.execute(
                "INSERT OR REPLACE INTO signatures (epoch, authority_id, digest, signature) VALUES (?,?,?,?)",
                (epoch, aid, digest, _b64(signature)),
            )

    def signatures(self, epoch: int, digest: str) -> dict[str, str]:
        """Signatures over the given digest: authority id → base64."""
        rows = self._conn.execute(
            "SELECT authority_id, signature FROM signatures WHERE epoch=? AND digest=?", (epoch, digest)
        )
        return {aid: sig for aid, sig in rows}

    def epochs(self) -> list[int]:
        """Epochs with any stored state."""
        rows = self._conn.execute(
            "SELECT epoch FROM descriptors UNION SELECT epoch FROM consensus ORDER BY epoch"
        )
        return [r[0] for r in rows]

    def purge_before(self, epoch: int) -> None:
        """Forget every epoch older than ``epoch``."""
        with self._write():
            for table in ("descriptors", "consensus", "signatures"):
                self._conn.execute(f"DELETE FROM {table} WHERE epoch<?", (epoch,))

    def _write(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, translating SQLite errors into StoreError."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"authority store: cannot begin a write: {exc}") from exc

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.Error as error:
                self._conn.execute("ROLLBACK")
                raise StoreError(f"authority store: write failed: {error}") from error
        self._conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"authority store: write failed: {exc}") from exc


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _descriptor_from_stored(data: dict) -> pki.NodeDescriptor:
    return pki.NodeDescriptor(
        name=data["name"],
        role=data["role"],
        layer=data["layer"],
        epoch=data["epoch"],
        identity_key=base64.b64decode(data["identity_key"]),
        sphinx_key=base64.b64decode(data["sphinx_key"]),
        addresses=tuple(data["addresses"]),
        signature=base64.b64decode(data["signature"]),
    )


# --------------------------------------------------------------------------- requests


class _BadRequest(Exception):
    """A request the authority refuses; becomes an error reply."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _int_field(request: Mapping, key: str) -> int:
    value = request.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _BadRequest("bad_request", f"{key!r} must be a non-negative integer")
    return value


def error_reply(reason: str, message: str) -> dict:
    """The CONTROL reply for a refused request."""
    return {"type": "error", "reason": reason, "message": message}


@dataclass
class _PeerState:
    up: bool | None = None
    last_ok: float | None = None
    last_error: str = ""


class Authority:
    """One directory authority: serves requests, builds and signs, gathers peers' signatures.

    ``router`` reaches peers (and listens unless ``listen=False``). ``identity`` defaults to the
    key in ``config.key_file``. :meth:`run` serves until cancelled.
    """

    def __init__(
        self,
        config: AuthorityConfig,
        router: Router,
        *,
        identity: IdentityKey | None = None,
        wall_clock: Callable[[], float] = time.time,
        write_status: bool = True,
    ) -> None:
        config.check()
        self.config = config
        self.router = router
        self.identity = identity if identity is not None else _load_key(config.key_file)
        self.authority_id = pki.authority_id(self.identity.public)
        self.wall_clock = wall_clock
        self.write_status = write_status
        self.addresses: list[str] = []
        self.store: AuthorityStore | None = None
        self.peers: dict[str, _PeerState] = {p.address: _PeerState() for p in config.peers}
        self._tried: dict[int, float] = {}  # epoch -> last build point tried

    # ----------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Open the store, listen, and serve until cancelled; ``task_status`` gets the addresses."""
        self.store = AuthorityStore(self.config.data_dir / DATABASE_FILE)
        try:
            async with anyio.create_task_group() as tg:
                self.addresses = await self.router.listen(self.handle)
                log.info("authority %s serving on %s", self.config.name, ", ".join(self.addresses))
                tg.start_soon(self._build_loop)
                tg.start_soon(self._signature_loop)
                tg.start_soon(self._gossip_loop)
                if self.write_status:
                    tg.start_soon(self._status_loop)
                task_status.started(self.addresses)
        finally:
            if self.write_status:
                self._write_status(running=False)
            store, self.store = self.store, None
            store.close()

    def now(self) -> float:
        """Wall-clock Unix seconds (injected)."""
        return self.wall_clock()

    def current_epoch(self) -> int:
        """The epoch containing now."""
        return pki.epoch_at(self.now(), self.config.epoch_seconds)

    # ----------------------------------------------------------------- serving

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one connection: HELLO, one request, one reply."""
        framed = FramedStream(stream, max_control_bytes=MAX_DIRECTORY_CONTROL_BYTES)
        try:
            with anyio.fail_after(SERVE_TIMEOUT):
                await framed.expect_hello()
                await framed.hello(Role.AUTHORITY)
                frame = await framed.receive()
        except (TimeoutError, WireError) as exc:
            log.info("authority %s: dropped a connection: %s", self.config.name, type(exc).__name__)
            return
        if not isinstance(frame, Control):
            return
        reply = self.answer(frame.message)
        with anyio.move_on_after(SERVE_TIMEOUT):
            try:
                await framed.send(Control(reply))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the client left before its answer; nothing to do

    def answer(self, request: Mapping) -> dict:
        """The reply to one CONTROL request (sans-IO apart from the store)."""
        kind = request.get("type")
        try:
            if self.store is None:
                raise _BadRequest("unavailable", "authority is shutting down")
            if kind == "upload_descriptor":
                return self._upload(request)
            if kind == "get_consensus":
                return self._get_consensus(request)
            if kind == "get_descriptors":
                return self._get_descriptors(request)
            if kind == "get_signature":
                return self._get_signature(request)
            raise _BadRequest("unknown_request", f"unknown request type {kind!r}")
        except _BadRequest as exc:
            return error_reply(exc.reason, str(exc))
        except DirectoryError as exc:
            return error_reply(exc.reason, str(exc))
        except StoreError as exc:
            log.error("authority %s: %s", self.config.name, exc)
            return error_reply("internal", "authority store failure")

    def _check_epoch(self, epoch: int) -> None:
        current = self.current_epoch()
        if epoch < current:
            raise _BadRequest("stale", f"epoch {epoch} is over; the current epoch is {current}")
        if epoch > current + 1:
            raise _BadRequest("future", f"epoch {epoch} is too far ahead; the current epoch is {current}")

    def _upload(self, request: Mapping) -> dict:
        assert self.store is not None
        descriptor = pki.descriptor_from_dict(request.get("descriptor"), production=self.config.production)
        self._check_epoch(descriptor.epoch)
        if self.store.consensus(descriptor.epoch) is not None:
            if self.store.has_descriptor(descriptor):
                return {"type": "accepted", "epoch": descriptor.epoch}
            raise _BadRequest(
                "too_late",
                f"the consensus for epoch {descriptor.epoch} is already built; upload for epoch {descriptor.epoch + 1}",
            )
        if self.store.count_descriptors(descriptor.epoch, descriptor.identity_key) >= MAX_DESCRIPTORS_PER_NODE:
            if not self.store.has_descriptor(descriptor):
                raise _BadRequest("too_many", f"{descriptor.name!r} uploaded too many descriptors for this epoch")
        if self.store.count_descriptors(descriptor.epoch) >= MAX_DESCRIPTORS_PER_EPOCH:
            raise _BadRequest("full", f"epoch {descriptor.epoch} has the maximum number of descriptors")
        # Stored descriptors learned before a build point's cutoff go into that epoch's
        # document; "accepted" means stored, and the consensus says whether it made it.
        if self.store.add_descriptor(descriptor, self.now()):
            log.info("authority %s: descriptor of %s for epoch %d", self.config.name, descriptor.name, descriptor.epoch)
        return {"type": "accepted", "epoch": descriptor.epoch}

    def _get_consensus(self, request: Mapping) -> dict:
        assert self.store is not None
        epoch = _int_field(request, "epoch")
        stored = self.store.consensus(epoch)
        if stored is None:
            raise _BadRequest("not_ready", f"no consensus for epoch {epoch} yet")
        document, digest = stored
        return {
            "type": "consensus",
            "epoch": epoch,
            "document": document,
            "signatures": self.store.signatures(epoch, digest),
        }

    def _get_descriptors(self, request: Mapping) -> dict:
        assert self.store is not None
        epoch = _int_field(request, "epoch")
        before = request.get("before")
        if before is not None and (not isinstance(before, (int, float)) or isinstance(before, bool)):
            raise _BadRequest("bad_request", "'before' must be a number")
        return {"type": "descriptors", "epoch": epoch, "descriptors": self.store.descriptor_dicts(epoch, before)}

    def _get_signature(self, request: Mapping) -> dict:
        assert self.store is not None
        epoch = _int_field(request, "epoch")
        digest = request.get("digest")
        if not isinstance(digest, str):
            raise _BadRequest("bad_request", "'digest' must be a hex string")
        stored = self.store.consensus(epoch)
        if stored is None:
            raise _BadRequest("not_ready", f"no consensus for epoch {epoch} yet")
        if stored[1] != digest:
            raise _BadRequest("digest_mismatch", f"this authority signed epoch {epoch} with digest {stored[1][:16]}")
        signature = self.store.signatures(epoch, digest).get(self.authority_id)
        if signature is None:  # pragma: no cover - the own signature is stored with the document
            raise _BadRequest("not_ready", "not signed yet")
        return {"type": "signature", "epoch": epoch, "digest": digest, "signature": signature}

    # ----------------------------------------------------------------- talking to peers

    async def _ask(self, peer: PeerAuthority, request: dict) -> dict:
        """One request to a peer; DirectoryError(reason='unreachable') if it cannot be asked."""
        state = self.peers[peer.address]
        try:
            with anyio.fail_after(REQUEST_TIMEOUT):
                stream = await self.router.connect(peer.address)
                async with stream:
                    framed = FramedStream(stream, max_control_bytes=MAX_DIRECTORY_CONTROL_BYTES)
                    await framed.hello(Role.AUTHORITY)
                    await framed.expect_hello()
                    reply = await framed.request(request)
        except (TimeoutError, AnonmailError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            state.up, state.last_error = False, type(exc).__name__
            raise DirectoryError(f"authority {peer.address} unreachable: {type(exc).__name__}", reason="unreachable") from None
        state.up, state.last_ok, state.last_error = True, self.now(), ""
        return reply

    async def _pull_descriptors(self, peer: PeerAuthority, epoch: int, before: float | None) -> list[pki.NodeDescriptor]:
        """A peer's descriptors of an epoch, each verified; invalid ones are skipped and logged."""
        request: dict = {"type": "get_descriptors", "epoch": epoch}
        if before is not None:
            request["before"] = before
        reply = await self._ask(peer, request)
        items = reply.get("descriptors") if reply.get("type") == "descriptors" else None
        if not isinstance(items, list):
            raise DirectoryError(f"authority {peer.address} answered {reply.get('type')!r} to get_descriptors", reason="bad_reply")
        found = []
        for item in items[:MAX_DESCRIPTORS_PER_EPOCH]:
            try:
                descriptor = pki.descriptor_from_dict(item, production=self.config.production)
            except DirectoryError as exc:
                log.warning("authority %s: peer %s sent a bad descriptor: %s", self.config.name, peer.address, exc.reason)
                continue
            if descriptor.epoch == epoch:
                found.append(descriptor)
        return found

    async def _gather(self, func: Callable, *args: object) -> dict[str, object]:
        """Run ``func(peer, *args)`` for every peer at once; map address → result or DirectoryError."""
        results: dict[str, object] = {}

        async def one(peer: PeerAuthority) -> None:
            try:
                results[peer.address] = await func(peer, *args)
            except DirectoryError as exc:
                results[peer.address] = exc

        async with anyio.create_task_group() as tg:
            for peer in self.config.peers:
                tg.start_soon(one, peer)
        return results

    # ----------------------------------------------------------------- building

    async def _build_loop(self) -> None:
        """Try each build point of the current and the next epoch until a document is signed."""
        cfg = self.config
        while True:
            now = self.now()
            current = pki.epoch_at(now, cfg.epoch_seconds)
            assert self.store is not None
            self.store.purge_before(current - 1)
            built = set(self.store.built_epochs())
            due: list[tuple[int, int]] = []
            for epoch in (current, current + 1):
                if epoch in built:
                    continue
                # The latest point whose sync time has just passed (a late wake-up still
                # counts), else the next one; never a point tried already.
                late = now - cfg.sync_delay - cfg.round_seconds / 2
                after = max(late, self._tried.get(epoch, -math.inf) + 0.5)
                point = next_build_point(epoch, cfg.epoch_seconds, cfg.lead, cfg.round_seconds, after)
                if point is not None:
                    due.append((point + cfg.sync_delay, epoch))
            wake = min(due)[0] if due else pki.epoch_start(current + 1, cfg.epoch_seconds)
            if wake > now:
                await anyio.sleep(wake - now)
                continue
            for start, epoch in sorted(due):
                if start <= now:
                    point = start - cfg.sync_delay
                    self._tried[epoch] = point
                    await self._build_round(epoch, point)

    async def _build_round(self, epoch: int, point: float) -> None:
        """One build attempt at a cutoff: adopt an agreed document, or sync, build and sign."""
        assert self.store is not None
        if await self._adopt(epoch):
            return
        own = self.store.descriptors(epoch, before=point)
        pulled = await self._gather(self._pull_descriptors, epoch, point)
        union = list(own)
        learned = self.now()
        for address, result in pulled.items():
            if isinstance(result, DirectoryError):
                log.info("authority %s: no descriptors from %s: %s", self.config.name, address, result.reason)
                continue
            for descriptor in result:  # type: ignore[attr-defined]
                union.append(descriptor)
                self.store.add_descriptor(descriptor, learned)
        if self.store is None or self.store.consensus(epoch) is not None:
            return
        if not union:
            return
        if (
            self.config.bootstrap_nodes
            and self.store.consensus(epoch - 1) is None
            and len({d.identity_key for d in union}) < self.config.bootstrap_nodes
        ):
            return
        consensus = pki.build_consensus(epoch, self.config.epoch_seconds, union)
        self._sign_and_store(consensus)
        log.info(
            "authority %s: built epoch %d with %d nodes, digest %s",
            self.config.name, epoch, len(consensus.nodes), consensus.digest().hex()[:16],
        )

    def _sign_and_store(self, consensus: pki.Consensus) -> None:
        assert self.store is not None
        signature = pki.sign_consensus(consensus, self.identity)
        self.store.put_consensus(consensus, self.now())
        self.store.put_signature(consensus.epoch, self.authority_id, consensus.digest().hex(), signature)

    async def _adopt(self, epoch: int) -> bool:
        """Take a peer's document that already has ``threshold`` signatures of pinned authorities."""
        if not self.config.peers:
            return False
        peer_keys = [p.public_key for p in self.config.peers]
        needed = min(self.config.threshold, len(peer_keys))
        results = await self._gather(self._ask, {"type": "get_consensus", "epoch": epoch})
        for address, reply in results.items():
            if not isinstance(reply, dict) or reply.get("type") != "consensus":
                continue
            signatures = reply.get("signatures")
            if not isinstance(signatures, dict):
                continue
            try:
                consensus = pki.verify_consensus(
                    reply.get("document"), signatures, authorities=peer_keys, threshold=needed,
                    now=self.now(), production=self.config.production,
                )
            except DirectoryError:
                continue
            if consensus.epoch != epoch or self.store is None or self.store.consensus(epoch) is not None:
                continue
            self._sign_and_store(consensus)
            self._record_signatures(consensus, signatures)
            log.info("authority %s: adopted epoch %d from %s", self.config.name, epoch, address)
            return True
        return False

    def _record_signatures(self, consensus: pki.Consensus, signatures: Mapping[str, object]) -> None:
        """Keep every valid peer signature over our document."""
        assert self.store is not None
        digest = consensus.digest().hex()
        for peer in self.config.peers:
            encoded = signatures.get(peer.authority_id)
            if not isinstance(encoded, str):
                continue
            if pki.consensus_signature_valid(consensus, peer.public_key, encoded):
                self.store.put_signature(consensus.epoch, peer.authority_id, digest, base64.b64decode(encoded))

    # ----------------------------------------------------------------- signatures

    async def _signature_loop(self) -> None:
        """Poll peers for their signatures over each document we signed, until we hold all."""
        while True:
            assert self.store is not None
            for epoch in self.store.built_epochs():
                if epoch < self.current_epoch():
                    continue
                await self._collect_signatures(epoch)
            await anyio.sleep(SIGNATURE_POLL_SECONDS)

    async def _collect_signatures(self, epoch: int) -> None:
        assert self.store is not None
        stored = self.store.consensus(epoch)
        if stored is None:
            return
        document, digest = stored
        have = self.store.signatures(epoch, digest)
        missing = [p for p in self.config.peers if p.authority_id not in have]
        if not missing:
            return
        consensus = pki.consensus_from_dict(document, production=self.config.production)

        async def one(peer: PeerAuthority) -> None:
            try:
                reply = await self._ask(peer, {"type": "get_signature", "epoch": epoch, "digest": digest})
            except DirectoryError:
                return
            if reply.get("type") == "error":
                if reply.get("reason") == "digest_mismatch":
                    log.warning("authority %s: %s signed a different document for epoch %d", self.config.name, peer.address, epoch)
                return
            encoded = reply.get("signature")
            if isinstance(encoded, str) and pki.consensus_signature_valid(consensus, peer.public_key, encoded):
                if self.store is not None:
                    self.store.put_signature(epoch, peer.authority_id, digest, base64.b64decode(encoded))
            else:
                log.warning("authority %s: %s sent a signature that does not verify", self.config.name, peer.address)

        async with anyio.create_task_group() as tg:
            for peer in missing:
                tg.start_soon(one, peer)

    # ----------------------------------------------------------------- gossip

    async def _gossip_loop(self) -> None:
        """Copy peers' descriptors of epochs not built yet, so one authority's loss loses none."""
        while True:
            await anyio.sleep(self.config.gossip_seconds)
            assert self.store is not None
            current = self.current_epoch()
            for epoch in (current, current + 1):
                if self.store.consensus(epoch) is not None:
                    continue
                results = await self._gather(self._pull_descriptors, epoch, None)
                learned = self.now()
                for result in results.values():
                    if isinstance(result, list) and self.store is not None:
                        for descriptor in result:
                            self.store.add_descriptor(descriptor, learned)

    # ----------------------------------------------------------------- status

    def status(self, *, running: bool = True) -> dict:
        """What ``mixnode authority status`` shows (no secrets)."""
        epochs: dict[str, dict] = {}
        if self.store is not None:
            for epoch in self.store.epochs():
                stored = self.store.consensus(epoch)
                entry: dict = {"descriptors": self.store.count_descriptors(epoch), "consensus": stored is not None}
                if stored is not None:
                    entry["digest"] = stored[1][:16]
                    entry["signatures"] = len(self.store.signatures(epoch, stored[1]))
                epochs[str(epoch)] = entry
        return {
            "running": running,
            "pid": os.getpid(),
            "name": self.config.name,
            "authority_id": self.authority_id,
            "updated_at": self.now(),
            "epoch": self.current_epoch(),
            "epoch_seconds": self.config.epoch_seconds,
            "threshold": self.config.threshold,
            "addresses": self.addresses,
            "epochs": epochs,
            "peers": {
                address: {"up": state.up, "last_ok": state.last_ok, "last_error": state.last_error}
                for address, state in self.peers.items()
            },
        }

    async def _status_loop(self) -> None:
        while True:
            self._write_status(running=True)
            await anyio.sleep(STATUS_SECONDS)

    def _write_status(self, *, running: bool) -> None:
        try:
            write_status(self.config.data_dir, self.status(running=running))
        except OSError as exc:
            log.warning("authority %s: cannot write its status file: %s", self.config.name, exc.strerror)


def _load_key(path: Path) -> IdentityKey:
    """The authority's identity key: a 0600 file holding the 32-byte seed."""
    data = read_key_file(path)
    try:
        return IdentityKey.from_seed(data)
    except AnonmailError:
        raise ConfigError(f"{path}: not an authority identity key (expected a 32-byte seed)") from None


def peers_from_pairs(pairs: Sequence[tuple[str, bytes]]) -> tuple[PeerAuthority, ...]:
    """Peer list from (address, public key) pairs."""
    return tuple(PeerAuthority(a, k) for a, k in pairs)
