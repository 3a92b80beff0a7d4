"""Session fixtures for a private I2P network: one network of i2pd routers per test session.

``i2p_network`` is an :class:`anonmail.testnet.i2p.I2PNetwork` of 3 routers on 127.0.0.1;
``network.settings(i)`` gives the SAM settings of router ``i``. Without an i2pd >= 2.51 the
fixture errors with the message of :func:`anonmail.testnet.i2p.find_i2pd` (run ``make bootstrap``).
Every router is stopped by PID at the end of the session, also when tests fail.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from anonmail.testnet.i2p import I2PNetwork

__all__ = ["i2p_network", "i2p_routers_alive"]

#: Routers in the session's network (2 is the minimum; 3, all floodfill, start reliably).
I2P_TEST_ROUTERS = 3


@pytest.fixture(scope="session")
def i2p_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[I2PNetwork]:
    """A running private I2P network for the whole test session."""
    network = I2PNetwork(I2P_TEST_ROUTERS, base_dir=tmp_path_factory.mktemp("i2pnet"))
    with network:
        yield network


@pytest.fixture(autouse=True)
def i2p_routers_alive(request: pytest.FixtureRequest) -> None:
    """Before each test that uses the network, restart any router that died meanwhile (and say so)."""
    if "i2p_network" not in request.fixturenames:
        return
    network: I2PNetwork = request.getfixturevalue("i2p_network")
    for note in network.revive():
        sys.stderr.write(f"[i2p_network] {note}\n")
