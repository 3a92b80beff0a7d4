"""Our Double Ratchet against an independent one: Syndace's ``doubleratchet`` package set up with our primitives.

The package (``DoubleRatchet`` on PyPI) leaves the cryptography to subclasses; here they are given
exactly what :mod:`anonmail.core.ratchet` documents, built from the package's own recommended
classes wherever it has one:

    KDF_RK   its HKDF KDF (salt = root key, ikm = DH output), SHA-256, info "anonmail-ratchet-root-v1"
    KDF_CK   its separate-HMACs KDF, SHA-256, chain constant 0x02 0x01: its chain step keeps the first
             32 bytes of HMAC(ck, 0x02) | HMAC(ck, 0x01) as the next chain key and the last 32 as the
             message key, which is our order
    DH       its X25519 ratchet (on ``cryptography``, not libsodium), key generation injected
    AEAD     written here: XChaCha20-Poly1305, key | nonce = HKDF-SHA-256(message key, info
             "anonmail-ratchet-msg-v1"), from libsodium and ``cryptography`` directly (not our seal)
    AD       session AD | header (pub 32 | pn u32 BE | n u32 BE) | the caller's binding; the package
             passes (caller's AD, header) to an overridable builder, the session AD is bound per class

The package has no wire format (a message is a header tuple and a ciphertext); the glue below puts
its header fields into our 40-byte layout, so the header *values* are the package's own.

What is shown: each side opens the other's messages across many DH ratchet steps, in order and out
of order within and across chains (skipped keys), replays are refused by both; given the same shared
secret, responder prekey and key-generation stream, the four pairings (ours/theirs as either end)
produce byte-identical messages, and our state (root, chain keys, counters, skipped message keys)
equals the package's after every step. Changing any one parameter breaks it, so the tests can fail.

Differences that are deliberate and not exercised as interop (docs/design.md, "End-to-end sessions"):
the package never expires skipped keys (ours: SKIPPED_TTL); a ratchet step that would skip more than
the threshold of the previous chain makes it warn and store none of them (ours refuses the message);
its ratchet does not check the peer's ratchet key itself (ours refuses non-canonical and small-order
keys before any DH).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import doubleratchet
import nacl.bindings
import nacl.exceptions
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from doubleratchet.recommended import HashFunction, kdf_hkdf, kdf_separate_hmacs
from doubleratchet.recommended.diffie_hellman_ratchet_curve25519 import DiffieHellmanRatchet as X25519Ratchet

from anonmail.core import ratchet as R
from anonmail.errors import SessionError

pytestmark = pytest.mark.unit

#: The version these tests were written against and docs/design.md names; pyproject.toml's lower bound.
PACKAGE_VERSION = (1, 3, 0)
SESSION_AD = b"alice identity key 32 bytes.....|bob identity key 32 bytes......."


def test_the_package_is_at_least_the_version_the_docs_name() -> None:
    assert tuple(int(part) for part in doubleratchet.__version__.split(".")[:3]) >= PACKAGE_VERSION


# ---------------------------------------------------------------------- the package, configured


@dataclass(frozen=True)
class Config:
    """Our parameters; the sanity tests change one at a time."""

    root_info: bytes = b"anonmail-ratchet-root-v1"
    msg_info: bytes = b"anonmail-ratchet-msg-v1"
    chain_constant: bytes = b"\x02\x01"
    binding_after_header: bool = True  # False: the package's documented default, caller's AD | header


OURS = Config()


def _header_bytes(header: doubleratchet.Header) -> bytes:
    return struct.pack(">32sII", header.ratchet_pub, header.previous_sending_chain_length,
                       header.sending_chain_length)


def _package_classes(config: Config, randbytes: Callable[[int], bytes]) -> dict[str, Any]:
    """The keyword arguments the package's constructors take, for one end of a session."""

    class RootKDF(kdf_hkdf.KDF):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return config.root_info

    class ChainKDF(kdf_separate_hmacs.KDF):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

    class XChaChaAEAD(doubleratchet.AEAD):
        @staticmethod
        def _key_nonce(message_key: bytes) -> tuple[bytes, bytes]:
            out = HKDF(algorithm=hashes.SHA256(), length=56, salt=None, info=config.msg_info).derive(message_key)
            return out[:32], out[32:]

        @staticmethod
        async def encrypt(plaintext: bytes, key: bytes, associated_data: bytes) -> bytes:
            k, nonce = XChaChaAEAD._key_nonce(key)
            return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associated_data, nonce, k)

        @staticmethod
        async def decrypt(ciphertext: bytes, key: bytes, associated_data: bytes) -> bytes:
            k, nonce = XChaChaAEAD._key_nonce(key)
            try:
                return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, associated_data, nonce, k)
            except nacl.exceptions.CryptoError as e:
                raise doubleratchet.AuthenticationFailedException("does not open") from e

    class DH(X25519Ratchet):
        @staticmethod
        def _generate_priv() -> bytes:
            return randbytes(32)

    return {
        "diffie_hellman_ratchet_class": DH,
        "root_chain_kdf": RootKDF,
        "message_chain_kdf": ChainKDF,
        "message_chain_constant": config.chain_constant,
        "dos_protection_threshold": R.MAX_SKIP,
        "max_num_skipped_message_keys": R.MAX_SKIPPED,
        "aead": XChaChaAEAD,
    }


def _package_ratchet_class(config: Config) -> type[doubleratchet.DoubleRatchet]:
    class Theirs(doubleratchet.DoubleRatchet):
        @staticmethod
        def _build_associated_data(associated_data: bytes, header: doubleratchet.Header) -> bytes:
            if config.binding_after_header:
                return SESSION_AD + _header_bytes(header) + associated_data
            return SESSION_AD + associated_data + _header_bytes(header)

    return Theirs


# ---------------------------------------------------------------------- two kinds of ends, one interface


class End(Protocol):
    async def encrypt(self, plaintext: bytes, binding: bytes) -> bytes: ...
    async def decrypt(self, message: bytes, binding: bytes) -> bytes: ...


def _stream(seed: bytes) -> Callable[[int], bytes]:
    """Deterministic key material: SHAKE-256(seed | counter)."""
    counter = itertools.count()
    return lambda n: hashlib.shake_256(seed + next(counter).to_bytes(4, "big")).digest(n)


class OurEnd:
    """Our Ratchet (its parameters are fixed: ``config`` is taken only to match TheirEnd)."""

    def __init__(self, ratchet: R.Ratchet | None, randbytes: Callable[[int], bytes]) -> None:
        self.ratchet, self.randbytes = ratchet, randbytes

    @classmethod
    def initiator(cls, shared: bytes, their_public: bytes, randbytes: Callable[[int], bytes],
                  config: Config = OURS) -> OurEnd:
        return cls(R.Ratchet.initiator(shared, their_public, SESSION_AD, randbytes), randbytes)

    @classmethod
    def responder(cls, shared: bytes, secret: bytes, randbytes: Callable[[int], bytes],
                  config: Config = OURS) -> OurEnd:
        return cls(R.Ratchet.responder(shared, secret, SESSION_AD), randbytes)

    async def encrypt(self, plaintext: bytes, binding: bytes) -> bytes:
        assert self.ratchet is not None
        return self.ratchet.encrypt(plaintext, binding, self.randbytes)

    async def decrypt(self, message: bytes, binding: bytes) -> bytes:
        assert self.ratchet is not None
        return self.ratchet.decrypt(message, binding, now=0, randbytes=self.randbytes)


class TheirEnd:
    """The package's DoubleRatchet; it exists only from the first message on (sent or received)."""

    def __init__(self, config: Config, randbytes: Callable[[int], bytes], shared: bytes, *,
                 their_public: bytes | None = None, secret: bytes | None = None) -> None:
        self.kwargs = _package_classes(config, randbytes)
        self.cls = _package_ratchet_class(config)
        self.shared, self.their_public, self.secret = shared, their_public, secret
        self.ratchet: doubleratchet.DoubleRatchet | None = None

    @classmethod
    def initiator(cls, shared: bytes, their_public: bytes, randbytes: Callable[[int], bytes],
                  config: Config = OURS) -> TheirEnd:
        return cls(config, randbytes, shared, their_public=their_public)

    @classmethod
    def responder(cls, shared: bytes, secret: bytes, randbytes: Callable[[int], bytes],
                  config: Config = OURS) -> TheirEnd:
        return cls(config, randbytes, shared, secret=secret)

    async def encrypt(self, plaintext: bytes, binding: bytes) -> bytes:
        if self.ratchet is None:
            assert self.their_public is not None, "the package's responder cannot send first"
            self.ratchet, out = await self.cls.encrypt_initial_message(
                **self.kwargs, shared_secret=self.shared, recipient_ratchet_pub=self.their_public,
                message=plaintext, associated_data=binding)
        else:
            out = await self.ratchet.encrypt_message(plaintext, binding)
        return _header_bytes(out.header) + out.ciphertext

    async def decrypt(self, message: bytes, binding: bytes) -> bytes:
        pub, pn, n = struct.unpack_from(">32sII", message)
        encrypted = doubleratchet.EncryptedMessage(header=doubleratchet.Header(pub, pn, n),
                                                   ciphertext=message[R.HEADER_BYTES:])
        if self.ratchet is None:
            assert self.secret is not None
            self.ratchet, plaintext = await self.cls.decrypt_initial_message(
                **self.kwargs, shared_secret=self.shared, own_ratchet_priv=self.secret, message=encrypted,
                associated_data=binding)
            return plaintext
        return await self.ratchet.decrypt_message(encrypted, binding)


KINDS = {"ours": OurEnd, "theirs": TheirEnd}
PAIRINGS = [("ours", "theirs"), ("theirs", "ours"), ("ours", "ours"), ("theirs", "theirs")]
CROSS = PAIRINGS[:2]


def _session(alice_kind: str, bob_kind: str, seed: bytes = b"s", *, alice_config: Config = OURS,
             bob_config: Config = OURS) -> tuple[Any, Any]:
    """Alice ran the key agreement and sends first; Bob's signed prekey is his first ratchet key."""
    shared = hashlib.sha256(b"shared" + seed).digest()
    spk_secret, spk_public = R.x25519_keypair(_stream(b"spk" + seed))
    alice = KINDS[alice_kind].initiator(shared, spk_public, _stream(b"alice" + seed), alice_config)
    bob = KINDS[bob_kind].responder(shared, spk_secret, _stream(b"bob" + seed), bob_config)
    return alice, bob


def _refused(kind: str) -> tuple[type[BaseException], ...]:
    if kind == "ours":
        return (SessionError,)
    return (doubleratchet.AuthenticationFailedException, doubleratchet.DuplicateMessageException)


# ---------------------------------------------------------------------- 1. in order, many DH steps


@pytest.mark.anyio
@pytest.mark.parametrize(("alice_kind", "bob_kind"), PAIRINGS)
async def test_alternating_conversation_across_dh_steps(alice_kind: str, bob_kind: str) -> None:
    alice, bob = _session(alice_kind, bob_kind)
    ends = {"alice": alice, "bob": bob}
    keys_seen: dict[str, set[bytes]] = {"alice": set(), "bob": set()}
    for turn in range(8):  # 8 turns: 7 DH ratchet steps on each side after the first
        sender, receiver = ("alice", "bob") if turn % 2 == 0 else ("bob", "alice")
        for i in range(3 + turn % 3):
            text, binding = b"%s turn %d msg %d" % (sender.encode(), turn, i), b"id-%d-%d" % (turn, i)
            message = await ends[sender].encrypt(text, binding)
            pub, pn, n = struct.unpack_from(">32sII", message)
            assert n == i
            keys_seen[sender].add(pub)
            assert await ends[receiver].decrypt(message, binding) == text
    assert len(keys_seen["alice"]) == len(keys_seen["bob"]) == 4  # a fresh ratchet key every turn


# ---------------------------------------------------------------------- 2. out of order, skipped keys

# (op, end, label): "send" encrypts the label's text, "recv" delivers that message. Alice's first chain
# reaches Bob out of order starting with message 2 (so even the package's decrypt_initial_message
# stores skipped keys); later messages of an old chain arrive after the ratchet turned (keys skipped
# through the header's pn); a chain's messages arrive backwards.
SCRIPT: list[tuple[str, str, str]] = [
    *[("send", "alice", f"a1.{i}") for i in range(5)],
    ("recv", "bob", "a1.2"), ("recv", "bob", "a1.0"),
    ("send", "bob", "b1.0"), ("send", "bob", "b1.1"), ("send", "bob", "b1.2"),
    ("recv", "alice", "b1.1"),
    ("send", "alice", "a2.0"), ("send", "alice", "a2.1"), ("send", "alice", "a2.2"),
    ("recv", "bob", "a2.2"),  # skips a1.3, a1.4 (pn) and a2.0, a2.1
    ("recv", "bob", "a1.4"), ("recv", "alice", "b1.2"),
    ("send", "bob", "b2.0"), ("send", "bob", "b2.1"),
    ("recv", "alice", "b2.1"), ("recv", "bob", "a2.0"), ("recv", "alice", "b1.0"),
    ("send", "alice", "a3.0"), ("send", "alice", "a3.1"), ("send", "alice", "a3.2"), ("send", "alice", "a3.3"),
    ("recv", "bob", "a3.3"), ("recv", "bob", "a3.1"), ("recv", "bob", "a1.1"), ("recv", "bob", "a3.2"),
    ("recv", "bob", "a3.0"), ("recv", "bob", "a2.1"), ("recv", "bob", "a1.3"),
    ("send", "bob", "b3.0"), ("recv", "alice", "b3.0"), ("recv", "alice", "b2.0"),
    ("send", "alice", "a4.0"), ("recv", "bob", "a4.0"),
]


def _binding(label: str) -> bytes:
    return b"message-id:" + label.encode()


async def _run(alice: End, bob: End, script: list[tuple[str, str, str]]) -> list[bytes]:
    ends, sent, transcript = {"alice": alice, "bob": bob}, {}, []
    for op, who, label in script:
        if op == "send":
            sent[label] = await ends[who].encrypt(b"text of " + label.encode(), _binding(label))
            transcript.append(sent[label])
        else:
            assert await ends[who].decrypt(sent[label], _binding(label)) == b"text of " + label.encode(), label
    return transcript


def test_the_script_delivers_each_message_once() -> None:
    sends = [label for op, _, label in SCRIPT if op == "send"]
    recvs = [label for op, _, label in SCRIPT if op == "recv"]
    assert sorted(sends) == sorted(recvs) and len(set(sends)) == len(sends) == 19
    assert recvs != sends  # not in order


@pytest.mark.anyio
@pytest.mark.parametrize(("alice_kind", "bob_kind"), PAIRINGS)
async def test_out_of_order_within_and_across_chains(alice_kind: str, bob_kind: str) -> None:
    alice, bob = _session(alice_kind, bob_kind)
    transcript = await _run(alice, bob, SCRIPT)
    # every message key was used once: a replay is refused, by either implementation
    by_label = dict(zip([label for op, _, label in SCRIPT if op == "send"], transcript, strict=True))
    for label in ("a1.0", "a1.3", "a2.2", "a3.3", "a4.0"):
        with pytest.raises(_refused(bob_kind)):
            await bob.decrypt(by_label[label], _binding(label))
    for label in ("b1.0", "b2.1", "b3.0"):
        with pytest.raises(_refused(alice_kind)):
            await alice.decrypt(by_label[label], _binding(label))


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("alice_kind", "bob_kind"), CROSS)
async def test_random_delivery_order(alice_kind: str, bob_kind: str, seed: int) -> None:
    """Bob answers the first message of each of Alice's chains; everything else reaches him shuffled."""
    rng = random.Random(seed)
    alice, bob = _session(alice_kind, bob_kind, seed=b"%d" % seed)
    pending: list[tuple[bytes, bytes, bytes]] = []
    for round_ in range(5):
        chain = []
        for i in range(rng.randrange(2, 7)):
            text = b"%d.%d" % (round_, i)
            chain.append((await alice.encrypt(text, text), text, text))
        first, *rest = chain
        assert await bob.decrypt(first[0], first[2]) == first[1]
        pending += rest
        reply = await bob.encrypt(b"ack %d" % round_, b"")
        assert await alice.decrypt(reply, b"") == b"ack %d" % round_
    rng.shuffle(pending)
    for message, text, binding in pending:
        assert await bob.decrypt(message, binding) == text


# ---------------------------------------------------------------------- 3. byte for byte


def _state_of_theirs(end: TheirEnd) -> dict[str, Any] | None:
    if end.ratchet is None:
        return None
    model = end.ratchet.model
    dh, skr = model.diffie_hellman_ratchet, model.diffie_hellman_ratchet.symmetric_key_ratchet
    return {
        "secret": dh.own_ratchet_priv, "their_public": dh.other_ratchet_pub, "root": dh.root_chain.key,
        "sending": skr.sending_chain.key if skr.sending_chain else None,
        "ns": skr.sending_chain.length if skr.sending_chain else 0,
        "receiving": skr.receiving_chain.key if skr.receiving_chain else None,
        "nr": skr.receiving_chain.length if skr.receiving_chain else 0,
        "pn": skr.previous_sending_chain_length or 0,
        "skipped": [((k.ratchet_pub, k.index), k.message_key) for k in model.skipped_message_keys],
    }


def _state_of_ours(end: OurEnd) -> dict[str, Any]:
    r = end.ratchet
    assert r is not None
    return {"secret": r.secret, "their_public": r.their_public, "root": r.root, "sending": r.sending, "ns": r.ns,
            "receiving": r.receiving, "nr": r.nr, "pn": r.pn,
            "skipped": [(k, key) for k, (key, _at) in r.skipped.items()]}


@pytest.mark.anyio
async def test_same_inputs_give_byte_identical_messages_and_states() -> None:
    """The four pairings run SCRIPT in lockstep from the same secrets and key-generation streams."""
    sessions = [_session(*pairing) for pairing in PAIRINGS]
    by_pairing = dict(zip(PAIRINGS, sessions, strict=True))
    ours_ours, theirs_theirs = by_pairing[("ours", "ours")], by_pairing[("theirs", "theirs")]
    sent: list[dict[str, bytes]] = [{} for _ in sessions]
    compared, most_skipped = 0, 0
    for op, who, label in SCRIPT:
        role = 0 if who == "alice" else 1
        outputs = []
        for session, outbox in zip(sessions, sent, strict=True):
            if op == "send":
                outbox[label] = await session[role].encrypt(b"text of " + label.encode(), _binding(label))
                outputs.append(outbox[label])
            else:
                outputs.append(await session[role].decrypt(outbox[label], _binding(label)))
        assert len(set(outputs)) == 1, (op, who, label)  # every pairing: the same bytes
        for end in (0, 1):  # ours and the package's hold the same keys, counters and skipped keys
            theirs = _state_of_theirs(theirs_theirs[end])
            if theirs is not None:
                ours = _state_of_ours(ours_ours[end])
                assert ours == theirs, (op, who, label, end)
                compared += 1
                most_skipped = max(most_skipped, len(ours["skipped"]))
    assert compared == 2 * len(SCRIPT) - 5  # Bob's package end exists from his first receipt (step 6) on
    assert most_skipped >= 4  # skipped keys were really compared, not two empty lists


@pytest.mark.anyio
async def test_the_first_message_recomputed_from_the_documented_primitives() -> None:
    """Alice's first message recomputed by hand from the documented primitives, as a third witness."""
    alice, _bob = _session("theirs", "ours")
    message = await alice.encrypt(b"hello", b"id")
    shared = hashlib.sha256(b"shared" + b"s").digest()
    _spk_secret, spk_public = R.x25519_keypair(_stream(b"spks"))
    secret = _stream(b"alices")(32)
    out = HKDF(algorithm=hashes.SHA256(), length=64, salt=shared, info=b"anonmail-ratchet-root-v1").derive(
        nacl.bindings.crypto_scalarmult(secret, spk_public))
    chain = out[32:]
    message_key = hmac.new(chain, b"\x01", "sha256").digest()
    kn = HKDF(algorithm=hashes.SHA256(), length=56, salt=None, info=b"anonmail-ratchet-msg-v1").derive(message_key)
    header = nacl.bindings.crypto_scalarmult_base(secret) + bytes(8)
    body = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(b"hello", SESSION_AD + header + b"id", kn[32:],
                                                                    kn[:32])
    assert message == header + body


# ---------------------------------------------------------------------- the tests can fail


MUTATIONS = {
    "root info": replace(OURS, root_info=b"anonmail-ratchet-root-v2"),
    "message info": replace(OURS, msg_info=b"anonmail-ratchet-msg-v2"),
    "chain key and message key swapped": replace(OURS, chain_constant=b"\x01\x02"),
    "binding before the header (the package's default layout)": replace(OURS, binding_after_header=False),
}


@pytest.mark.anyio
@pytest.mark.parametrize("mutation", list(MUTATIONS))
async def test_one_parameter_off_breaks_interop(mutation: str) -> None:
    config = MUTATIONS[mutation]
    # ours -> the package, configured wrongly
    alice, bob = _session("ours", "theirs", bob_config=config)
    with pytest.raises(doubleratchet.AuthenticationFailedException):
        await bob.decrypt(await alice.encrypt(b"hello", b"id"), b"id")
    # the package, configured wrongly -> ours
    alice, bob = _session("theirs", "ours", alice_config=config)
    message = await alice.encrypt(b"hello", b"id")
    with pytest.raises(SessionError) as info:
        await bob.decrypt(message, b"id")
    assert info.value.reason == "auth"
    # and its messages are no longer byte-identical to ours
    reference, _ = _session("ours", "ours")
    assert await reference.encrypt(b"hello", b"id") != message


@pytest.mark.anyio
@pytest.mark.parametrize(("alice_kind", "bob_kind"), CROSS)
async def test_a_changed_header_or_binding_is_refused_across(alice_kind: str, bob_kind: str) -> None:
    alice, bob = _session(alice_kind, bob_kind)
    message = await alice.encrypt(b"hello", b"id")
    pn_changed = message[:32] + struct.pack(">I", 1) + message[36:]
    for bad, binding in ((pn_changed, b"id"), (message, b"other id")):
        with pytest.raises(_refused(bob_kind)):
            await bob.decrypt(bad, binding)
    assert await bob.decrypt(message, b"id") == b"hello"
