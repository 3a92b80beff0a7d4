"""Fragmentation, end-to-end sealing, payload kinds and reassembly."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey, SealedBox

from anonmail.core import fragments as F
from anonmail.core import sphinx as S
from anonmail.core.address import Address
from anonmail.core.keys import EncryptionKey, IdentityKey
from anonmail.errors import FragmentError, MessageTooLargeError, ReassemblyError

pytestmark = pytest.mark.unit


class Party:
    def __init__(self, provider: str) -> None:
        self.identity = IdentityKey.generate()
        self.enc = EncryptionKey.generate()
        self.address = Address.for_key(self.identity.public, provider)


@pytest.fixture(scope="module")
def alice() -> Party:
    return Party("provider-a")


@pytest.fixture(scope="module")
def bob() -> Party:
    return Party("provider-b")


def _seal_all(message: bytes, alice: Party, bob: Party, message_id: bytes = b"i" * 16):
    return [
        F.seal_fragment(
            f,
            sender=alice.identity,
            sender_address=alice.address,
            recipient_address=bob.address,
            recipient_identity=bob.identity.public,
            recipient_key=bob.enc.public,
        )
        for f in F.split_message(message, message_id)
    ]


def _open(sealed: bytes, bob: Party) -> F.OpenedFragment:
    return F.open_fragment(sealed, recipient_keys=[bob.enc.secret], recipient_address=bob.address,
                           recipient=bob.identity)


def test_sizes_fit_one_packet():
    assert F.SEALED_FRAGMENT_BYTES + 1 + S.SURB_BYTES == S.PAYLOAD_BYTES
    assert F.FRAGMENT_DATA_BYTES > 3000
    assert F.MAX_MESSAGE_BYTES >= 1024 * 1024
    assert F.fragment_count(0) == 1
    assert F.fragment_count(F.FRAGMENT_DATA_BYTES) == 1
    assert F.fragment_count(F.FRAGMENT_DATA_BYTES + 1) == 2


@pytest.mark.parametrize("size", [0, 1, F.FRAGMENT_DATA_BYTES, F.FRAGMENT_DATA_BYTES + 1, 200 * 1024])
def test_round_trip_in_any_order_with_duplicates(alice, bob, size):
    rng = random.Random(size)
    message = rng.randbytes(size)
    sealed = _seal_all(message, alice, bob)
    assert {len(s) for s in sealed} == {F.SEALED_FRAGMENT_BYTES}
    order = sealed + rng.sample(sealed, min(3, len(sealed)))
    rng.shuffle(order)
    r = F.Reassembler()
    results = [r.add(_open(s, bob)) for s in order]
    complete = [m for m in results if m is not None]
    assert complete == [message]
    assert r.pending_bytes == 0
    assert r.duplicates == len(order) - len(sealed)


def test_sender_is_authenticated_inside_the_encryption(alice, bob):
    opened = _open(_seal_all(b"hello bob", alice, bob)[0], bob)
    assert opened.sender == alice.address
    assert opened.sender_identity == alice.identity.public
    assert opened.fragment.data == b"hello bob"


def test_only_the_recipient_can_open_and_it_is_bound_to_the_recipient(alice, bob):
    sealed = _seal_all(b"for bob only", alice, bob)[0]
    with pytest.raises(FragmentError, match="decrypt"):
        F.open_fragment(sealed, recipient_keys=[alice.enc.secret], recipient_address=alice.address,
                        recipient=alice.identity)
    # bob re-seals alice's authenticated plaintext to carol: carol's check fails (recipient binding)
    carol = Party("provider-c")
    plain = SealedBox(PrivateKey(bob.enc.secret)).decrypt(sealed)
    forwarded = SealedBox(PrivateKey(carol.enc.secret).public_key).encrypt(plain)
    with pytest.raises(FragmentError, match="MAC"):
        F.open_fragment(forwarded, recipient_keys=[carol.enc.secret], recipient_address=carol.address,
                        recipient=carol.identity)


def test_attack_a_stranger_cannot_write_under_a_contacts_name(alice, bob):
    """Mallory knows both addresses and bob's encryption key, and claims alice's identity: refused."""
    mallory = Party("provider-m")
    frag = F.split_message(b"from alice, honest", b"q" * 16)[0]
    signed = F._signed_part(frag, alice.identity.public, alice.address)
    guessed_key = F._pair_key(F.identity_dh_secret(mallory.identity), bob.identity.public)
    forged = SealedBox(PrivateKey(bob.enc.secret).public_key).encrypt(
        signed + F._mac(guessed_key, bob.address, signed))
    with pytest.raises(FragmentError, match="MAC"):
        _open(forged, bob)


def test_deniability_bob_can_write_a_fragment_that_verifies_as_alices(alice, bob):
    """The fragment MAC is symmetric: bob alone (his identity, alice's public key) makes one that opens."""
    frag = F.split_message(b"alice never wrote this", b"d" * 16)[0]
    signed = F._signed_part(frag, alice.identity.public, alice.address)
    key = F._pair_key(F.identity_dh_secret(bob.identity), alice.identity.public)
    forged = SealedBox(PrivateKey(bob.enc.secret).public_key).encrypt(signed + F._mac(key, bob.address, signed))
    opened = _open(forged, bob)
    assert opened.sender == alice.address and opened.fragment.data == b"alice never wrote this"


def test_rotated_keys_any_listed_key_opens(alice, bob):
    old = EncryptionKey.generate()
    sealed = F.seal_fragment(
        F.split_message(b"x", b"j" * 16)[0],
        sender=alice.identity,
        sender_address=alice.address,
        recipient_address=bob.address,
        recipient_identity=bob.identity.public,
        recipient_key=old.public,
    )
    opened = F.open_fragment(sealed, recipient_keys=[bob.enc.secret, old.secret], recipient_address=bob.address,
                             recipient=bob.identity)
    assert opened.fragment.data == b"x"


def test_sender_address_must_match_sender_key(alice, bob):
    with pytest.raises(ValueError):
        F.seal_fragment(
            F.split_message(b"x", b"k" * 16)[0],
            sender=alice.identity,
            sender_address=bob.address,
            recipient_address=bob.address,
            recipient_identity=bob.identity.public,
            recipient_key=bob.enc.public,
        )


def test_message_size_limit():
    with pytest.raises(MessageTooLargeError, match="limit"):
        F.split_message(bytes(F.MAX_MESSAGE_BYTES + 1), b"m" * 16)
    frags = F.split_message(bytes(F.MAX_MESSAGE_BYTES), b"m" * 16)
    assert len(frags) == F.fragment_count(F.MAX_MESSAGE_BYTES)


def test_contradicting_fragments_are_refused(alice, bob):
    r = F.Reassembler()
    a = _open(_seal_all(b"a" * (F.FRAGMENT_DATA_BYTES + 5), alice, bob, b"z" * 16)[0], bob)
    b = _open(_seal_all(b"b" * (F.FRAGMENT_DATA_BYTES + 5), alice, bob, b"z" * 16)[0], bob)
    c = _open(_seal_all(b"c" * (3 * F.FRAGMENT_DATA_BYTES), alice, bob, b"z" * 16)[0], bob)
    assert r.add(a) is None
    with pytest.raises(ReassemblyError):
        r.add(b)
    with pytest.raises(ReassemblyError):
        r.add(c)


def test_same_message_id_from_two_senders_does_not_mix(alice, bob):
    eve = Party("provider-e")
    r = F.Reassembler()
    msg_a = b"A" * (F.FRAGMENT_DATA_BYTES + 1)
    sealed_a = _seal_all(msg_a, alice, bob, b"q" * 16)
    sealed_e = _seal_all(b"E" * (F.FRAGMENT_DATA_BYTES + 1), eve, bob, b"q" * 16)
    assert r.add(_open(sealed_a[0], bob)) is None
    assert r.add(_open(sealed_e[1], bob)) is None
    assert r.add(_open(sealed_a[1], bob)) == msg_a


def test_reassembler_memory_is_bounded(alice, bob):
    r = F.Reassembler(max_pending=3)
    for i in range(10):
        sealed = _seal_all(bytes(2 * F.FRAGMENT_DATA_BYTES), alice, bob, bytes([i]) * 16)
        r.add(_open(sealed[0], bob))
    assert r.evicted == 7
    assert r.pending_bytes == 3 * F.FRAGMENT_DATA_BYTES


def test_payload_kinds(alice, bob):
    rng = random.Random(3)
    keys = [S.generate_node_keypair(rng.randbytes) for _ in range(2)]
    route = [S.Hop(rng.randbytes(16), pub) for _, pub in keys]
    _, surb = S.build_surb(route[:1], b"m" * 16, rng.randbytes)
    sealed = _seal_all(b"hi", alice, bob)[0]
    payload = F.encode_fragment_payload(surb, sealed)
    assert len(payload) == S.PAYLOAD_BYTES
    assert F.decode_payload(payload) == F.FragmentPayload(surb, sealed)
    loop = F.encode_cover_payload(F.KIND_LOOP, rng.randbytes)
    drop = F.encode_cover_payload(F.KIND_DROP, rng.randbytes, ack_surb=surb)
    assert len(loop) == len(drop) == S.PAYLOAD_BYTES
    assert F.decode_payload(loop) == F.CoverPayload(F.KIND_LOOP)
    assert F.decode_payload(drop) == F.CoverPayload(F.KIND_DROP, surb)  # answered like a fragment's SURB
    with pytest.raises(ValueError):
        F.encode_cover_payload(F.KIND_LOOP, rng.randbytes, ack_surb=surb)
    with pytest.raises(FragmentError):
        F.decode_payload(b"\x09" + bytes(S.PAYLOAD_BYTES - 1))
    with pytest.raises(FragmentError):
        F.decode_payload(b"\x01")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=F.SEALED_FRAGMENT_BYTES + 4))
def test_arbitrary_sealed_bytes_only_raise_fragment_errors(bob, data):
    with pytest.raises(FragmentError):
        _open(data, bob)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=0, max_size=F.SEALED_FRAGMENT_BYTES - 48))
def test_garbage_sealed_to_us_only_raises_fragment_errors(bob, data):
    """A valid seal around garbage (anyone can seal to our public key) must parse strictly."""
    from nacl.public import PublicKey, SealedBox

    plain = data.ljust(F.SEALED_FRAGMENT_BYTES - 48, b"\x00")
    sealed = bytes(SealedBox(PublicKey(bob.enc.public)).encrypt(plain))
    with pytest.raises(FragmentError):
        _open(sealed, bob)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=S.PAYLOAD_BYTES + 2))
def test_arbitrary_payloads_parse_or_raise_fragment_errors(data):
    try:
        F.decode_payload(data)
    except FragmentError:
        pass
