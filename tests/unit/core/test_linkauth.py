"""The link handshake alone: both ends authenticated, every bad input a typed error."""

from __future__ import annotations

import pytest

from anonmail.core.linkauth import (
    MESSAGE_BYTES,
    LinkHandshake,
    decode_message,
    encode_message,
    generate_link_secret,
    link_public,
)
from anonmail.errors import LinkAuthError

pytestmark = pytest.mark.unit

A, B, C = (generate_link_secret() for _ in range(3))


def _run(initiator: LinkHandshake, responder: LinkHandshake) -> list[bytes]:
    m1 = initiator.start()
    m2 = responder.receive(m1)
    m3 = initiator.receive(m2)
    assert responder.receive(m3) is None
    return [m1, m2, m3]


def test_both_ends_learn_each_others_link_key():
    i = LinkHandshake(True, A, expected_peer=link_public(B))
    r = LinkHandshake(False, B)
    messages = _run(i, r)
    assert [len(m) for m in messages] == list(MESSAGE_BYTES)
    assert i.finished and r.finished
    assert i.peer_key == link_public(B) and r.peer_key == link_public(A)


def test_wrong_key_at_the_dialled_address_is_refused_by_the_initiator():
    i = LinkHandshake(True, A, expected_peer=link_public(C))
    r = LinkHandshake(False, B)
    with pytest.raises(LinkAuthError) as err:
        i.receive(r.receive(i.start()))
    assert err.value.reason == "wrong_key" and not i.finished


def test_replayed_handshake_messages_fail_at_the_responder():
    i = LinkHandshake(True, A, expected_peer=link_public(B))
    m1, _, m3 = _run(i, LinkHandshake(False, B))
    replay = LinkHandshake(False, B)
    replay.receive(m1)  # the responder answers with a fresh ephemeral key ...
    with pytest.raises(LinkAuthError) as err:
        replay.receive(m3)  # ... so the recorded third message no longer verifies
    assert err.value.reason == "bad_message" and replay.peer_key is None


@pytest.mark.parametrize("cut", [0, 1, 31])
def test_truncated_messages_are_refused(cut):
    r = LinkHandshake(False, B)
    with pytest.raises(LinkAuthError) as err:
        r.receive(LinkHandshake(True, A, expected_peer=link_public(B)).start()[:cut])
    assert err.value.reason == "truncated"


def test_oversized_messages_are_refused_before_parsing():
    i = LinkHandshake(True, A, expected_peer=link_public(B))
    with pytest.raises(LinkAuthError) as err:
        LinkHandshake(False, B).receive(i.start() + b"\x00")
    assert err.value.reason == "oversized"
    with pytest.raises(LinkAuthError) as err:
        decode_message({"type": "link_auth", "msg": "A" * 100_000}, 0)
    assert err.value.reason == "oversized"


def test_garbage_low_order_keys_and_out_of_turn_messages_are_typed_errors():
    r = LinkHandshake(False, B)
    with pytest.raises(LinkAuthError):
        r.receive(bytes(32))  # the all-zero point as ephemeral key
    i = LinkHandshake(True, A, expected_peer=link_public(B))
    with pytest.raises(LinkAuthError) as err:
        i.receive(bytes(96))  # before start
    assert err.value.reason == "unexpected"
    i.start()
    with pytest.raises(LinkAuthError) as err:
        i.receive(b"\x01" * 96)
    assert err.value.reason == "bad_message"


def test_control_encoding_round_trips_and_rejects_other_shapes():
    message = LinkHandshake(True, A, expected_peer=link_public(B)).start()
    assert decode_message(encode_message(message), 0) == message
    for bad, reason in [({"type": "hello", "msg": ""}, "unexpected"),
                        ({"type": "link_auth", "msg": "!!"}, "bad_message"),
                        ({"type": "link_auth", "msg": "AAAA"}, "truncated"),
                        ({"type": "link_auth", "msg": 5}, "unexpected"),
                        ({"type": "link_auth", "msg": "", "x": 1}, "unexpected")]:
        with pytest.raises(LinkAuthError) as err:
            decode_message(bad, 0)
        assert err.value.reason == reason, bad
