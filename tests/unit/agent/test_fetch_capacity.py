"""The agent warns when fixed-size fetches cannot keep up with what its own traffic brings back."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from anonmail.agent.config import DEFAULTS
from anonmail.agent.service import Agent, AgentSettings
from anonmail.provider.config import DEFAULT_FETCH_BATCH

pytestmark = pytest.mark.unit


def _warnings(caplog, settings: AgentSettings, batch: int) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anonmail.agent"):
        Agent._check_fetch_capacity(SimpleNamespace(settings=settings), batch)
    return [r.getMessage() for r in caplog.records]


def test_the_defaults_keep_up(caplog):
    settings = AgentSettings(provider="alpha", lambda_payload=DEFAULTS["lambda_payload"],
                             lambda_loop=DEFAULTS["lambda_loop"], fetch_interval=DEFAULTS["fetch_interval"])
    assert _warnings(caplog, settings, DEFAULT_FETCH_BATCH) == []


def test_slow_fetching_is_warned_about_with_the_numbers(caplog):
    # The old defaults: 16 entries every 10 s cannot take 2 ACKs/s (one per slot) plus 0.5 loops/s.
    messages = _warnings(caplog, AgentSettings(provider="alpha", lambda_payload=2.0, lambda_loop=0.5,
                                               fetch_interval=10.0), 16)
    assert len(messages) == 1
    assert "1.6 entries/s (16 per 10 s)" in messages[0] and "2.5/s" in messages[0]
    assert "lower fetch_interval" in messages[0]
