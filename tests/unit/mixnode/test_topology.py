"""Who may send to whom, judged from the consensus alone (no node, no I/O)."""

from __future__ import annotations

import pytest

from anonmail.core import pki
from anonmail.core.keys import IdentityKey
from anonmail.core.linkauth import link_public
from anonmail.errors import LinkAuthError
from mixnode.topology import authorize_peer, next_hops

pytestmark = pytest.mark.unit

EPOCH = 100


def _node(name: str, layer: int, with_link: bool = True) -> tuple[pki.NodeDescriptor, bytes]:
    seed = name.encode().ljust(32, b".")
    link = link_public(seed[::-1])
    d = pki.sign_descriptor(IdentityKey.from_seed(seed), name=name, role="provider" if layer == 0 else "mix",
                            layer=layer, epoch=EPOCH, sphinx_key=b"\x09" * 32, addresses=[f"mem://{name}"],
                            production=False, link_key=link if with_link else None)
    return d, link


NODES = {name: _node(name, layer) for name, layer in
         [("alpha", 0), ("beta", 0), ("m1", 1), ("m2", 2), ("m3", 3), ("n1", 1)]}
CONSENSUS = pki.build_consensus(EPOCH, 3600, [d for d, _ in NODES.values()])


def _id(name: str) -> bytes:
    return NODES[name][0].node_id


def _link(name: str) -> bytes:
    return NODES[name][1]


@pytest.mark.parametrize(("me", "peer"), [("m1", "alpha"), ("n1", "beta"), ("m2", "m1"), ("m2", "n1"),
                                          ("m3", "m2"), ("alpha", "m3"), ("beta", "m3")])
def test_the_layer_before_is_accepted(me, peer):
    assert authorize_peer([CONSENSUS], _id(me), _link(peer)).name == peer


@pytest.mark.parametrize(("me", "peer"), [("m2", "alpha"), ("m1", "m2"), ("m1", "n1"), ("m3", "m1"),
                                          ("alpha", "m1"), ("alpha", "beta"), ("m2", "m3")])
def test_any_other_layer_is_refused(me, peer):
    with pytest.raises(LinkAuthError) as err:
        authorize_peer([CONSENSUS], _id(me), _link(peer))
    assert err.value.reason == "wrong_layer"


def test_strangers_and_missing_consensus_are_refused():
    with pytest.raises(LinkAuthError) as err:
        authorize_peer([CONSENSUS], _id("m1"), link_public(b"s" * 32))
    assert err.value.reason == "unknown_peer"
    with pytest.raises(LinkAuthError) as err:
        authorize_peer([None], _id("m1"), _link("alpha"))
    assert err.value.reason == "no_consensus"
    # A peer judged by the next consensus when the current one does not list it yet.
    later = pki.build_consensus(EPOCH, 3600, [NODES["m1"][0], NODES["alpha"][0]])
    early = pki.build_consensus(EPOCH, 3600, [NODES["m1"][0]])
    assert authorize_peer([early, later], _id("m1"), _link("alpha")).name == "alpha"


def test_next_hops_are_the_next_layer_only():
    assert next_hops(CONSENSUS, _id("alpha")) == {_id("m1"), _id("n1")}
    assert next_hops(CONSENSUS, _id("m1")) == {_id("m2")}
    assert next_hops(CONSENSUS, _id("m3")) == {_id("alpha"), _id("beta")}
    assert next_hops(CONSENSUS, b"\x00" * 16) == frozenset()


def test_link_key_survives_the_descriptor_round_trip_and_is_signed():
    d = NODES["m1"][0]
    again = pki.descriptor_from_dict(d.to_dict(), production=False)
    assert again.link_key == _link("m1")
    forged = {**d.to_dict(), "link_key": NODES["m2"][0].to_dict()["link_key"]}
    with pytest.raises(Exception) as err:
        pki.descriptor_from_dict(forged, production=False)
    assert "signature" in str(err.value)
