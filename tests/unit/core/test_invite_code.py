"""Invitation codes and the SPAKE2 session state machine (anonmail.core.invite), without I/O."""

from __future__ import annotations

import random

import nacl.secret
import pytest

from anonmail.core import strictjson
from anonmail.core.address import Address
from anonmail.core.invite import (
    MISMATCH_MESSAGE,
    PAYLOAD_BYTES,
    SEALED_BYTES,
    Introduction,
    InviteCode,
    InviteSession,
    Side,
    State,
    decode_introduction,
    encode_introduction,
    new_code,
    parse_code,
    wordlist,
)
from anonmail.core.keys import IdentityKey, certify_encryption_key
from anonmail.errors import InviteError

pytestmark = pytest.mark.unit

NOW = 1_800_000_000


def intro_of(identity: IdentityKey, provider: str = "alpha", **ext) -> Introduction:
    cert = certify_encryption_key(identity, bytes(range(32)), not_before=NOW - 10, lifetime_s=3600)
    return Introduction(str(Address.for_key(identity.public, provider)), identity.public, (cert.to_bytes(),), ext)


def pair(code: InviteCode, other: InviteCode | None = None):
    a, b = InviteSession(Side.INVITER, code), InviteSession(Side.ACCEPTOR, other or code)
    ma, mb = a.start(), b.start()
    a.receive_pake(mb)
    b.receive_pake(ma)
    return a, b


CODE = InviteCode(4127, ("orbit", "velvet"), "alpha")


def test_the_word_list_is_bip39_and_four_letters_name_a_word():
    words = wordlist()
    assert len(words) == 2048 and words[0] == "abandon" and words[-1] == "zoo"
    assert len({w[:4] for w in words}) == 2048


def test_codes_print_and_parse_back():
    rng = random.Random(1)
    for _ in range(50):
        code = new_code(rng.randint(1, 9999), "beta-2", rng.randrange)
        assert parse_code(str(code)) == code
    assert str(CODE) == "4127-orbit-velvet@alpha"


def test_parse_code_is_forgiving_about_case_spaces_and_prefixes_only():
    assert parse_code("  4127 ORBI Velv @alpha ".replace(" @", "@")) == CODE
    assert parse_code("4127-orbit-velvet", "alpha") == CODE  # the acceptor's own provider by default


@pytest.mark.parametrize("text, fragment", [
    ("4127-orbit@alpha", "a number and two words"),
    ("4127-orbit-velvet-x@alpha", "a number and two words"),
    ("0-orbit-velvet@alpha", "number from 1 to 9999"),
    ("10000-orbit-velvet@alpha", "number from 1 to 9999"),
    ("٣-orbit-velvet@alpha", "number from 1"),
    ("12-orb-velvet@alpha", "first word 'orb'"),
    ("12-orbit-qqqqq@alpha", "second word"),
    ("12-orbit-velvet@al_pha", "not a provider name"),
    ("12-orbit-velvet@-bad", "not a provider name"),
    ("12-orbit-velvet", "'@provider'"),
    ("x" * 500, "looks like"),
])
def test_bad_codes_say_what_is_wrong(text, fragment):
    with pytest.raises(InviteError, match=fragment) as info:
        parse_code(text)
    assert info.value.reason == "bad_code"


def test_parse_code_refuses_non_text():
    with pytest.raises(InviteError):
        parse_code(b"4127-orbit-velvet@alpha")


def test_both_sides_exchange_introductions_and_finish():
    alice, bob = IdentityKey.generate(), IdentityKey.generate()
    a, b = pair(CODE)
    assert a.state is b.state is State.KEYED
    sealed_b = b.seal(intro_of(bob, "beta"), bob)
    assert len(sealed_b) == SEALED_BYTES
    got = a.open_peer(sealed_b, now=NOW)
    assert got.identity == bob.public and got.address.endswith("@beta")
    got_a = b.open_peer(a.seal(intro_of(alice), alice), now=NOW)
    assert got_a.identity == alice.public
    assert a.state is b.state is State.DONE


def test_a_wrong_code_is_a_mismatch_and_fails_the_session():
    bob = IdentityKey.generate()
    a, b = pair(CODE, InviteCode(4127, ("orbit", "vendor"), "alpha"))
    with pytest.raises(InviteError) as info:
        a.open_peer(b.seal(intro_of(bob), bob), now=NOW)
    assert info.value.reason == "mismatch" and str(info.value) == MISMATCH_MESSAGE
    assert a.state is State.FAILED
    with pytest.raises(InviteError, match="failed"):
        a.seal(intro_of(bob), bob)


def test_the_provider_in_the_code_is_part_of_the_password():
    bob = IdentityKey.generate()
    a, b = pair(CODE, InviteCode(4127, ("orbit", "velvet"), "beta"))
    with pytest.raises(InviteError, match="did not match"):
        a.open_peer(b.seal(intro_of(bob), bob), now=NOW)


def test_a_relayed_introduction_does_not_verify():
    """Attack: whoever holds the code passes on someone else's keys; the proof is bound to this exchange."""
    bob, mallory = IdentityKey.generate(), IdentityKey.generate()
    # Mallory seals Bob's introduction in another exchange with the same code (Bob's real proof).
    _, b1 = pair(CODE)
    a2, b2 = pair(CODE)
    plain = nacl.secret.SecretBox(b1._keys[0]).decrypt(b1.seal(intro_of(bob), bob))
    relayed = bytes(nacl.secret.SecretBox(b2._keys[0]).encrypt(bytes(plain)))
    with pytest.raises(InviteError) as info:
        a2.open_peer(relayed, now=NOW)
    assert info.value.reason == "bad_message" and "does not check out" in str(info.value)
    # Nor may Mallory sign an introduction that names Bob.
    a3, _ = pair(CODE)
    with pytest.raises(ValueError):
        pair(CODE)[1].seal(intro_of(bob), mallory)
    assert a3.state is State.KEYED


def test_certificates_of_another_identity_or_expired_are_refused():
    bob, carol = IdentityKey.generate(), IdentityKey.generate()
    a, b = pair(CODE)
    foreign = certify_encryption_key(carol, bytes(range(32)), not_before=NOW - 10, lifetime_s=3600).to_bytes()
    wrong = Introduction(str(Address.for_key(bob.public, "alpha")), bob.public, (foreign,))
    with pytest.raises(InviteError, match="not its sender's"):
        a.open_peer(b.seal(wrong, bob), now=NOW)
    a, b = pair(CODE)
    with pytest.raises(InviteError, match="does not check out"):
        a.open_peer(b.seal(intro_of(bob), bob), now=NOW + 7200)


def test_steps_out_of_order_are_refused():
    session = InviteSession(Side.INVITER, CODE)
    with pytest.raises(InviteError) as info:
        session.receive_pake(bytes(33))
    assert info.value.reason == "bad_state"
    session.start()
    with pytest.raises(InviteError, match="needs keyed"):
        session.open_peer(bytes(SEALED_BYTES), now=NOW)
    with pytest.raises(InviteError, match="wrong size"):
        session.receive_pake(b"B" + bytes(31))
    assert session.state is State.FAILED


def test_a_bad_pake_message_fails_cleanly():
    session = InviteSession(Side.INVITER, CODE)
    session.start()
    with pytest.raises(InviteError) as info:
        session.receive_pake(b"A" + bytes(32))  # the inviter's own side byte: a reflection
    assert info.value.reason == "bad_message" and session.state is State.FAILED


def test_introductions_are_padded_and_parsed_strictly():
    bob = IdentityKey.generate()
    plain = encode_introduction(intro_of(bob, prekeys="AAAA"), bytes(64))
    assert len(plain) == PAYLOAD_BYTES
    intro, proof = decode_introduction(plain)
    assert intro.ext == {"prekeys": "AAAA"} and proof == bytes(64)
    length = int.from_bytes(plain[:2], "big")
    doc = strictjson.loads(plain[2:2 + length])

    def redo(**changes):
        body = strictjson.dumps({**doc, **changes})
        return len(body).to_bytes(2, "big") + body + bytes(PAYLOAD_BYTES - 2 - len(body))

    for bad, fragment in [(redo(v=2), "version 2"), (redo(v=True), "version"), (redo(certs=[]), "1..4"),
                          (redo(extra=1), "fields"), (redo(address="nope"), "address is not valid"),
                          (redo(identity="AAAA"), "32 bytes"), (redo(ext={"a": 1}), "ext"),
                          (plain[:-1] + b"\x01", "padding"), (plain[:100], "bytes, got 100")]:
        with pytest.raises(InviteError, match=fragment):
            decode_introduction(bad)
