"""How every anonmail daemon logs: one logfmt line per record, on stderr.

``ts=2026-11-22T06:26:44.468Z level=INFO pid=4242 logger=mixnode.node msg="link to mix2a up"``

One format for mix nodes, authorities, providers and agents, so a testnet's logs can be read
and grepped (or parsed) alike. What goes into ``msg`` is the caller's business, and the rule
is: counts, reasons and public node names only; never a user's address, key, contact,
mailbox or message id (tests/network/agent/test_log_hygiene.py checks it). Log files a
supervisor writes (a testnet's) are opened with :func:`open_log_file`: 0600, like status files. stem's own chatter
(every GETINFO) stays below WARNING unless the daemon runs at DEBUG.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import BinaryIO

__all__ = ["LogfmtFormatter", "configure_daemon_logging", "open_log_file"]


def _quote(text: str) -> str:
    if text and all(c.isalnum() or c in "-_./:@+" for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """Format records as logfmt key=value lines (UTC timestamps, quoted values, one line each)."""

    def format(self, record: logging.LogRecord) -> str:
        """One line: ts, level, pid, logger, msg (and err with the exception type, if any)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields = [f"ts={stamp}", f"level={record.levelname}", f"pid={record.process}",
                  f"logger={_quote(record.name)}", f"msg={_quote(record.getMessage())}"]
        if record.exc_info and record.exc_info[0] is not None:
            fields.append(f"err={_quote(record.exc_info[0].__name__)}")
            if record.levelno <= logging.DEBUG:
                fields.append(f"trace={_quote(self.formatException(record.exc_info))}")
        return " ".join(fields)


def configure_daemon_logging(level: str | int = "INFO") -> None:
    """Log the root logger's records to stderr as logfmt lines at ``level``.

    Like ``logging.basicConfig``, it adds its handler only when the root logger has none, so a
    daemon command run inside another program (tests: pytest's capture) leaves that
    program's handlers alone and only sets the levels.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(LogfmtFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.DEBUG if logging.getLevelName(root.level) == "DEBUG" else logging.WARNING
    logging.getLogger("stem").setLevel(quiet)


def open_log_file(path: Path) -> BinaryIO:
    """Open a log file for appending, readable by its owner only (0600, also when it existed wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")
