"""Targets for the directory: descriptors, consensus documents, the directory protocol and the
authority's answers."""

from __future__ import annotations

import tempfile
from pathlib import Path

from nacl.public import PrivateKey

from anonmail.core import dirproto, pki, strictjson, wire
from anonmail.core.keys import IdentityKey
from anonmail.errors import DirectoryError, JSONError, WireError
from fuzz.registry import target
from mixnode.authority.admission import AdmissionList
from mixnode.authority.answers import Answers
from mixnode.authority.config import AuthorityConfig
from mixnode.authority.store import AuthorityStore

_EPOCH_SECONDS = 3600
_NOW = 1_800_000_000.0
_EPOCH = pki.epoch_at(_NOW, _EPOCH_SECONDS)
_AUTHORITY = IdentityKey.from_seed(bytes([9]) * 32)


def _descriptor(i: int, role: str, layer: int) -> pki.NodeDescriptor:
    return pki.sign_descriptor(IdentityKey.from_seed(bytes([20 + i]) * 32), name=f"node-{i}", role=role, layer=layer,
                               epoch=_EPOCH, sphinx_key=bytes(PrivateKey(bytes([i + 1]) * 32).public_key), addresses=[f"mem://node-{i}"],
                               production=False)


_NODES = [_descriptor(0, "provider", 0)] + [_descriptor(i, "mix", i) for i in (1, 2, 3)]


def _descriptor_seeds():
    return [strictjson.dumps(d.to_dict()) for d in _NODES[:2]]


@target("descriptor", allowed=(JSONError, DirectoryError), seeds=_descriptor_seeds)
def descriptor(data: bytes) -> None:
    """A descriptor that parses and verifies round-trips through its dict form unchanged."""
    parsed = pki.descriptor_from_dict(strictjson.loads(data), production=False)
    assert pki.descriptor_from_dict(strictjson.loads(strictjson.dumps(parsed.to_dict())), production=False) == parsed


def _consensus_seeds():
    consensus = pki.build_consensus(_EPOCH, _EPOCH_SECONDS, _NODES)
    signature = pki.sign_consensus(consensus, _AUTHORITY)
    import base64

    doc = {"document": consensus.to_dict(),
           "signatures": {pki.authority_id(_AUTHORITY.public): base64.b64encode(signature).decode()}}
    return [strictjson.dumps(doc)]


@target("consensus", allowed=(JSONError, DirectoryError), seeds=_consensus_seeds, max_len=16384)
def consensus(data: bytes) -> None:
    """A consensus is accepted only with the pinned signature, for a current epoch, in canonical form."""
    doc = strictjson.loads(data)
    if not isinstance(doc, dict) or set(doc) != {"document", "signatures"}:
        return
    accepted = pki.verify_consensus(doc["document"], doc["signatures"], authorities=[_AUTHORITY.public],
                                    threshold=1, now=_NOW, production=False)
    assert accepted.epoch in (_EPOCH, _EPOCH + 1)
    assert pki.consensus_from_dict(accepted.to_dict(), production=False) == accepted


_answers: tuple[Answers, AuthorityStore] | None = None


class _NoVotes:
    """A ballot with no build round under way (vote requests are refused as not ready)."""

    def own_vote(self, epoch: int, point: int):
        raise DirectoryError("no vote yet", reason="not_ready")

    def held_votes(self, epoch: int, point: int):
        raise DirectoryError("no votes yet", reason="not_ready")


def _the_authority() -> tuple[Answers, AuthorityStore]:
    global _answers
    if _answers is None:
        folder = Path(tempfile.mkdtemp(prefix="anonmail-fuzz-authority-"))
        config = AuthorityConfig(name="auth-0", data_dir=folder, key_file=folder / "identity.key",
                                 listen=("mem://auth-0",), test_mode=True, epoch_seconds=_EPOCH_SECONDS)
        store = AuthorityStore(folder / "authority.sqlite")
        store.put_consensus(pki.build_consensus(_EPOCH, _EPOCH_SECONDS, _NODES[1:]), _NOW)
        _answers = (Answers(config, pki.authority_id(_AUTHORITY.public), lambda: _NOW, AdmissionList, _NoVotes()),
                    store)
    return _answers


def _request_seeds():
    requests = [{"type": "upload_descriptor", "descriptor": _NODES[0].to_dict()},
                {"type": "get_consensus", "epoch": _EPOCH}, {"type": "get_descriptors", "epoch": _EPOCH, "before": 1.5},
                {"type": "get_signature", "epoch": _EPOCH, "digest": "00"}]
    return [wire.encode_frame(wire.Control(r)) for r in requests]


@target("authority_request", allowed=(WireError,), seeds=_request_seeds, max_len=16384)
def authority_request(data: bytes) -> None:
    """Whatever request arrives in a CONTROL frame, the authority answers with one valid frame."""
    frames = wire.FrameDecoder(max_control_bytes=wire.MAX_DIRECTORY_CONTROL_BYTES).feed(data)
    for frame in frames:
        if isinstance(frame, wire.Control):
            answers, store = _the_authority()
            before = answers.faults.total
            reply = answers.answer(store, frame.message)
            assert answers.faults.total == before, answers.faults.as_dict()  # nothing failed unexpectedly
            wire.encode_frame(wire.Control(reply), max_control_bytes=wire.MAX_DIRECTORY_CONTROL_BYTES)
            assert reply["type"] != "error" or dirproto.parse_reply(reply, dirproto.Accepted).reason


def _dirproto_request_seeds():
    return [strictjson.dumps(dirproto.encode(r)) for r in (
        dirproto.UploadDescriptor(_NODES[0].to_dict()), dirproto.GetConsensus(_EPOCH),
        dirproto.GetDescriptors(_EPOCH, 12.5), dirproto.GetDescriptors(_EPOCH, None),
        dirproto.GetSignature(_EPOCH, "ab" * 32))]


@target("dirproto_request", allowed=(JSONError, DirectoryError), seeds=_dirproto_request_seeds)
def dirproto_request(data: bytes) -> None:
    """A request that parses encodes back to a CONTROL object that parses to the same request."""
    request = dirproto.parse_request(strictjson.loads(data))
    again = strictjson.loads(strictjson.dumps(dirproto.encode(request)))
    assert dirproto.parse_request(again) == request


_REPLY_TYPES = (dirproto.Accepted, dirproto.ConsensusReply, dirproto.DescriptorsReply, dirproto.SignatureReply)


def _dirproto_reply_seeds():
    replies = [dirproto.Accepted(_EPOCH), dirproto.DescriptorsReply(_EPOCH, (_NODES[0].to_dict(),)),
               dirproto.SignatureReply(_EPOCH, "ab" * 32, "c2ln"), dirproto.Refused("stale", "epoch over")]
    return [bytes([i]) + strictjson.dumps(dirproto.encode(r)) for i, r in enumerate(replies)]


@target("dirproto_reply", allowed=(JSONError, DirectoryError), seeds=_dirproto_reply_seeds)
def dirproto_reply(data: bytes) -> None:
    """A reply of the expected type (or a refusal) round-trips through its CONTROL object."""
    if not data:
        return
    expect = _REPLY_TYPES[data[0] % len(_REPLY_TYPES)]
    reply = dirproto.parse_reply(strictjson.loads(data[1:]), expect)
    assert isinstance(reply, (expect, dirproto.Refused))
    again = strictjson.loads(strictjson.dumps(dirproto.encode(reply)))
    assert dirproto.parse_reply(again, expect) == reply
