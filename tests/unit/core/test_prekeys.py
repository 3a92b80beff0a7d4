"""Prekey bundles and uploads: wire forms, signatures, lifetimes, and the PQXDH agreement at both ends."""

from __future__ import annotations

import pytest

from anonmail.core.keys import IdentityKey
from anonmail.core.prekeys import (
    INITIAL_HEADER_BYTES,
    MAX_ONE_TIME_UPLOAD,
    InitialHeader,
    PrekeyBundle,
    PrekeyUpload,
    initiate,
    make_one_time_prekey,
    make_pq_prekey,
    make_signed_prekey,
    respond,
)
from anonmail.errors import SessionError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def bob():
    identity = IdentityKey.generate()
    spk_secret, spk = make_signed_prekey(identity, 7, not_after=1000)
    pq_secret, pq = make_pq_prekey(identity, 8, not_after=1000)
    opk_secret, opk = make_one_time_prekey(9)
    return identity, PrekeyUpload(identity.public, spk, pq, (opk,)), (spk_secret, pq_secret, opk_secret)


def test_upload_and_bundle_roundtrip(bob) -> None:
    identity, upload, _ = bob
    assert PrekeyUpload.from_bytes(upload.to_bytes()) == upload
    for one_time in (upload.one_time[0], None):
        bundle = upload.bundle(one_time)
        again = PrekeyBundle.from_bytes(bundle.to_bytes())
        assert again == bundle
        again.verify(identity.public, now=999)


def test_bundle_signatures_lifetime_and_owner(bob) -> None:
    identity, upload, _ = bob
    bundle = upload.bundle(None)
    with pytest.raises(SessionError) as info:
        bundle.verify(identity.public, now=1000)
    assert info.value.reason == "expired"
    with pytest.raises(SessionError) as info:
        bundle.verify(IdentityKey.generate().public, now=0)
    assert info.value.reason == "signature"
    raw = bytearray(bundle.to_bytes())
    raw[33 + 12] ^= 1  # a bit of the signed prekey's public key
    try:
        tampered = PrekeyBundle.from_bytes(bytes(raw))
    except SessionError:
        return  # no longer a valid point: refused at parse
    with pytest.raises(SessionError) as info:
        tampered.verify(identity.public, now=0)
    assert info.value.reason == "signature"


def test_parsers_refuse_wrong_sizes_and_versions(bob) -> None:
    _identity, upload, _ = bob
    bundle = upload.bundle(upload.one_time[0]).to_bytes()
    for bad in (b"", bundle[:-1], bundle + b"\0", b"\x02" + bundle[1:], bundle[:-37] + b"\x02"):
        with pytest.raises(SessionError):
            PrekeyBundle.from_bytes(bad)
    raw = upload.to_bytes()
    for bad in (raw[:-1], raw + b"\0", raw[:-38] + (MAX_ONE_TIME_UPLOAD + 1).to_bytes(2, "big")):
        with pytest.raises(SessionError):
            PrekeyUpload.from_bytes(bad)
    twice = PrekeyUpload(upload.identity, upload.signed, upload.pq, upload.one_time * 2).to_bytes()
    with pytest.raises(SessionError):
        PrekeyUpload.from_bytes(twice)


def test_agreement_matches_and_needs_every_secret(bob) -> None:
    identity, upload, (spk, pq, opk) = bob
    alice = IdentityKey.generate()
    header, agreement = initiate(alice, upload.bundle(upload.one_time[0]))
    raw = header.to_bytes()
    assert len(raw) == INITIAL_HEADER_BYTES
    parsed = InitialHeader.from_bytes(raw)
    assert respond(identity, parsed, signed_secret=spk, pq_secret=pq, one_time_secret=opk) == agreement
    _, other_pq, _ = (None, make_pq_prekey(identity, 8, not_after=1000)[0], None)
    assert respond(identity, parsed, signed_secret=spk, pq_secret=other_pq, one_time_secret=opk) != agreement
    with pytest.raises(SessionError):
        respond(identity, parsed, signed_secret=spk, pq_secret=pq, one_time_secret=None)
    for bad in (raw[:-1], b"\x02" + raw[1:]):
        with pytest.raises(SessionError):
            InitialHeader.from_bytes(bad)
