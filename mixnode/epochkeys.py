"""A node's Sphinx keys, one per epoch: made ahead, tried around boundaries, deleted after.

Each epoch's secret lives in a 0600 file ``sphinx-<epoch>.key`` in the node's data directory
(so a restart keeps serving packets built for the published key). The current and next
epoch's keys are made when needed; keys of finished epochs are deleted (forward secrecy).
Near an epoch boundary (within ``min(EPOCH_GRACE_MAX, epoch_seconds / 10)``) the neighbouring
epoch's key is also tried, so packets built just before a rotation still unwrap. The previous
epoch's key is tried longer: for as long as agents keep using the last consensus when no new one
arrives (the directory client's grace period, :data:`~anonmail.clients.directory.GRACE_FRACTION`
of an epoch), so their packets are not dropped while they wait for the next document. The cost:
in that window a packet no key opens takes two key agreements instead of one.

The file methods (:meth:`EpochKeys.load`, :meth:`EpochKeys.forget_before`) block: call them
from a worker thread. :meth:`EpochKeys.candidates` is pure.
"""

from __future__ import annotations

from pathlib import Path

from nacl.bindings import crypto_scalarmult_base

from anonmail.clients.directory import GRACE_FRACTION
from anonmail.core import sphinx
from anonmail.keyfiles import read_key_file, write_key_file
from anonmail.core.pki import epoch_at, epoch_start

__all__ = ["EpochKeys", "EPOCH_GRACE_MAX"]

#: Seconds around an epoch boundary during which the neighbouring epoch's key is also tried.
EPOCH_GRACE_MAX = 60.0


class EpochKeys:
    """The Sphinx key pairs of the epochs a node serves, backed by key files in ``data_dir``."""

    def __init__(self, data_dir: Path, epoch_seconds: int, previous_grace: float | None = None) -> None:
        self.data_dir = data_dir
        self.epoch_seconds = epoch_seconds
        #: Seconds into an epoch during which the previous epoch's key is still tried.
        self.previous_grace = epoch_seconds * GRACE_FRACTION if previous_grace is None else previous_grace
        self._secrets: dict[int, bytes] = {}
        self._publics: dict[int, bytes] = {}

    def path(self, epoch: int) -> Path:
        """Where the secret of ``epoch`` is kept."""
        return self.data_dir / f"sphinx-{epoch}.key"

    def load(self, epoch: int, create: bool) -> None:
        """(Blocking.) Load the key of ``epoch``, or make it when ``create`` (current and next epoch)."""
        if epoch in self._secrets:
            return
        path = self.path(epoch)
        if path.exists():
            secret = read_key_file(path)
        elif create:
            secret, _ = sphinx.generate_node_keypair()
            write_key_file(path, secret)
        else:
            return
        self._secrets[epoch] = secret
        self._publics[epoch] = crypto_scalarmult_base(secret)

    def forget_before(self, epoch: int) -> list[int]:
        """(Blocking.) Delete the keys of epochs before ``epoch``, in memory and on disk; returns them."""
        gone = sorted(e for e in self._secrets if e < epoch)
        for old in gone:
            del self._secrets[old]
            self._publics.pop(old, None)
        for path in self.data_dir.glob("sphinx-*.key"):
            try:
                if int(path.stem.split("-", 1)[1]) < epoch:
                    path.unlink()
            except (ValueError, OSError):
                continue
        return gone

    def has(self, epoch: int) -> bool:
        """Whether the secret of ``epoch`` is held (packets of that epoch can still unwrap)."""
        return epoch in self._secrets

    def public(self, epoch: int) -> bytes:
        """The public key of ``epoch`` (KeyError if it is not held)."""
        return self._publics[epoch]

    def publics(self) -> dict[int, bytes]:
        """Every held epoch's public key (they are published in descriptors anyway)."""
        return dict(sorted(self._publics.items()))

    def candidate_epochs(self, now: float) -> list[int]:
        """The epochs whose keys a packet arriving at ``now`` may be built for, most likely first."""
        seconds = self.epoch_seconds
        epoch = epoch_at(now, seconds)
        grace = min(EPOCH_GRACE_MAX, seconds / 10)
        candidates = [epoch]
        if now - epoch_start(epoch, seconds) < max(grace, self.previous_grace):
            candidates.append(epoch - 1)
        if epoch_start(epoch + 1, seconds) - now < grace:
            candidates.append(epoch + 1)
        return candidates

    def candidates(self, now: float) -> list[tuple[int, bytes]]:
        """(epoch, secret) pairs to try on a packet arriving at ``now``."""
        return [(e, self._secrets[e]) for e in self.candidate_epochs(now) if e in self._secrets]
