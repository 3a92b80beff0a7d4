"""Fixtures for tests against real tor and i2pd daemons on private loopback networks.

The session-scoped network fixtures live beside the tests that need them and are re-exported
here so every integration test module can use them.
"""

from __future__ import annotations

from tests.integration.i2p_fixtures import *  # noqa: F401,F403
from tests.integration.tor_fixtures import *  # noqa: F401,F403
