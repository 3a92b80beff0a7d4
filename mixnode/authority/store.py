"""The authority's durable state: descriptors, documents and signatures per epoch (SQLite, WAL).

The store is small and its statements take well under a millisecond, so the authority runs
them inline on the event loop (this keeps virtual-time tests deterministic). The file is opened
by :func:`anonmail.daemon.sqlite.connect` with ``synchronous=NORMAL``: everything here can be
learnt again from peers and nodes, so a commit need not survive a power cut. Every SQLite failure
on a write is a :class:`~anonmail.errors.StoreError`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import sqlite_utils

from anonmail.core import pki
from anonmail.daemon.sqlite import connect, transaction, translated

__all__ = ["DATABASE_FILE", "AuthorityStore"]

DATABASE_FILE = "authority.sqlite"
_STORE = "authority store"


class AuthorityStore:
    """Descriptors, documents and signatures per epoch, in SQLite (WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Descriptors and documents are public: overwriting purged ones buys nothing.
        self._conn = connect(path, store=_STORE, durable=False, secure_delete=False)
        with translated(_STORE, path, "create the tables"):
            self.db = sqlite_utils.Database(self._conn)
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

    def _write(self):
        return transaction(self._conn, store=_STORE, path=self.path)


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
        link_key=base64.b64decode(data["link_key"]) if "link_key" in data else None,
    )

