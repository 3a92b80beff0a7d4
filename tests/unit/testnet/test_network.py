"""anonmail.testnet.network without processes: constructing a Testnet starts and writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anonmail.errors import TestnetError
from anonmail.testnet.network import Testnet
from anonmail.testnet.plan import plan_nodes

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------- Testnet

def _children() -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            pass
    return pids


def test_constructing_a_testnet_starts_nothing(tmp_path):
    before = _children()
    directory = tmp_path / "net"
    net = Testnet(directory, tor=True, i2p=True, mixes_per_layer=2, providers=2, users=3)
    assert _children() == before
    assert not directory.exists()  # nothing written until up()
    assert net.directory == directory.resolve()
    assert net.names == []
    assert [s.name for s in net.specs] == [s.name for s in plan_nodes(tor=True, i2p=True, users=3)]
    state = net.state()
    assert state["phase"] == "new" and state["processes"] == [] and state["daemons"] == {}
    assert state["networks"] == ["tor", "i2p"]
    assert Testnet.__test__ is False


def test_constructing_a_testnet_checks_the_plan(tmp_path):
    with pytest.raises(TestnetError, match="--tor"):
        Testnet(tmp_path / "net", tor=False, i2p=False)
    with pytest.raises(TestnetError, match="--mixes-per-layer"):
        Testnet(tmp_path / "net", mixes_per_layer=0)
    assert not (tmp_path / "net").exists()
