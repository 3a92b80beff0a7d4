"""Byte-for-byte compatibility with unmodified sphinxmix 0.0.7 code (Curve25519 group)."""

from __future__ import annotations

import random

import pytest

from anonmail.core import sphinx as S
from anonmail.core.petlib_compat import reference_params
from anonmail.core.sizes import ALPHA_BYTES, BETA_BYTES, HEADER_BYTES

sphinxmix_client = pytest.importorskip("sphinxmix.SphinxClient")
sphinxmix_node = pytest.importorskip("sphinxmix.SphinxNode")
sphinxmix_group = pytest.importorskip("sphinxmix.SphinxParamsC25519")

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True, params=["compiled", "pure"])
def hop_crypto(request, monkeypatch):
    """Every test runs with the compiled hop helper and with its pure-Python fallback."""
    if request.param == "pure":
        monkeypatch.setattr(S, "_fast", None)
    elif S._fast is None:
        pytest.skip("anonmail.core._sphinxfast not built (no compiler or OpenSSL headers at install time)")
    return request.param


def _split(packet: bytes):
    header = (
        packet[:ALPHA_BYTES],
        packet[ALPHA_BYTES : ALPHA_BYTES + BETA_BYTES],
        packet[ALPHA_BYTES + BETA_BYTES : HEADER_BYTES],
    )
    return header, packet[HEADER_BYTES:]


def _network(rng: random.Random, hops: int):
    keys = [S.generate_node_keypair(rng.randbytes) for _ in range(hops)]
    route = [
        S.Hop(rng.randbytes(16), pub, rng.randrange(0, 60_000) if i < hops - 1 else 0)
        for i, (_, pub) in enumerate(keys)
    ]
    return [sec for sec, _ in keys], route


def _walk_both(params, secrets, header, delta):
    """Process a packet hop by hop with sphinxmix and with us; assert identical outputs."""
    outputs = []
    for secret in secrets:
        theirs = sphinxmix_node.sphinx_process(params, secret, header, delta)
        ours = S._unwrap(secret, *header, delta)
        t_tag, t_routing, (t_header, t_delta), t_mac = theirs
        assert (ours[0], ours[1], ours[2], ours[3], ours[4]) == (
            t_tag,
            t_routing,
            tuple(t_header),
            t_delta,
            t_mac,
        )
        outputs.append(ours)
        header, delta = ours[2], ours[3]
    return outputs


def _final_decision(packet: bytes, secrets):
    """Run a packet through every hop with our ``process``; return the last hop's decision."""
    for secret in secrets:
        decision = S.process(packet, secret)
        if isinstance(decision, S.Forward):
            packet = decision.packet
    return decision


@pytest.mark.parametrize("hops", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", range(3))
def test_our_forward_packets_are_processed_identically_by_sphinxmix(hops, seed):
    rng = random.Random(seed)
    params = reference_params()
    secrets, route = _network(rng, hops)
    payload = rng.randbytes(rng.randrange(0, S.PAYLOAD_BYTES + 1))
    mailbox = rng.randbytes(16)
    packet = S.build_forward(route, mailbox, payload, rng.randbytes)
    header, delta = _split(packet)
    outputs = _walk_both(params, secrets, header, delta)
    tag, routing, _, final_delta, mac_key = outputs[-1]
    dest, msg = sphinxmix_client.receive_forward(params, mac_key, final_delta)
    assert (dest, msg) == (mailbox, payload)
    # and our own decision API agrees with the raw unwrap at every hop
    p = packet
    for i, secret in enumerate(secrets):
        decision = S.process(p, secret)
        if i < hops - 1:
            assert isinstance(decision, S.Forward)
            assert decision.next_node == route[i + 1].node_id
            assert decision.delay_ms == route[i].delay_ms
            p = decision.packet
    assert decision == S.Deliver(mailbox, payload, tag)


@pytest.mark.parametrize("hops", [1, 3, 5])
def test_sphinxmix_forward_packets_are_processed_identically_by_us(hops):
    rng = random.Random(hops)
    params = reference_params()
    secrets, route = _network(rng, hops)
    nodelist = S._nodelist(route)
    mailbox, payload = rng.randbytes(16), rng.randbytes(1000)
    header, delta = sphinxmix_client.create_forward_message(
        params, nodelist, [h.public_key for h in route], mailbox, payload
    )
    _walk_both(params, secrets, tuple(header), delta)
    decision = _final_decision(b"".join(header) + delta, secrets)
    assert isinstance(decision, S.Deliver)
    assert (decision.mailbox_id, decision.payload) == (mailbox, payload)


def _deterministic_sphinxmix(monkeypatch, stream: random.Random):
    """Feed sphinxmix's hard-coded os.urandom from ``stream`` (a test harness, not a patch)."""
    monkeypatch.setattr(sphinxmix_client, "urandom", stream.randbytes)
    monkeypatch.setattr(sphinxmix_group, "urandom", stream.randbytes)


def test_same_randomness_gives_identical_forward_packets(monkeypatch):
    rng = random.Random(7)
    secrets, route = _network(rng, 5)
    params = reference_params()
    mailbox, payload = rng.randbytes(16), rng.randbytes(3000)
    _deterministic_sphinxmix(monkeypatch, random.Random(99))
    header, delta = sphinxmix_client.create_forward_message(
        params, S._nodelist(route), [h.public_key for h in route], mailbox, payload
    )
    ours = S.build_forward(route, mailbox, payload, random.Random(99).randbytes)
    assert ours == b"".join(header) + delta


def test_same_randomness_gives_identical_surbs(monkeypatch):
    rng = random.Random(8)
    secrets, route = _network(rng, 4)
    params = reference_params()
    mailbox = rng.randbytes(16)
    _deterministic_sphinxmix(monkeypatch, random.Random(5))
    xid, keytuple, (n0, header, ktilde) = sphinxmix_client.create_surb(
        params, S._nodelist(route), [h.public_key for h in route], mailbox
    )
    keys, surb = S.build_surb(route, mailbox, random.Random(5).randbytes)
    assert surb == S.Surb(n0, b"".join(header), ktilde)
    assert (keys.surb_id, keys.ktilde, list(keys.hop_keys)) == (xid, keytuple[0], keytuple[1:])


def test_surb_replies_interoperate_both_ways():
    rng = random.Random(11)
    secrets, route = _network(rng, 4)
    params = reference_params()
    mailbox = rng.randbytes(16)
    # a SURB made by sphinxmix, used and opened by us
    xid, keytuple, (n0, header, ktilde) = sphinxmix_client.create_surb(
        params, S._nodelist(route), [h.public_key for h in route], mailbox
    )
    surb = S.Surb(n0, b"".join(header), ktilde)
    packet = S.package_surb(surb, b"ack from us")
    t_header, t_delta = sphinxmix_client.package_surb(params, (n0, tuple(header), ktilde), b"ack from us")
    assert packet == b"".join(t_header) + t_delta
    decision = _final_decision(packet, secrets)
    assert isinstance(decision, S.SurbDelivery)
    assert (decision.mailbox_id, decision.surb_id) == (mailbox, xid)
    keys = S.SurbKeys(xid, keytuple[0], tuple(keytuple[1:]))
    assert S.open_surb_reply(keys, decision.body) == b"ack from us"
    assert sphinxmix_client.receive_surb(params, list(keytuple), decision.body) == b"ack from us"
    # a SURB made by us, replied to and walked by sphinxmix
    keys, surb = S.build_surb(route, mailbox, rng.randbytes)
    header, delta = _split(S.package_surb(surb, b"reply"))
    outputs = _walk_both(params, secrets, header, delta)
    final_routing = sphinxmix_client.PFdecode(params, outputs[-1][1])
    assert final_routing == [sphinxmix_client.Surb_flag, mailbox, keys.surb_id]
    keytuple = [keys.ktilde, *keys.hop_keys]
    assert sphinxmix_client.receive_surb(params, keytuple, outputs[-1][3]) == b"reply"


def test_relay_command_and_final_routing_encodings_match_sphinxmix_conventions():
    from petlib.pack import encode

    assert S._DEST_FINAL == encode((sphinxmix_client.Dest_flag,))
    mailbox, xid = bytes(range(16)), bytes(range(16, 32))
    surb_final = S._SURB_FINAL_PREFIX + S._BIN8_16 + mailbox + S._BIN8_16 + xid
    assert surb_final == encode((sphinxmix_client.Surb_flag, mailbox, xid))
    assert S._encode_dest_payload(mailbox, b"x" * 300) == encode((mailbox, b"x" * 300))
