"""Session fixtures for a private Tor network on 127.0.0.1 (one network per test session).

``tor_network`` starts 1 authority + 4 relays (:class:`anonmail.testnet.tor.TorNetwork`);
``tor_clients`` adds two client tors on it: ``server`` (control port only, hosts onion
services) and ``client`` (control and SOCKS ports, connects). Teardown stops every tor by PID,
also when tests fail; an interrupted session is cleaned up by the atexit hooks.
"""

from __future__ import annotations

import shutil

import pytest

from anonmail.testnet.tor import TorClient, TorNetwork

__all__ = ["tor_network", "tor_clients"]


@pytest.fixture(scope="session")
def tor_network(tmp_path_factory: pytest.TempPathFactory):
    """A running private Tor network whose consensus lists all its relays."""
    for binary in ("tor", "tor-gencert"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (scripts/bootstrap.sh installs it)")
    network = TorNetwork(relays=4, authorities=1, base_dir=tmp_path_factory.mktemp("tornet"))
    try:
        network.start()
        yield network
    finally:
        network.stop()


@pytest.fixture(scope="session")
def tor_clients(tor_network: TorNetwork) -> tuple[TorClient, TorClient]:
    """(server, client): two bootstrapped client tors of the session's network."""
    server, client = tor_network.launch_clients([("server", False), ("client", True)])
    return server, client
