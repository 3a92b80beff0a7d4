"""The anonmail command line in-process: bad arguments are one-line errors; no command prints help."""

from __future__ import annotations

import pytest

from anonmail.cli import main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["bench", "--scale", "0"], "greater than 0"),
        (["bench", "--scale", "abc"], "not a number"),
        (["demo", "--delay-mean", "-1"], ">= 0"),
        (["demo", "--size", "x"], "not an integer"),
        (["demo", "--network", "carrier-pigeon"], "invalid choice"),
        (["demo", "--loss", "1.5"], "[0, 1)"),
        (["demo", "--messages", "0"], ">= 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "bench" in capsys.readouterr().err
