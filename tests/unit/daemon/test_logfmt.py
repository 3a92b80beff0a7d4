"""The daemons' logfmt lines: one line per record, parseable, stem kept quiet."""

from __future__ import annotations

import logging
import re
import shlex

import pytest

from anonmail.daemon.logfmt import LogfmtFormatter, configure_daemon_logging

pytestmark = pytest.mark.unit


def _record(msg: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("mixnode.node", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_a_record_is_one_logfmt_line_that_parses_back():
    line = LogfmtFormatter().format(_record('link to %s failed: "%s"\nnext', "mix2a", "timeout"))
    assert "\n" not in line
    fields = dict(part.split("=", 1) for part in shlex.split(line.replace("\\n", "\n")))
    assert fields["level"] == "WARNING" and fields["logger"] == "mixnode.node"
    assert fields["msg"] == 'link to mix2a failed: "timeout"\nnext'
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["ts"])
    assert fields["pid"].isdigit()


def test_plain_values_stay_unquoted_and_exceptions_give_their_type_only():
    try:
        raise TimeoutError("secret detail")
    except TimeoutError:
        import sys

        line = LogfmtFormatter().format(_record("ok", exc_info=sys.exc_info()))
    assert " msg=ok" in line and " err=TimeoutError" in line
    assert "secret detail" not in line  # no traceback text above DEBUG


def test_configure_installs_one_logfmt_handler_and_quiets_stem(capsys):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("stem").level)
    try:
        root.handlers[:] = []  # as in a fresh daemon process
        configure_daemon_logging("INFO")
        configure_daemon_logging("INFO")  # idempotent
        logging.getLogger("stem").info("GETINFO onions/current")
        logging.getLogger("anonmail.agent").info("fetched %d entries", 3)
        err = capsys.readouterr().err
        assert "GETINFO" not in err
        assert len(re.findall(r'level=INFO pid=\d+ logger=anonmail.agent msg="fetched 3 entries"', err)) == 1
        assert len(root.handlers) == 1
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("stem").setLevel(saved[2])


def test_configure_leaves_a_host_programs_handlers_alone():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    marker = logging.NullHandler()
    try:
        root.handlers[:] = [marker]
        configure_daemon_logging("WARNING")
        assert root.handlers == [marker] and root.level == logging.WARNING
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_attack_a_log_file_is_private_to_its_owner(tmp_path):
    """Testnet supervisors append daemon logs to files: another local user must not read them."""
    import os

    from anonmail.daemon.logfmt import open_log_file

    os.umask(0o022)
    path = tmp_path / "node.log"
    path.write_bytes(b"old line\n")  # created 0644 by an older version
    with open_log_file(path) as log:
        log.write(b"new line\n")
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_bytes() == b"old line\nnew line\n"
    fresh = tmp_path / "fresh.log"
    with open_log_file(fresh) as log:
        log.write(b"x\n")
    assert fresh.stat().st_mode & 0o777 == 0o600
