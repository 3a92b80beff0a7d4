"""Text from strangers is escaped before it reaches a terminal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anonmail.core.display import body_for_terminal, for_terminal


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain subject", "plain subject"),
    ("\x1b]52;c;ZXZpbA==\x07", "\\x1b]52;c;ZXZpbA==\\x07"),     # OSC 52 clipboard write
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),                       # clear screen
    ("a\rFrom: bank", "a\\x0dFrom: bank"),                      # overwrite the line
    ("\x9b31m", "\\x9b31m"),                                    # C1 CSI
    ("abc\u202egnp.exe", "abc\\u202egnp.exe"),                  # bidi override
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("line\u2028sep", "line\\u2028sep"),
    ("café ✓ 日本", "café ✓ 日本"),                              # printable Unicode stays
])
def test_subjects(raw, shown):
    assert for_terminal(raw) == shown


def test_bodies_keep_lines_and_tabs_and_show_bad_bytes():
    assert body_for_terminal(b"a\tb\nc\x1b[0m\xff\n") == "a\tb\nc\\x1b[0m\\xff\n"


@given(st.text())
def test_nothing_a_terminal_acts_on_survives(text):
    shown = for_terminal(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "\u202e" not in shown and "\u2066" not in shown
