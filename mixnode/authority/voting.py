"""How authorities agree on an epoch's document when one of them lies or is silent (pure).

For each build point ``t`` of epoch E, every authority makes one **vote** and signs it: the
nodes it admits (:mod:`mixnode.authority.admission`) and the descriptors of E it learned before
``t``. An authority makes at most one vote per (E, t) and keeps it, so an honest authority never
signs two. The rounds (see ``docs/mixnode.md``)::

    t + sync_delay              phase 1: fetch each peer's own vote       (get_vote {epoch, point})
    t + sync_delay + vote       freeze the votes fetched directly
                                phase 2: fetch each peer's frozen votes   (get_votes {epoch, point})
    t + sync_delay + 2 * vote   tally, sign, then gather signatures as before

In phase 2 a peer's copy of its *own* vote is ignored (it could show each authority another
one); copies of other authorities' votes are checked against their pinned keys. An authority
with two different signed votes for one (E, t) equivocated: all of its votes are dropped. Two
honest authorities that reach each other in phase 2 therefore hold the same votes, and
:func:`tally` turns the same votes into the same document.

:func:`tally` admits a node when a majority of *all* authorities admit it with the same name,
role and layer, and lists it when a majority of all authorities' votes carry a descriptor of it
that matches that admission. One bad authority of three can neither add a node nor, by
silence or equivocation, stop the other two from agreeing.

Each vote also carries the authority's traffic parameters (``[params]`` of its config); the
document publishes the per-field median of the counted votes
(:func:`anonmail.core.params.median_params`), so an authority with other values is outvoted
instead of splitting the consensus, and with an honest majority every value lies between
honest ones.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from anonmail.core import pki
from anonmail.core.keys import IdentityKey, verify_signature
from anonmail.core.params import DEFAULT_PARAMS, NetworkParams, median_params, params_from_dict
from anonmail.errors import DirectoryError, SignatureError
from mixnode.authority.admission import Admission, AdmissionList, check_descriptor

__all__ = ["Vote", "make_vote", "vote_from_dict", "tally", "Tally"]

log = logging.getLogger("mixnode.authority")

_VOTE_CONTEXT = b"anonmail vote v1"
VOTE_VERSION = 2  # 2: votes carry ``params``


@dataclass(frozen=True)
class Vote:
    """One authority's signed view of an epoch at a build point."""

    epoch: int
    point: int
    authority_key: bytes
    admitted: tuple[Admission, ...]
    descriptors: tuple[Mapping, ...]  # canonical descriptor objects, verified when made or parsed
    signature: bytes = b""
    params: NetworkParams = DEFAULT_PARAMS

    def body(self) -> dict:
        """The signed part."""
        return {
            "version": VOTE_VERSION,
            "epoch": self.epoch,
            "point": self.point,
            "authority": base64.b64encode(self.authority_key).decode(),
            "admitted": [a.to_dict() for a in self.admitted],
            "descriptors": [dict(d) for d in self.descriptors],
            "params": self.params.to_dict(),
        }

    def to_dict(self) -> dict:
        """As sent in ``vote`` and ``votes`` replies."""
        return {**self.body(), "signature": base64.b64encode(self.signature).decode()}

    def digest(self) -> bytes:
        """Equal digests mean the same vote."""
        return pki.canonical_json(self.to_dict())


def make_vote(identity: IdentityKey, epoch: int, point: int, admissions: AdmissionList,
              descriptors: Iterable[pki.NodeDescriptor], params: NetworkParams = DEFAULT_PARAMS) -> Vote:
    """Sign this authority's vote (descriptors sorted by canonical encoding)."""
    items = sorted((d.to_dict() for d in descriptors), key=pki.canonical_json)
    unsigned = Vote(epoch, point, identity.public, tuple(sorted(admissions.entries)), tuple(items), params=params)
    signature = identity.sign(pki.canonical_json(unsigned.body()), context=_VOTE_CONTEXT)
    return Vote(epoch, point, identity.public, unsigned.admitted, unsigned.descriptors, signature, params)


def vote_from_dict(data: object, *, epoch: int, point: int, keys: Sequence[bytes], production: bool) -> Vote:
    """Parse and verify a vote by one of ``keys`` for (epoch, point); DirectoryError(reason='bad_vote')."""
    def bad(why: str) -> DirectoryError:
        return DirectoryError(f"vote: {why}", reason="bad_vote")

    fields = {"version", "epoch", "point", "authority", "admitted", "descriptors", "signature", "params"}
    if not isinstance(data, Mapping) or set(data) != fields or data["version"] != VOTE_VERSION:
        raise bad(f"must be an object with exactly {sorted(fields)} (version {VOTE_VERSION})")
    if data["epoch"] != epoch or data["point"] != point:
        raise bad(f"is for epoch {data['epoch']!r} point {data['point']!r}, asked for {epoch} point {point}")
    try:
        key = base64.b64decode(data["authority"], validate=True)
        signature = base64.b64decode(data["signature"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise bad("authority and signature must be base64") from None
    if key not in keys:
        raise bad("is signed by no pinned authority")
    if not isinstance(data["admitted"], list) or not isinstance(data["descriptors"], list):
        raise bad("admitted and descriptors must be lists")
    try:
        admitted = tuple(Admission.from_dict(a) for a in data["admitted"])
    except (ValueError, DirectoryError) as exc:
        raise bad(f"admission: {exc}") from None
    try:
        params = params_from_dict(data["params"])
    except DirectoryError as exc:
        raise bad(str(exc)) from None
    vote = Vote(epoch, point, key, admitted, tuple(data["descriptors"]), signature, params)
    try:
        verify_signature(key, pki.canonical_json(vote.body()), signature, context=_VOTE_CONTEXT)
    except SignatureError:
        raise bad("signature does not verify") from None
    for item in vote.descriptors:  # only descriptors their nodes signed, and for this epoch
        descriptor = pki.descriptor_from_dict(item, production=production)
        if descriptor.epoch != epoch:
            raise bad(f"lists a descriptor of epoch {descriptor.epoch}")
    return vote


@dataclass(frozen=True)
class Tally:
    """The document the votes make, and who equivocated (their votes were dropped)."""

    consensus: pki.Consensus
    equivocated: tuple[bytes, ...]
    votes: int


def tally(votes: Iterable[Vote], *, authorities: int, epoch: int, epoch_seconds: int, production: bool) -> Tally:
    """The deterministic document for ``epoch`` from every vote held (see the module overview)."""
    by_author: dict[bytes, dict[bytes, Vote]] = {}
    for vote in votes:
        by_author.setdefault(vote.authority_key, {})[vote.digest()] = vote
    equivocated = tuple(sorted(k for k, v in by_author.items() if len(v) > 1))
    counted = [next(iter(v.values())) for k, v in sorted(by_author.items()) if len(v) == 1]
    need = pki.majority(authorities)
    admitted_count = Counter(a for vote in counted for a in set(vote.admitted))
    admitted = [a for a, n in admitted_count.items() if n >= need]
    # An honest majority never admits one name or key twice; drop both sides of any clash anyway.
    names = Counter(a.name for a in admitted)
    keys = Counter(a.identity_key for a in admitted)
    admissions = AdmissionList(tuple(sorted(a for a in admitted if names[a.name] == 1 and keys[a.identity_key] == 1)))
    listed: Counter[bytes] = Counter()
    candidates: dict[bytes, list[pki.NodeDescriptor]] = {}
    for vote in counted:
        seen: set[bytes] = set()
        for item in vote.descriptors:
            descriptor = pki.descriptor_from_dict(item, production=production)
            try:
                check_descriptor(admissions, descriptor)
            except DirectoryError:
                continue
            candidates.setdefault(descriptor.identity_key, []).append(descriptor)
            seen.add(descriptor.identity_key)
        listed.update(seen)
    chosen = [min(candidates[k], key=lambda d: pki.canonical_json(d.to_dict())) for k, n in listed.items() if n >= need]
    params = median_params([vote.params for vote in counted])
    return Tally(pki.build_consensus(epoch, epoch_seconds, chosen, params), equivocated, len(counted))
