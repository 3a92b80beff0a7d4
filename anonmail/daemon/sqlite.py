"""One way for every store to open SQLite, write to it and report its failures.

The agent's database, the provider's mailboxes, the mix's replay tags and the authority's
documents are separate files with separate schemas, but they share three rules:

* **Durable pragmas.** ``journal_mode=WAL`` (readers never block the writer),
  ``synchronous=FULL`` where a commit is a promise to someone else (an ACK sent, a replay tag
  recorded before its packet moves on; ``durable=False`` gives ``NORMAL``), ``secure_delete=ON``
  (deleted rows are overwritten, not merely unlinked), ``foreign_keys=ON`` and a busy timeout,
  so two processes on one file (the CLI and a running agent) wait for each other instead of failing.
* **Explicit write transactions.** Connections are in autocommit mode; :func:`transaction`
  wraps a write in ``BEGIN IMMEDIATE … COMMIT`` and rolls back on any exception.
* **Typed errors.** Every :class:`sqlite3.Error` becomes a :class:`~anonmail.errors.StoreError`
  naming the store, the file and what was being done, with a stable ``reason``
  (:func:`store_error`). SQLite's message names tables and constraints, never row data.

Python's ``sqlite3`` is used directly (``sqlite-utils`` wraps a connection opened here where a
store wants its table helpers).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anonmail.errors import StoreError

__all__ = ["connect", "transaction", "translated", "store_error", "PerThread", "BUSY_TIMEOUT_S"]

#: How long a connection waits for another writer before it fails with reason "busy".
BUSY_TIMEOUT_S = 30.0

# SQLite primary result codes (the low byte of an extended code) → StoreError.reason.
_REASONS = {
    3: "permission",  # SQLITE_PERM
    5: "busy",        # SQLITE_BUSY
    6: "busy",        # SQLITE_LOCKED
    8: "read_only",   # SQLITE_READONLY
    10: "io",         # SQLITE_IOERR
    11: "corrupt",    # SQLITE_CORRUPT
    13: "full",       # SQLITE_FULL
    14: "cannot_open",  # SQLITE_CANTOPEN
    19: "constraint",  # SQLITE_CONSTRAINT
    26: "corrupt",    # SQLITE_NOTADB
}


def store_error(store: str, path: Path | str, action: str, exc: sqlite3.Error) -> StoreError:
    """A StoreError saying which store and file failed doing what, so a log line is enough to act on."""
    code = getattr(exc, "sqlite_errorcode", None)
    reason = _REASONS.get(code & 0xFF, "failed") if isinstance(code, int) else "failed"
    return StoreError(f"{store} {path}: cannot {action}: {exc}", reason=reason, path=str(path))


def connect(
    path: Path | str,
    *,
    store: str,
    durable: bool = True,
    secure_delete: bool = True,
    private: bool = False,
) -> sqlite3.Connection:
    """Open (creating if needed) a store's file with the durable pragmas; StoreError if it cannot."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{store} {path}: cannot create its directory: {exc}", reason="cannot_open",
                         path=str(path)) from exc
    try:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise store_error(store, path, "open", exc) from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute(f"PRAGMA secure_delete={'ON' if secure_delete else 'OFF'}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    except sqlite3.Error as exc:
        conn.close()
        raise store_error(store, path, "open", exc) from exc
    if private:
        try:
            path.chmod(0o600)
        except OSError:
            pass  # not ours to change (another user's file we may only read): SQLite already opened it
    return conn


@contextmanager
def transaction(
    conn: sqlite3.Connection, *, store: str, path: Path | str, action: str = "write", keep_integrity: bool = False
) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE … COMMIT`` on an autocommit connection; roll back on any exception.

    SQLite errors raised inside become StoreError; with ``keep_integrity`` an
    :class:`sqlite3.IntegrityError` passes through unchanged, for callers that turn a
    constraint into their own message (a duplicate contact, say).
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise store_error(store, path, action, exc) from exc
    try:
        yield conn
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error) and not (keep_integrity and isinstance(exc, sqlite3.IntegrityError)):
            raise store_error(store, path, action, exc) from exc
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise store_error(store, path, action, exc) from exc


@contextmanager
def translated(store: str, path: Path | str, action: str) -> Iterator[None]:
    """Turn an sqlite3 error raised inside (a read, say) into a StoreError naming store, file and action."""
    try:
        yield
    except sqlite3.Error as exc:
        raise store_error(store, path, action, exc) from exc


class PerThread:
    """One connection per thread to one file, opened on first use by :func:`connect`, all closed together.

    For stores used from worker threads and the event loop at once (the agent, the replay store):
    each thread gets its own connection, so no connection is shared between threads.
    """

    def __init__(self, path: Path | str, *, store: str, **options: bool) -> None:
        self.path = Path(path)
        self.store = store
        self._options = options
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []

    def get(self) -> sqlite3.Connection:
        """This thread's connection (opened now if it has none)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, store=self.store, **self._options)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection (once, when the store is done); a later :meth:`get` opens afresh."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
