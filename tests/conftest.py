"""Project-wide pytest configuration.

Tests are grouped by marker (declared in pyproject.toml): ``unit`` (pure,
sans-IO), ``network`` (in-process networks over test transports) and
``integration`` (real tor and i2pd daemons on loopback). Tests under
``tests/unit/`` that carry none of these get the ``unit`` marker
automatically, so ``pytest -m unit`` selects them.

Async tests run on asyncio in real time, unless marked ``virtual_time``: those run on trio
under a MockClock that jumps whenever every task waits, so timers of minutes take
milliseconds and latencies come out exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio.testing

_UNIT_DIR = Path(__file__).parent / "unit"
_KIND_MARKERS = frozenset({"unit", "network", "integration"})


#: Run last: the heaviest module (a stranger's flood at load 20-30 on 2 cores). The onion tests
#: that ran right after it missed their connect bound in three suite runs (first stream, 30 s;
#: a later one, 3 attempts of 30 s), and never elsewhere.
_RUN_LAST = frozenset({"test_testnet_faults.py"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name in _RUN_LAST)  # stable: the rest keep their order
    for item in items:
        if not item.path.is_relative_to(_UNIT_DIR):
            continue
        if any(m.name in _KIND_MARKERS for m in item.iter_markers()):
            continue
        item.add_marker(pytest.mark.unit)


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """asyncio in real time, or trio in virtual time for tests marked ``virtual_time``."""
    if request.node.get_closest_marker("virtual_time") is not None:
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
    return "asyncio"
