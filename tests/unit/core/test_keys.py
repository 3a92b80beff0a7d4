"""Tests for anonmail.core.keys: signatures, certificates, rotation, sealing and key files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import nacl.pwhash.argon2id
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonmail.core import keys
from anonmail.core.keys import (
    EncryptionKey,
    EncryptionKeyCert,
    IdentityKey,
    certify_encryption_key,
    fingerprint,
    newest_valid,
    node_id,
    open_sealed,
    seal_secret,
    verify_signature,
)
from anonmail.keyfiles import load_identity, read_key_file, save_identity, write_key_file
from anonmail.errors import (
    AnonmailError,
    KeyError_,
    KeyExpiredError,
    KeyFileError,
    PassphraseError,
    SignatureError,
)

pytestmark = pytest.mark.unit

FAST = {
    "opslimit": nacl.pwhash.argon2id.OPSLIMIT_MIN,
    "memlimit": nacl.pwhash.argon2id.MEMLIMIT_MIN,
}
CTX = b"anonmail-test"
SEED_A = bytes(range(32))
SEED_B = bytes(range(1, 33))


@pytest.fixture
def ident() -> IdentityKey:
    return IdentityKey.from_seed(SEED_A)


# --- hashing and key objects -------------------------------------------------------------


def test_fingerprint_and_node_id_sizes_and_domain_separation(ident: IdentityKey) -> None:
    fpr = fingerprint(ident.public)
    nid = node_id(ident.public)
    assert len(fpr) == keys.FINGERPRINT_BYTES == 32
    assert len(nid) == 16
    assert ident.fingerprint == fpr
    assert fpr[:16] != nid
    assert fingerprint(IdentityKey.from_seed(SEED_B).public) != fpr


def test_fingerprint_rejects_wrong_size() -> None:
    with pytest.raises(KeyError_):
        fingerprint(b"\x00" * 31)


def test_identity_from_seed_is_deterministic_and_checks_size(ident: IdentityKey) -> None:
    again = IdentityKey.from_seed(ident.seed)
    assert again.public == ident.public
    assert again == ident
    assert len(ident.seed) == 32 and len(ident.public) == 32
    assert IdentityKey.generate().public != ident.public
    with pytest.raises(KeyError_):
        IdentityKey.from_seed(b"short")


def test_reprs_do_not_reveal_secrets(ident: IdentityKey) -> None:
    enc = EncryptionKey.from_secret(SEED_B)
    for obj, secret in ((ident, ident.seed), (enc, enc.secret)):
        text = repr(obj)
        assert secret.hex() not in text
        assert secret.hex()[:8] not in text


def test_encryption_key_roundtrip_and_size_check() -> None:
    enc = EncryptionKey.generate()
    assert EncryptionKey.from_secret(enc.secret).public == enc.public
    assert len(enc.public) == 32
    with pytest.raises(KeyError_):
        EncryptionKey.from_secret(b"\x01" * 33)


# --- signatures --------------------------------------------------------------------------


def test_sign_verify_roundtrip(ident: IdentityKey) -> None:
    sig = ident.sign(b"hello", context=CTX)
    assert len(sig) == 64
    verify_signature(ident.public, b"hello", sig, context=CTX)


def test_signature_is_domain_separated(ident: IdentityKey) -> None:
    # Prefix-shifting between context and message must not verify.
    sig = ident.sign(b"bc", context=b"a")
    with pytest.raises(SignatureError):
        verify_signature(ident.public, b"c", sig, context=b"ab")


@pytest.mark.parametrize(
    "change",
    ["message", "context", "key", "signature"],
)
def test_verify_rejects_any_change(ident: IdentityKey, change: str) -> None:
    message, context, public = b"hello", CTX, ident.public
    sig = ident.sign(message, context=context)
    if change == "message":
        message = b"hellO"
    elif change == "context":
        context = b"anonmail-other"
    elif change == "key":
        public = IdentityKey.from_seed(SEED_B).public
    else:
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    with pytest.raises(SignatureError):
        verify_signature(public, message, sig, context=context)


@pytest.mark.parametrize(
    ("public", "sig"),
    [(b"\x00" * 31, b"\x00" * 64), (b"\x00" * 32, b"\x00" * 63), (b"\xff" * 32, b"\xff" * 64)],
)
def test_verify_malformed_inputs_raise_signature_error(public: bytes, sig: bytes) -> None:
    with pytest.raises(SignatureError):
        verify_signature(public, b"m", sig, context=CTX)


def test_sign_rejects_bad_context(ident: IdentityKey) -> None:
    with pytest.raises(ValueError):
        ident.sign(b"m", context=b"")
    with pytest.raises(ValueError):
        ident.sign(b"m", context=b"x" * 256)


# --- certificates ------------------------------------------------------------------------


def make_cert(
    ident: IdentityKey, not_before: int = 1000, lifetime_s: int = 100
) -> EncryptionKeyCert:
    enc = EncryptionKey.generate()
    return certify_encryption_key(ident, enc.public, not_before=not_before, lifetime_s=lifetime_s)


def test_cert_roundtrip(ident: IdentityKey) -> None:
    cert = make_cert(ident)
    data = cert.to_bytes()
    assert len(data) == EncryptionKeyCert.CERT_BYTES
    again = EncryptionKeyCert.from_bytes(data)
    assert again == cert
    assert again.identity_public == ident.public
    again.verify(now=1000)
    again.verify(now=1099)


@pytest.mark.parametrize("now", [0, 999, 1100, 10**9])
def test_cert_outside_window_is_expired(ident: IdentityKey, now: int) -> None:
    cert = make_cert(ident)
    with pytest.raises(KeyExpiredError):
        cert.verify(now=now)


def test_every_tampered_cert_byte_is_rejected(ident: IdentityKey) -> None:
    data = make_cert(ident).to_bytes()
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises(SignatureError):
            EncryptionKeyCert.from_bytes(bytes(tampered)).verify(now=1050)


def test_cert_from_bytes_rejects_wrong_length_and_version(ident: IdentityKey) -> None:
    data = make_cert(ident).to_bytes()
    with pytest.raises(SignatureError):
        EncryptionKeyCert.from_bytes(data[:-1])
    with pytest.raises(SignatureError):
        EncryptionKeyCert.from_bytes(data + b"\x00")
    with pytest.raises(SignatureError):
        EncryptionKeyCert.from_bytes(b"\x02" + data[1:])


def test_certify_rejects_bad_lifetime(ident: IdentityKey) -> None:
    with pytest.raises(ValueError):
        certify_encryption_key(ident, b"\x01" * 32, not_before=0, lifetime_s=0)


def test_newest_valid_picks_latest_valid(ident: IdentityKey) -> None:
    old = make_cert(ident, not_before=0, lifetime_s=1000)
    mid = make_cert(ident, not_before=500, lifetime_s=1000)
    future = make_cert(ident, not_before=900, lifetime_s=1000)
    expired = make_cert(ident, not_before=600, lifetime_s=10)
    forged_src = make_cert(ident, not_before=700, lifetime_s=1000)
    forged = EncryptionKeyCert(
        forged_src.identity_public,
        forged_src.encryption_public,
        forged_src.not_before,
        forged_src.not_after,
        bytes(64),
    )
    certs = [old, future, expired, forged, mid]
    assert newest_valid(certs, now=800) is mid
    assert newest_valid(iter(certs), now=950) is future
    assert newest_valid(certs, now=100) is old


def test_newest_valid_raises_when_none_valid(ident: IdentityKey) -> None:
    certs = [make_cert(ident, not_before=0, lifetime_s=10)]
    with pytest.raises(KeyExpiredError, match="re-announce"):
        newest_valid(certs, now=50)
    with pytest.raises(KeyExpiredError, match="re-announce"):
        newest_valid([], now=50)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2 * EncryptionKeyCert.CERT_BYTES))
def test_cert_from_bytes_raises_only_anonmail_errors(data: bytes) -> None:
    try:
        cert = EncryptionKeyCert.from_bytes(data)
    except AnonmailError:
        return
    assert cert.to_bytes() == data
    try:
        cert.verify(now=0)
    except AnonmailError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=EncryptionKeyCert.CERT_BYTES, max_size=EncryptionKeyCert.CERT_BYTES))
def test_cert_of_right_size_raises_only_anonmail_errors(data: bytes) -> None:
    try:
        EncryptionKeyCert.from_bytes(data).verify(now=2**40)
    except AnonmailError:
        pass


# --- sealing -----------------------------------------------------------------------------


@pytest.mark.parametrize("passphrase", ["correct horse", b"raw \xff bytes", ""])
def test_seal_open_roundtrip(passphrase: str | bytes) -> None:
    blob = seal_secret(b"top secret", passphrase, **FAST)
    assert blob.startswith(keys.SEAL_MAGIC)
    assert b"top secret" not in blob
    assert open_sealed(blob, passphrase) == b"top secret"


def test_seal_is_randomized() -> None:
    assert seal_secret(b"s", "pw", **FAST) != seal_secret(b"s", "pw", **FAST)


def test_str_passphrase_is_nfc_normalized() -> None:
    blob = seal_secret(b"s", "caf\u00e9", **FAST)
    assert open_sealed(blob, "cafe\u0301") == b"s"


def test_wrong_passphrase() -> None:
    blob = seal_secret(b"s", "right", **FAST)
    with pytest.raises(PassphraseError, match="wrong passphrase, or the key file is damaged") as ei:
        open_sealed(blob, "wrong")
    assert "right" not in str(ei.value)


def test_altered_ciphertext_is_passphrase_error() -> None:
    blob = bytearray(seal_secret(b"s", "pw", **FAST))
    blob[-1] ^= 1
    with pytest.raises(PassphraseError):
        open_sealed(bytes(blob), "pw")


@pytest.mark.parametrize("cut", [0, 3, 8, 20, 36, 60, 75])
def test_truncated_blob_is_key_file_error(cut: int) -> None:
    blob = seal_secret(b"", "pw", **FAST)
    assert len(blob) == 76
    with pytest.raises(KeyFileError):
        open_sealed(blob[:cut], "pw")


def test_garbage_blob_is_key_file_error() -> None:
    with pytest.raises(KeyFileError, match="magic"):
        open_sealed(b"\x00" * 200, "pw")


@pytest.mark.parametrize(
    ("opslimit", "memlimit"),
    [(0, 8192), (2**32 - 1, 8192), (1, 2**63), (1, 0), (1, keys.SEAL_MEMLIMIT_MAX + 1)],
)
def test_absurd_limits_in_blob_are_refused(opslimit: int, memlimit: int) -> None:
    blob = seal_secret(b"s", "pw", **FAST)
    header = keys.SEAL_MAGIC + opslimit.to_bytes(4, "big") + memlimit.to_bytes(8, "big")
    with pytest.raises(KeyFileError, match="unreasonable"):
        open_sealed(header + blob[len(header) :], "pw")


def test_seal_refuses_out_of_range_limits() -> None:
    with pytest.raises(ValueError):
        seal_secret(b"s", "pw", opslimit=0, memlimit=FAST["memlimit"])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_open_sealed_arbitrary_bytes_raise_only_anonmail_errors(data: bytes) -> None:
    try:
        open_sealed(data, "pw")
    except AnonmailError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=120))
def test_open_sealed_near_valid_raise_only_anonmail_errors(tail: bytes) -> None:
    # Valid magic and cheap limits, arbitrary salt and box: must not escape the error tree.
    header = (
        keys.SEAL_MAGIC
        + FAST["opslimit"].to_bytes(4, "big")
        + FAST["memlimit"].to_bytes(8, "big")
    )
    with pytest.raises((KeyFileError, PassphraseError)):
        open_sealed(header + tail, "pw")


# --- key files ---------------------------------------------------------------------------


def test_write_key_file_is_0600_even_with_umask_0(tmp_path: Path) -> None:
    path = os.path.join(tmp_path, "id.key")
    old = os.umask(0)
    try:
        write_key_file(path, b"data")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_key_file(path) == b"data"
    assert os.listdir(tmp_path) == ["id.key"]


def test_write_key_file_refuses_overwrite(tmp_path: Path) -> None:
    path = os.path.join(tmp_path, "id.key")
    write_key_file(path, b"one")
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(path, b"two")
    assert read_key_file(path) == b"one"
    write_key_file(path, b"two", overwrite=True)
    assert read_key_file(path) == b"two"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["id.key"]


def test_write_key_file_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        write_key_file(os.path.join(tmp_path, "nope", "id.key"), b"x")


def test_read_key_file_missing_names_path(tmp_path: Path) -> None:
    path = os.path.join(tmp_path, "missing.key")
    with pytest.raises(KeyFileError, match="does not exist") as ei:
        read_key_file(path)
    assert path in str(ei.value)


def test_read_key_file_refuses_group_readable(tmp_path: Path) -> None:
    path = os.path.join(tmp_path, "open.key")
    with open(path, "wb") as f:
        f.write(b"secret-bytes")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600") as ei:
        read_key_file(path)
    assert "0644" in str(ei.value)
    assert path in str(ei.value)
    assert "secret-bytes" not in str(ei.value)


def test_save_load_identity_roundtrip(tmp_path: Path, ident: IdentityKey) -> None:
    path = os.path.join(tmp_path, "identity.key")
    save_identity(path, ident, "pass phrase", **FAST)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = load_identity(path, "pass phrase")
    assert loaded.public == ident.public
    with pytest.raises(PassphraseError) as ei:
        load_identity(path, "other")
    assert "pass phrase" not in str(ei.value)
    with pytest.raises(KeyFileError):
        save_identity(path, ident, "pass phrase", **FAST)


def test_load_identity_rejects_other_secret(tmp_path: Path) -> None:
    path = os.path.join(tmp_path, "enc.key")
    write_key_file(path, seal_secret(b"\x01" * 32, "pw", **FAST))
    with pytest.raises(KeyFileError, match="identity"):
        load_identity(path, "pw")


# ----------------------------------------------------------------------------- weak X25519 keys

_SMALL_ORDER_POINT = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


@pytest.mark.parametrize(
    "weak",
    [bytes(32), _SMALL_ORDER_POINT, (2**255 - 19).to_bytes(32, "little"), b"\xff" * 32],
    ids=["zero", "order8", "p", "high-bit"],
)
def test_attack_a_weak_encryption_key_is_refused_in_certificates_and_announcements(weak):
    """A certificate (and so a key announcement) carrying a small-order or non-canonical key never parses."""
    from anonmail.core.envelope import decode_envelope, encode_keys
    from anonmail.errors import FragmentError

    identity = IdentityKey.generate()
    good = keys.certify_encryption_key(identity, EncryptionKey.generate().public, not_before=0, lifetime_s=60)
    assert keys.check_x25519_public(good.encryption_public, "key") == good.encryption_public
    with pytest.raises(KeyError_):
        keys.certify_encryption_key(identity, weak, not_before=0, lifetime_s=60)
    forged = good.to_bytes()[:33] + weak + good.to_bytes()[65:]
    with pytest.raises(SignatureError, match="certificate encryption key"):
        EncryptionKeyCert.from_bytes(forged)
    announcement = encode_keys([good], sent_at=1).replace(
        base64.b64encode(good.to_bytes()), base64.b64encode(forged)
    )
    with pytest.raises(FragmentError):
        decode_envelope(announcement)
