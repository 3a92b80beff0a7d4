"""The network's traffic parameters: in the signed consensus, voted by median, stricter-only for agents."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from anonmail.core import pki
from anonmail.core.params import DEFAULT_PARAMS, NetworkParams, median_params, params_from_dict, stricter
from anonmail.errors import DirectoryError
from tests.unit.core.test_pki import EPOCH, NOW, PINNED, make, signed

pytestmark = pytest.mark.unit

CUSTOM = NetworkParams(lambda_payload=4.0, lambda_loop=1.0, mix_lambda_loop=0.5, delay_mean=1.5, max_delay=20.0,
                       fetch_interval=3.0, fetch_batch=48)


def custom_network() -> pki.Consensus:
    nodes = [make(i) for i in range(6)] + [make(10, role="provider")]
    return pki.build_consensus(EPOCH, 600, nodes, CUSTOM)


def test_every_consensus_carries_the_parameters_and_they_survive_verification():
    consensus = custom_network()
    assert consensus.to_dict()["params"] == {
        "lambda_payload": 4.0, "lambda_loop": 1.0, "mix_lambda_loop": 0.5, "delay_mean": 1.5,
        "max_delay": 20.0, "fetch_interval": 3.0, "fetch_batch": 48}
    accepted = pki.verify_consensus(consensus.to_dict(), signed(consensus), authorities=PINNED, threshold=2,
                                    now=NOW, production=False)
    assert accepted.params == CUSTOM
    assert accepted.params.max_delay_ms == 20_000


@pytest.mark.parametrize("field, value", [("lambda_payload", 0.5), ("lambda_loop", 0.0), ("max_delay", 3600.0),
                                          ("delay_mean", 0.01), ("fetch_interval", 600.0), ("fetch_batch", 1),
                                          ("mix_lambda_loop", 0.0)])
def test_tampering_with_a_parameter_breaks_the_signatures(field, value):
    # Attack: a relay (or a provider serving the document) lowers the cover rates or raises the
    # maximum delay for its victims; the authorities' signatures must no longer verify.
    consensus = custom_network()
    document = copy.deepcopy(consensus.to_dict())
    document["params"][field] = value
    with pytest.raises(DirectoryError) as info:
        pki.verify_consensus(document, signed(consensus), authorities=PINNED, threshold=2, now=NOW, production=False)
    assert info.value.reason == "too_few_signatures"


def test_a_document_without_parameters_or_with_bad_ones_is_malformed():
    consensus = custom_network()
    for mutate in (lambda d: d.pop("params"), lambda d: d["params"].pop("max_delay"),
                   lambda d: d["params"].update(max_delay=-1.0), lambda d: d["params"].update(fetch_batch=1.5),
                   lambda d: d["params"].update(delay_mean=25.0), lambda d: d["params"].update(extra=1),
                   lambda d: d["params"].update(lambda_payload="4.0"), lambda d: d["params"].update(fetch_batch=True)):
        document = copy.deepcopy(consensus.to_dict())
        mutate(document)
        with pytest.raises(DirectoryError) as info:
            pki.verify_consensus(document, signed(consensus), authorities=PINNED, threshold=2, now=NOW,
                                 production=False)
        assert info.value.reason in {"malformed", "too_few_signatures"}


def test_params_from_dict_round_trips_and_refuses_out_of_range():
    assert params_from_dict(CUSTOM.to_dict()) == CUSTOM
    with pytest.raises(DirectoryError, match="lambda_payload"):
        params_from_dict({**CUSTOM.to_dict(), "lambda_payload": 0.0})
    with pytest.raises(DirectoryError, match="delay_mean"):
        params_from_dict({**CUSTOM.to_dict(), "delay_mean": 30.0})


def test_median_of_votes_outvotes_one_authority():
    liar = dataclasses.replace(DEFAULT_PARAMS, lambda_payload=0.01, lambda_loop=0.0, max_delay=86400.0)
    assert median_params([DEFAULT_PARAMS, DEFAULT_PARAMS, liar]) == DEFAULT_PARAMS
    assert median_params([liar, DEFAULT_PARAMS, DEFAULT_PARAMS]) == DEFAULT_PARAMS
    low = dataclasses.replace(DEFAULT_PARAMS, lambda_payload=1.0)
    high = dataclasses.replace(DEFAULT_PARAMS, lambda_payload=3.0)
    assert median_params([high, low, DEFAULT_PARAMS]).lambda_payload == 2.0
    assert median_params([]) == DEFAULT_PARAMS
    # The per-field medians can break mean <= max: the mean is lowered to the enforced maximum.
    a = NetworkParams(delay_mean=5.0, max_delay=5.0)
    b = NetworkParams(delay_mean=8.0, max_delay=8.0)
    c = NetworkParams(delay_mean=9.0, max_delay=2.0)
    merged = median_params([a, b, c])
    merged.check()
    assert merged.max_delay == 5.0 and merged.delay_mean == 5.0


def test_stricter_raises_weaker_local_values_and_keeps_stricter_ones():
    network = NetworkParams(lambda_payload=2.0, lambda_loop=0.5, delay_mean=0.5, max_delay=10.0, fetch_interval=5.0)
    weak = NetworkParams(lambda_payload=0.5, lambda_loop=0.1, delay_mean=0.1, max_delay=10.0, fetch_interval=60.0)
    effective, raised = stricter(weak, network)
    assert (effective.lambda_payload, effective.lambda_loop, effective.delay_mean, effective.fetch_interval) == (
        2.0, 0.5, 0.5, 5.0)
    assert set(raised) == {"lambda_payload", "lambda_loop", "delay_mean", "fetch_interval"}
    strict = NetworkParams(lambda_payload=5.0, lambda_loop=1.0, delay_mean=50.0, max_delay=50.0, fetch_interval=1.0)
    effective, raised = stricter(strict, network)
    assert raised == []
    assert (effective.lambda_payload, effective.lambda_loop, effective.fetch_interval) == (5.0, 1.0, 1.0)
    assert effective.delay_mean == 10.0  # never above the published maximum: mixes would drop it
    assert effective.max_delay == 10.0 and effective.fetch_batch == network.fetch_batch
