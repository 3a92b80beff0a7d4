"""Containment counts unexpected failures by reason and logs each reason once, without its text."""

from __future__ import annotations

import logging

from anonmail.daemon.containment import FaultCounter, fault_reason


def _fail(value):
    return 1 // value


def test_reason_is_type_and_source_line_never_the_message(caplog):
    faults = FaultCounter(logging.getLogger("test.containment"), "node x")
    caplog.set_level(logging.ERROR, logger="test.containment")
    for _ in range(5):
        try:
            _fail(0)
        except ZeroDivisionError as exc:
            reason = faults.record(exc, "packet")
    try:
        raise ValueError("secret input abc")
    except ValueError as exc:
        other = faults.record(exc)
    assert reason.startswith("ZeroDivisionError") and other == "ValueError"
    assert faults.counts[reason] == 5 and faults.total == 6
    assert len(caplog.records) == 2  # once per reason
    assert "secret input" not in caplog.text
    assert faults.as_dict() == {reason: 5, "ValueError": 1}


def test_reason_names_the_anonmail_frame():
    from anonmail.core import strictjson

    try:
        strictjson.check_tree(object())
    except Exception as exc:  # noqa: BLE001 - the point of the test
        assert "anonmail/core/strictjson.py:" in fault_reason(exc)


def test_reasons_are_bounded():
    faults = FaultCounter(logging.getLogger("test.containment"), "node")
    for i in range(200):
        faults.record(type(f"E{i}", (Exception,), {})())
    assert len(faults.counts) <= 65 and faults.total == 200
