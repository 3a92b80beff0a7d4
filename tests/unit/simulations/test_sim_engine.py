"""The sped-up engine gives the frozen reference engine's JSON, from its pure-Python and compiled loops."""

from __future__ import annotations

import json

import pytest

from simulations.engine import Simulation, compiled_loop
from simulations.metrics import TIMING_FIELDS, summarize
from simulations.model import SimConfig
from simulations.reference import run_reference

pytestmark = pytest.mark.unit

# The reference engine predates issue 15's cover scheme, so it is compared on the legacy one.
LEGACY = {"cover_scheme": "legacy"}
CONFIGS = {
    "small-defaults": SimConfig(clients=40, duration=20.0, entropy_samples=60, **LEGACY),
    "compromised-links-provider-delay": SimConfig(clients=50, duration=30.0, compromised=0.3, link_latency=0.01,
                                                  provider_delay=0.05, seed=3, **LEGACY),
    "no-payload-stream-fragments": SimConfig(clients=40, duration=20.0, lambda_payload=0.0, fragments=3, seed=5,
                                             layers=2, mixes_per_layer=3, **LEGACY),
    "zero-delay": SimConfig(clients=30, duration=20.0, delay_mean=0.0, seed=9, **LEGACY),
    "many-providers-wide-layers": SimConfig(clients=60, duration=20.0, providers=11, mixes_per_layer=12, seed=2,
                                            **LEGACY),
    "four-layers-nothing-traced": SimConfig(clients=100, duration=30.0, fragments=2, layers=4, lambda_mix=0.0,
                                            seed=11, entropy_samples=0, **LEGACY),
    "one-layer-everything-compromised": SimConfig(clients=20, duration=15.0, layers=1, compromised=1.0, seed=4,
                                                  **LEGACY),
}
#: The default cover scheme ("acks"), which the reference cannot run: both current loops must agree.
ACK_CONFIGS = {name: config.with_(cover_scheme="acks") for name, config in CONFIGS.items()}


def canonical(sim) -> str:
    summary = summarize(sim)
    for key in TIMING_FIELDS:
        summary.pop(key)
    return json.dumps(summary, sort_keys=True)


@pytest.fixture(params=["pure", "compiled"])
def loop(request, monkeypatch):
    if request.param == "pure":
        monkeypatch.setenv("ANONMAIL_SIM_PURE", "1")
        assert compiled_loop() is None
    else:
        monkeypatch.delenv("ANONMAIL_SIM_PURE", raising=False)
        if compiled_loop() is None:
            pytest.skip("compiled loop not built (no C compiler at install time)")
    return request.param


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_json_as_the_reference_engine(name, loop):
    config = CONFIGS[name]
    expected = run_reference(config)
    got = Simulation(config).run()
    assert got.events == expected.events
    assert canonical(got) == canonical(expected)


@pytest.mark.parametrize("name", sorted(ACK_CONFIGS))
def test_compiled_and_pure_loops_agree_on_the_ack_scheme(name, monkeypatch):
    if compiled_loop() is None:
        pytest.skip("compiled loop not built (no C compiler at install time)")
    config = ACK_CONFIGS[name]
    compiled = Simulation(config).run()
    monkeypatch.setenv("ANONMAIL_SIM_PURE", "1")
    pure = Simulation(config).run()
    assert compiled.sent[4] > 0  # ACKs were simulated
    assert compiled.events == pure.events
    assert canonical(compiled) == canonical(pure)


def test_other_seed_other_json(loop):
    config = CONFIGS["small-defaults"]
    assert canonical(Simulation(config).run()) != canonical(Simulation(config.with_(seed=2)).run())


def test_compiled_loop_is_built_by_the_install():
    # pip install -e . compiles it (setup.py); without a C compiler the pure loop runs instead.
    module = compiled_loop()
    assert module is not None, "simulations._fastloop missing or stale (an older model): re-run scripts/bootstrap.sh"
    assert module.__file__.endswith((".so", ".pyd"))


def test_a_stale_compiled_loop_is_not_used(monkeypatch):
    # A build left over from an older checkout (pip install -e . not re-run) would silently give
    # the old model's results: the engine falls back to the pure loop instead.
    monkeypatch.delenv("ANONMAIL_SIM_PURE", raising=False)
    module = compiled_loop()
    if module is None:
        pytest.skip("compiled loop not built (no C compiler at install time)")
    monkeypatch.setattr(module, "MODEL", module.MODEL - 1)
    assert compiled_loop() is None
    monkeypatch.delattr(module, "MODEL")
    assert compiled_loop() is None
