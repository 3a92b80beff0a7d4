"""The directory protocol's messages: round trips and strict refusal of anything else."""

from __future__ import annotations

import pytest

from anonmail.core import dirproto as D
from anonmail.errors import DirectoryError

DIGEST = "ab" * 32

REQUESTS = [
    D.UploadDescriptor({"name": "mix-1"}),
    D.GetConsensus(7),
    D.GetDescriptors(7),
    D.GetDescriptors(7, 1234.5),
    D.GetSignature(7, DIGEST),
    D.GetVote(7, 420),
    D.GetVotes(7, 420),
]
REPLIES = [
    D.Accepted(7),
    D.ConsensusReply(7, {"version": 1}, {"aa": "sig"}),
    D.DescriptorsReply(7, ({"name": "a"}, {"name": "b"})),
    D.SignatureReply(7, DIGEST, "c2ln"),
    D.VoteReply({"epoch": 7}),
    D.VotesReply(({"epoch": 7}, {"epoch": 7, "x": 1})),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_requests_round_trip(request_):
    assert D.parse_request(D.encode(request_)) == request_


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: type(r).__name__)
def test_replies_round_trip(reply):
    assert D.parse_reply(D.encode(reply), type(reply)) == reply


def test_before_is_sent_only_when_set():
    assert D.encode(D.GetDescriptors(3)) == {"type": "get_descriptors", "epoch": 3}


def test_error_reply_parses_to_refused_whatever_was_expected():
    message = {"type": "error", "reason": "too_late", "message": "built"}
    assert D.parse_reply(message, D.Accepted) == D.Refused("too_late", "built")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("get_consensus", "bad_request"),
        ({"type": "launch"}, "unknown_request"),
        ({"epoch": 1}, "unknown_request"),
        ({"type": "get_consensus", "epoch": "soon"}, "bad_request"),
        ({"type": "get_consensus", "epoch": -1}, "bad_request"),
        ({"type": "get_consensus", "epoch": True}, "bad_request"),
        ({"type": "get_consensus", "epoch": 1, "extra": 0}, "bad_request"),
        ({"type": "get_descriptors", "epoch": 1, "before": "x"}, "bad_request"),
        ({"type": "get_descriptors", "epoch": 1, "before": float("nan")}, "bad_request"),
        ({"type": "get_signature", "epoch": 1, "digest": "00"}, "bad_request"),
        ({"type": "get_signature", "epoch": 1, "digest": "AB" * 32}, "bad_request"),
        ({"type": "upload_descriptor", "descriptor": []}, "bad_request"),
        ({"type": "get_vote", "epoch": 1}, "bad_request"),
        ({"type": "get_votes", "epoch": 1, "point": -5}, "bad_request"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(message, reason):
    with pytest.raises(DirectoryError) as info:
        D.parse_request(message)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("message", "expect"),
    [
        ([], D.Accepted),
        ({"type": "consensus", "epoch": 1, "document": {}, "signatures": {}}, D.Accepted),
        ({"type": "accepted"}, D.Accepted),
        ({"type": "consensus", "epoch": 1, "document": {}, "signatures": {"a": 1}}, D.ConsensusReply),
        ({"type": "consensus", "epoch": 1, "document": [], "signatures": {}}, D.ConsensusReply),
        ({"type": "descriptors", "epoch": 1, "descriptors": [1]}, D.DescriptorsReply),
        ({"type": "signature", "epoch": 1, "digest": DIGEST}, D.SignatureReply),
        ({"type": "error", "reason": "Bad Reason", "message": "x"}, D.Accepted),
        ({"type": "error", "reason": "x"}, D.Accepted),
        ({"type": "votes", "votes": {}}, D.VotesReply),
        ({"type": "vote", "vote": "x"}, D.VoteReply),
    ],
)
def test_bad_replies_are_refused(message, expect):
    with pytest.raises(DirectoryError) as info:
        D.parse_reply(message, expect)
    assert info.value.reason == "bad_reply"


def test_a_long_error_message_is_cut():
    reply = D.parse_reply({"type": "error", "reason": "x", "message": "m" * 10_000}, D.Accepted)
    assert isinstance(reply, D.Refused) and len(reply.message) == D.MAX_MESSAGE_CHARS
