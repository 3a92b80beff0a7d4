"""Descriptors and consensus documents: signing, parsing, determinism and the acceptance rules."""

from __future__ import annotations

import base64
import copy
import random

import pytest

from anonmail.core import pki
from anonmail.core.keys import IdentityKey
from anonmail.core.sphinx import generate_node_keypair
from anonmail.core.wire import MAX_DIRECTORY_CONTROL_BYTES, Control, FrameDecoder, encode_frame
from anonmail.errors import DirectoryError

EPOCH_SECONDS = 600
EPOCH = 2_900_000
NOW = pki.epoch_start(EPOCH, EPOCH_SECONDS) + 100

AUTHORITIES = [IdentityKey.from_seed(bytes([200 + i]) * 32) for i in range(3)]
PINNED = [a.public for a in AUTHORITIES]


def identity(i: int) -> IdentityKey:
    return IdentityKey.from_seed(bytes([i + 1]) * 32)


def make(i: int, *, epoch: int = EPOCH, role: str = "mix", layer: int | None = None, name: str | None = None,
         addresses=None, key: IdentityKey | None = None, sphinx: bytes | None = None) -> pki.NodeDescriptor:
    if layer is None:
        layer = (i % 3) + 1 if role == "mix" else 0
    return pki.sign_descriptor(
        key or identity(i),
        name=name or f"node-{i}",
        role=role,
        layer=layer,
        epoch=epoch,
        sphinx_key=sphinx or generate_node_keypair(lambda n: bytes([i + 1]) * n)[1],
        addresses=addresses or [f"mem://node-{i}"],
        production=False,
    )


def network(epoch: int = EPOCH) -> pki.Consensus:
    nodes = [make(i, epoch=epoch) for i in range(6)] + [make(10, role="provider", epoch=epoch)]
    return pki.build_consensus(epoch, EPOCH_SECONDS, nodes)


def signed(consensus: pki.Consensus, signers=AUTHORITIES) -> dict[str, str]:
    return {
        pki.authority_id(a.public): base64.b64encode(pki.sign_consensus(consensus, a)).decode() for a in signers
    }


def verify(document, signatures, *, now=NOW, threshold=2):
    return pki.verify_consensus(
        document, signatures, authorities=PINNED, threshold=threshold, now=now, production=False
    )


# ----------------------------------------------------------------------------- epochs


def test_epoch_arithmetic():
    start = pki.epoch_start(EPOCH, EPOCH_SECONDS)
    assert pki.epoch_at(start, EPOCH_SECONDS) == EPOCH
    assert pki.epoch_at(start - 0.001, EPOCH_SECONDS) == EPOCH - 1
    assert pki.epoch_at(start + EPOCH_SECONDS - 0.001, EPOCH_SECONDS) == EPOCH


# ----------------------------------------------------------------------------- descriptors


def test_descriptor_round_trip_and_properties():
    d = make(1, addresses=["mem://node-1", "tcp://127.0.0.1:7000"])
    again = pki.descriptor_from_dict(d.to_dict(), production=False)
    assert again == d
    assert d.schemes == {"mem", "tcp"}
    assert d.node_ref().layer == d.layer and d.node_ref().data is d
    assert len(d.node_id) == 16


@pytest.mark.parametrize(
    "field, value",
    [("name", "node-x"), ("layer", 3), ("epoch", EPOCH + 1), ("addresses", ["mem://other"]),
     ("sphinx_key", base64.b64encode(b"\x09" * 32).decode())],
)
def test_tampered_descriptor_fails_signature(field, value):
    data = make(1).to_dict()
    data[field] = value
    with pytest.raises(DirectoryError, match="signature does not verify") as info:
        pki.descriptor_from_dict(data, production=False)
    assert info.value.reason == "bad_descriptor"


def test_descriptor_signed_by_another_key_is_refused():
    d = make(1)
    data = d.to_dict()
    data["identity_key"] = base64.b64encode(identity(2).public).decode()
    with pytest.raises(DirectoryError) as info:
        pki.descriptor_from_dict(data, production=False)
    assert info.value.reason == "bad_descriptor"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("signature"), "missing \\['signature'\\]"),
        (lambda d: d.update(extra=1), "unexpected \\['extra'\\]"),
        (lambda d: d.update(version=2), "version 2 is not supported"),
        (lambda d: d.update(identity_key="not base64!"), "identity_key is not valid base64"),
        (lambda d: d.update(sphinx_key=base64.b64encode(b"x" * 31).decode()), "sphinx_key must be 32 bytes"),
        (lambda d: d.update(signature=5), "signature must be base64 text"),
        (lambda d: d.update(addresses="mem://node-1"), "addresses must be a list of strings"),
    ],
)
def test_malformed_descriptor(mutate, message):
    data = make(1).to_dict()
    mutate(data)
    with pytest.raises(DirectoryError, match=message) as info:
        pki.descriptor_from_dict(data, production=False)
    assert info.value.reason == "malformed"


def test_descriptor_must_be_an_object():
    with pytest.raises(DirectoryError, match="JSON object"):
        pki.descriptor_from_dict(["x"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "Bad Name"}, "name must be"),
        ({"role": "relay"}, "role must be one of mix, provider"),
        ({"role": "mix", "layer": 0}, "layer must be 1..3"),
        ({"role": "mix", "layer": 4}, "layer must be 1..3"),
        ({"role": "provider", "layer": 1}, "provider's layer must be 0"),
        ({"epoch": -1}, "epoch must be a non-negative integer"),
        ({"addresses": []}, "needs 1..8 transport addresses"),
        ({"addresses": [f"mem://n{i}" for i in range(9)]}, "needs 1..8"),
        ({"addresses": ["mem://a", "mem://a"]}, "lists an address twice"),
        ({"addresses": ["ftp://x"]}, "unknown scheme"),
    ],
)
def test_descriptor_field_rules(kwargs, message):
    args = {"name": "node-1", "role": "mix", "layer": 1, "epoch": EPOCH, "sphinx_key": b"\x01" * 32,
            "addresses": ["mem://node-1"], "production": False, **kwargs}
    with pytest.raises(DirectoryError, match=message) as info:
        pki.sign_descriptor(identity(1), **args)
    assert info.value.reason == "bad_descriptor"


def test_production_refuses_test_addresses():
    d = make(1)
    with pytest.raises(DirectoryError, match="for tests only"):
        pki.descriptor_from_dict(d.to_dict(), production=True)


def test_sphinx_key_size_is_checked_when_signing():
    with pytest.raises(DirectoryError, match="32 bytes"):
        make(1, sphinx=b"\x01" * 31)


#: The canonical encodings of the Curve25519 points of small order, and two non-canonical ones.
SMALL_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (2**255 - 20).to_bytes(32, "little"),
]
NON_CANONICAL = [(2**255 - 19).to_bytes(32, "little"), (2**255 - 1).to_bytes(32, "little")]


@pytest.mark.parametrize("weak", SMALL_ORDER + NON_CANONICAL, ids=lambda k: k.hex()[:8])
def test_attack_a_descriptor_with_a_small_order_sphinx_key_is_refused(weak):
    """An uploaded descriptor with a weak Sphinx key never parses (it would crash packet builders)."""
    good = make(1).to_dict()
    identity_key = identity(1)
    body = {**good, "sphinx_key": base64.b64encode(weak).decode()}
    del body["signature"]
    signature = identity_key.sign(pki.canonical_json(body), context=b"anonmail descriptor v1")
    forged = {**body, "signature": base64.b64encode(signature).decode()}
    with pytest.raises(DirectoryError) as info:
        pki.descriptor_from_dict(forged, production=False)
    assert info.value.reason == "bad_descriptor"
    assert "sphinx_key" in str(info.value)
    with pytest.raises(DirectoryError):
        make(1, sphinx=weak)


# ----------------------------------------------------------------------------- consensus building


def test_build_is_deterministic_and_ignores_other_epochs():
    nodes = [make(i) for i in range(6)] + [make(10, role="provider"), make(20, epoch=EPOCH + 1)]
    shuffled = list(nodes)
    random.Random(4).shuffle(shuffled)
    a = pki.build_consensus(EPOCH, EPOCH_SECONDS, nodes)
    b = pki.build_consensus(EPOCH, EPOCH_SECONDS, shuffled)
    assert a == b and a.digest() == b.digest()
    assert len(a.nodes) == 7
    assert [(d.role, d.layer) for d in a.nodes] == sorted((d.role, d.layer) for d in a.nodes)


def test_build_keeps_one_descriptor_per_identity_and_per_name():
    first = make(1, sphinx=b"\x01" * 32)
    second = make(1, sphinx=b"\x02" * 32)
    chosen = min(first, second, key=lambda d: pki.canonical_json(d.to_dict()))
    consensus = pki.build_consensus(EPOCH, EPOCH_SECONDS, [second, first])
    assert consensus.nodes == (chosen,)
    other = make(3)
    squatter = make(2, name="node-1")
    consensus = pki.build_consensus(EPOCH, EPOCH_SECONDS, [first, squatter, other])
    # No key order picks a winner: a name claimed twice is left out, whoever sorts first.
    assert consensus.nodes == (other,)


def test_a_document_listing_one_name_twice_is_not_canonical():
    first, squatter = make(1), make(2, name="node-1")
    document = pki.Consensus(EPOCH, EPOCH_SECONDS, tuple(sorted((first, squatter), key=lambda d: d.node_id))).to_dict()
    with pytest.raises(DirectoryError, match="canonical"):
        pki.consensus_from_dict(document, production=False)


def test_consensus_views():
    c = network()
    assert c.valid_until - c.valid_after == EPOCH_SECONDS
    assert [len(c.mixes(layer)) for layer in (1, 2, 3)] == [2, 2, 2]
    assert [p.name for p in c.providers] == ["node-10"]
    node = c.mixes(2)[0]
    assert c.by_id(node.node_id) is node and c.by_name(node.name) is node
    assert c.by_id(b"\x00" * 16) is None and c.by_name("nobody") is None
    topology = c.topology()
    assert [len(layer) for layer in topology.layers] == [2, 2, 2]
    assert topology.providers[0].name == "node-10"


def test_document_round_trip_through_a_directory_frame():
    c = pki.build_consensus(EPOCH, EPOCH_SECONDS, [make(i) for i in range(60)])
    message = {"type": "consensus", "document": c.to_dict(), "signatures": signed(c)}
    data = encode_frame(Control(message), max_control_bytes=MAX_DIRECTORY_CONTROL_BYTES)
    assert len(data) > 16384  # would not fit a default CONTROL frame
    (frame,) = FrameDecoder(max_control_bytes=MAX_DIRECTORY_CONTROL_BYTES).feed(data)
    assert verify(frame.message["document"], frame.message["signatures"]) == c


# ----------------------------------------------------------------------------- malformed documents


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("nodes"), "must be an object with"),
        (lambda d: d.update(version=9), "version 9 is not supported"),
        (lambda d: d.update(epoch="now"), "positive integers"),
        (lambda d: d.update(epoch=True), "positive integers"),
        (lambda d: d.update(epoch_seconds=0), "positive integers"),
        (lambda d: d.update(nodes={}), "nodes must be a list"),
        (lambda d: d["nodes"].reverse(), "not in canonical form"),
        (lambda d: d["nodes"].append(copy.deepcopy(d["nodes"][0])), "not in canonical form"),
        (lambda d: d["nodes"][0].update(name="x"), "signature does not verify"),
    ],
)
def test_malformed_documents(mutate, message):
    document = network().to_dict()
    mutate(document)
    with pytest.raises(DirectoryError, match=message):
        verify(document, {})


def test_document_with_a_descriptor_of_another_epoch():
    document = network().to_dict()
    document["nodes"] = [make(1, epoch=EPOCH + 1).to_dict()]
    with pytest.raises(DirectoryError, match="lists 'node-1' for epoch") as info:
        verify(document, {})
    assert info.value.reason == "malformed"


def test_document_must_be_an_object():
    with pytest.raises(DirectoryError) as info:
        verify("consensus", {})
    assert info.value.reason == "malformed"


# ----------------------------------------------------------------------------- acceptance rules


def test_two_of_three_signatures_accepted():
    c = network()
    assert verify(c.to_dict(), signed(c, AUTHORITIES[1:])) == c
    assert verify(c.to_dict(), signed(c)) == c


def test_too_few_signatures():
    c = network()
    with pytest.raises(DirectoryError, match="has 1 valid authority signatures, needs 2 of 3") as info:
        verify(c.to_dict(), signed(c, AUTHORITIES[:1]))
    assert info.value.reason == "too_few_signatures"


def test_forged_signature_is_named_and_not_counted():
    c = network()
    signatures = signed(c, AUTHORITIES[:1])
    mallory = IdentityKey.from_seed(b"\x66" * 32)
    forged_for = pki.authority_id(AUTHORITIES[1].public)
    signatures[forged_for] = base64.b64encode(pki.sign_consensus(c, mallory)).decode()
    with pytest.raises(DirectoryError, match=f"signatures that do not verify: {forged_for[:8]}") as info:
        verify(c.to_dict(), signatures)
    assert info.value.reason == "too_few_signatures"


def test_signature_over_another_document_does_not_count():
    c, other = network(), pki.build_consensus(EPOCH, EPOCH_SECONDS, [make(1)])
    signatures = {**signed(c, AUTHORITIES[:1]), **signed(other, AUTHORITIES[1:2])}
    with pytest.raises(DirectoryError, match="1 valid"):
        verify(c.to_dict(), signatures)


def test_garbage_and_unknown_signatures():
    c = network()
    signatures = signed(c, AUTHORITIES[:1])
    signatures[pki.authority_id(AUTHORITIES[2].public)] = "%%%"
    signatures["ff" * 16] = signed(c, AUTHORITIES[1:2]).popitem()[1]  # not a pinned id: ignored
    with pytest.raises(DirectoryError, match="1 valid .* do not verify: ") as info:
        verify(c.to_dict(), signatures)
    assert info.value.reason == "too_few_signatures"


def test_signatures_must_be_a_mapping():
    c = network()
    with pytest.raises(DirectoryError) as info:
        verify(c.to_dict(), [])
    assert info.value.reason == "malformed"


def test_a_pinned_key_listed_twice_counts_once():
    c = network()
    with pytest.raises(ValueError, match="threshold must be 1..1"):
        pki.verify_consensus(c.to_dict(), signed(c), authorities=[PINNED[0], PINNED[0]], threshold=2, now=NOW,
                             production=False)


@pytest.mark.parametrize("threshold", [0, 4])
def test_threshold_out_of_range(threshold):
    c = network()
    with pytest.raises(ValueError, match="threshold must be 1..3"):
        verify(c.to_dict(), signed(c), threshold=threshold)


def test_stale_epoch():
    c = network(EPOCH - 1)
    with pytest.raises(DirectoryError, match="which ended; the current epoch is") as info:
        verify(c.to_dict(), signed(c))
    assert info.value.reason == "stale"


def test_next_epoch_is_accepted_ahead_of_time_but_not_later_ones():
    nxt = network(EPOCH + 1)
    assert verify(nxt.to_dict(), signed(nxt)) == nxt
    future = network(EPOCH + 2)
    with pytest.raises(DirectoryError, match="check the clock") as info:
        verify(future.to_dict(), signed(future))
    assert info.value.reason == "future"


def test_consensus_signature_valid():
    c = network()
    good = signed(c, AUTHORITIES[:1]).popitem()[1]
    assert pki.consensus_signature_valid(c, PINNED[0], good)
    assert not pki.consensus_signature_valid(c, PINNED[1], good)
    assert not pki.consensus_signature_valid(c, PINNED[0], "bm90IGEgc2lnbmF0dXJl")
