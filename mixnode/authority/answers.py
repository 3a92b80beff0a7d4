"""What an authority answers to each directory request (:mod:`anonmail.core.dirproto`).

Sans-IO apart from the store: :meth:`Answers.answer` takes one CONTROL object and returns the
CONTROL reply. Refusals are ``error`` replies with a stable reason: ``unknown_request``,
``bad_request``, ``malformed``, ``bad_descriptor``, ``stale``, ``future``, ``too_late``,
``too_many``, ``full``, ``not_ready``, ``digest_mismatch``, ``unavailable``, ``internal``, and
for descriptors their admission does not cover ``not_admitted``, ``wrong_name``, ``wrong_role``,
``wrong_layer`` (:mod:`mixnode.authority.admission`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from anonmail.core import dirproto, pki
from anonmail.daemon.containment import FaultCounter
from anonmail.errors import DirectoryError, StoreError
from mixnode.authority.admission import AdmissionList, check_descriptor
from mixnode.authority.config import AuthorityConfig
from mixnode.authority.store import AuthorityStore
from mixnode.authority.voting import Vote

__all__ = ["MAX_DESCRIPTORS_PER_EPOCH", "MAX_DESCRIPTORS_PER_NODE", "Ballot", "Answers"]

log = logging.getLogger("mixnode.authority")

#: More descriptors than this for one epoch are refused (keeps the document under the frame limit).
MAX_DESCRIPTORS_PER_EPOCH = 4096
#: Distinct descriptors one identity may upload per epoch.
MAX_DESCRIPTORS_PER_NODE = 4


def _refuse(reason: str, message: str) -> DirectoryError:
    return DirectoryError(message, reason=reason)


class Ballot(Protocol):
    """Where the votes of the current build rounds live (the server); both raise ``not_ready``."""

    def own_vote(self, epoch: int, point: int) -> Vote:
        """This authority's one vote at (epoch, point)."""

    def held_votes(self, epoch: int, point: int) -> list[Vote]:
        """The votes fetched directly at (epoch, point), once frozen."""


class Answers:
    """Turns requests into replies over one authority's store, admission list, votes and clock."""

    def __init__(self, config: AuthorityConfig, authority_id: str, now: Callable[[], float],
                 admissions: Callable[[], AdmissionList], ballot: Ballot) -> None:
        self.config = config
        self.authority_id = authority_id
        self.now = now
        self.admissions = admissions
        self.ballot = ballot
        #: Requests dropped after an unexpected error, by reason (each reason logged once).
        self.faults = FaultCounter(log, f"authority {config.name}")

    def current_epoch(self) -> int:
        """The epoch containing now."""
        return pki.epoch_at(self.now(), self.config.epoch_seconds)

    def answer(self, store: AuthorityStore | None, message: object) -> dict:
        """The CONTROL reply to one CONTROL request (an ``error`` reply for anything refused)."""
        try:
            request = dirproto.parse_request(message)
            if store is None:
                raise _refuse("unavailable", "authority is shutting down")
            if isinstance(request, dirproto.UploadDescriptor):
                reply: dirproto.Reply = self._upload(store, request)
            elif isinstance(request, dirproto.GetConsensus):
                reply = self._get_consensus(store, request)
            elif isinstance(request, dirproto.GetVote):
                reply = dirproto.VoteReply(self.ballot.own_vote(request.epoch, request.point).to_dict())
            elif isinstance(request, dirproto.GetVotes):
                votes = self.ballot.held_votes(request.epoch, request.point)
                reply = dirproto.VotesReply(tuple(v.to_dict() for v in votes))
            elif isinstance(request, dirproto.GetDescriptors):
                reply = dirproto.DescriptorsReply(request.epoch, tuple(store.descriptor_dicts(request.epoch, request.before)))
            else:
                reply = self._get_signature(store, request)
        except DirectoryError as exc:
            reply = dirproto.Refused(exc.reason, str(exc))
        except StoreError as exc:
            log.error("authority %s: %s", self.config.name, exc)
            reply = dirproto.Refused("internal", "authority store failure")
        except Exception as exc:  # containment: one request never stops the authority
            self.faults.record(exc, "request")
            reply = dirproto.Refused("internal", "the authority could not handle this request")
        return dirproto.encode(reply)

    def _check_epoch(self, epoch: int) -> None:
        current = self.current_epoch()
        if epoch < current:
            raise _refuse("stale", f"epoch {epoch} is over; the current epoch is {current}")
        if epoch > current + 1:
            raise _refuse("future", f"epoch {epoch} is too far ahead; the current epoch is {current}")

    def _upload(self, store: AuthorityStore, request: dirproto.UploadDescriptor) -> dirproto.Accepted:
        descriptor = pki.descriptor_from_dict(request.descriptor, production=self.config.production)
        try:
            check_descriptor(self.admissions(), descriptor)
        except DirectoryError as exc:
            log.info("authority %s: refused a descriptor: %s", self.config.name, exc.reason)
            raise
        self._check_epoch(descriptor.epoch)
        if store.consensus(descriptor.epoch) is not None:
            if store.has_descriptor(descriptor):
                return dirproto.Accepted(descriptor.epoch)
            raise _refuse(
                "too_late",
                f"the consensus for epoch {descriptor.epoch} is already built; upload for epoch {descriptor.epoch + 1}",
            )
        if store.count_descriptors(descriptor.epoch, descriptor.identity_key) >= MAX_DESCRIPTORS_PER_NODE:
            if not store.has_descriptor(descriptor):
                raise _refuse("too_many", f"{descriptor.name!r} uploaded too many descriptors for this epoch")
        if store.count_descriptors(descriptor.epoch) >= MAX_DESCRIPTORS_PER_EPOCH:
            raise _refuse("full", f"epoch {descriptor.epoch} has the maximum number of descriptors")
        # Stored descriptors learned before a build point's cutoff go into that epoch's
        # document; "accepted" means stored, and the consensus says whether it made it.
        if store.add_descriptor(descriptor, self.now()):
            log.info("authority %s: descriptor of %s for epoch %d", self.config.name, descriptor.name, descriptor.epoch)
        return dirproto.Accepted(descriptor.epoch)

    def _get_consensus(self, store: AuthorityStore, request: dirproto.GetConsensus) -> dirproto.ConsensusReply:
        stored = store.consensus(request.epoch)
        if stored is None:
            raise _refuse("not_ready", f"no consensus for epoch {request.epoch} yet")
        document, digest = stored
        return dirproto.ConsensusReply(request.epoch, document, store.signatures(request.epoch, digest))

    def _get_signature(self, store: AuthorityStore, request: dirproto.GetSignature) -> dirproto.SignatureReply:
        epoch, digest = request.epoch, request.digest
        stored = store.consensus(epoch)
        if stored is None:
            raise _refuse("not_ready", f"no consensus for epoch {epoch} yet")
        if stored[1] != digest:
            raise _refuse("digest_mismatch", f"this authority signed epoch {epoch} with digest {stored[1][:16]}")
        signature = store.signatures(epoch, digest).get(self.authority_id)
        if signature is None:  # pragma: no cover - the own signature is stored with the document
            raise _refuse("not_ready", "not signed yet")
        return dirproto.SignatureReply(epoch, digest, signature)
