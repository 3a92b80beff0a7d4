"""Targets for the end-to-end session layer: prekey bundles and uploads, initial headers, ratchet messages."""

from __future__ import annotations

from anonmail.core import ratchet as R
from anonmail.core.keys import IdentityKey
from anonmail.core.prekeys import (
    InitialHeader,
    PrekeyBundle,
    PrekeyUpload,
    make_one_time_prekey,
    make_pq_prekey,
    make_signed_prekey,
)
from anonmail.core.sessions import PeerSessions
from anonmail.errors import SessionError
from fuzz.registry import target

# Fixed keys, so every run sees the same users and the committed seeds open.
_ALICE = IdentityKey.from_seed(bytes([4]) * 32)
_BOB = IdentityKey.from_seed(bytes([5]) * 32)
_SPK_SECRET, _SPK = make_signed_prekey(_BOB, 1, not_after=2**40, randbytes=lambda n: bytes([6]) * n)
_PQ_SECRET, _PQ = make_pq_prekey(_BOB, 2, not_after=2**40, seed=bytes([9]) * 64)
_OPK_SECRET, _OPK = make_one_time_prekey(3, randbytes=lambda n: bytes([7]) * n)
_UPLOAD = PrekeyUpload(_BOB.public, _SPK, _PQ, (_OPK,))


class _Secrets:
    def signed_secret(self, key_id: int) -> bytes | None:
        return _SPK_SECRET if key_id == 1 else None

    def pq_secret(self, key_id: int) -> bytes | None:
        return _PQ_SECRET if key_id == 2 else None

    def one_time_secret(self, key_id: int) -> bytes | None:
        return _OPK_SECRET if key_id == 3 else None


def _bundle_seeds():
    return [_UPLOAD.bundle(_OPK).to_bytes(), _UPLOAD.bundle(None).to_bytes()]


@target("prekey_bundle", allowed=(SessionError,), seeds=_bundle_seeds, max_len=2048)
def prekey_bundle(data: bytes) -> None:
    """A bundle that parses encodes to the same bytes; verifying it raises nothing but SessionError."""
    bundle = PrekeyBundle.from_bytes(data)
    assert bundle.to_bytes() == data
    bundle.verify(_BOB.public, now=0)


@target("prekey_upload", allowed=(SessionError,), seeds=lambda: [_UPLOAD.to_bytes()], max_len=4096)
def prekey_upload(data: bytes) -> None:
    """An upload that parses encodes to the same bytes and has distinct one-time prekey ids."""
    upload = PrekeyUpload.from_bytes(data)
    assert upload.to_bytes() == data
    assert len({k.key_id for k in upload.one_time}) == len(upload.one_time)


def _message_seeds():
    sessions = PeerSessions(_ALICE.public, _BOB.public)
    sessions.start(_ALICE, _UPLOAD.bundle(_OPK), randbytes=lambda n: bytes([8]) * n)
    first = sessions.encrypt(b"hello", b"id")
    return [first, first[18 + 1170 :], InitialHeader.from_bytes(first[18 : 18 + 1170]).to_bytes()]


@target("ratchet_message", allowed=(SessionError,), seeds=_message_seeds, max_len=2048)
def ratchet_message(data: bytes) -> None:
    """An end-to-end message from a stranger either opens at bob's or changes nothing; headers round-trip."""
    sessions = PeerSessions(_BOB.public, _ALICE.public)
    try:
        header = R.parse_header(data)
        assert header.to_bytes() == data[: R.HEADER_BYTES]
    except SessionError:
        pass
    try:
        InitialHeader.from_bytes(data[18 : 18 + 1170])
    except SessionError:
        pass
    before = sessions.to_bytes()
    try:
        opened = sessions.decrypt(_BOB, data, b"id", now=0, prekeys=_Secrets())
    except SessionError:
        assert sessions.to_bytes() == before
        return
    assert opened.started and len(sessions.sessions) == 1
