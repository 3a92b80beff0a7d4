"""The one SQLite helper every store uses: pragmas, transactions, typed errors."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from anonmail.daemon.sqlite import PerThread, connect, store_error, transaction, translated
from anonmail.errors import StoreError


def pragma(conn: sqlite3.Connection, name: str) -> object:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_connect_sets_the_durable_pragmas(tmp_path):
    conn = connect(tmp_path / "sub" / "a.db", store="test store")
    assert (tmp_path / "sub" / "a.db").exists()
    assert pragma(conn, "journal_mode") == "wal"
    assert pragma(conn, "synchronous") == 2  # FULL
    assert pragma(conn, "secure_delete") == 1
    assert pragma(conn, "foreign_keys") == 1
    assert pragma(conn, "busy_timeout") == 30000
    assert conn.isolation_level is None  # autocommit: writes go through transaction()
    conn.close()


def test_connect_options(tmp_path):
    path = tmp_path / "b.db"
    path.touch(mode=0o644)
    conn = connect(path, store="test store", durable=False, secure_delete=False, private=True)
    assert pragma(conn, "synchronous") == 1  # NORMAL
    assert pragma(conn, "secure_delete") == 0
    assert path.stat().st_mode & 0o777 == 0o600
    conn.close()


def test_a_file_that_is_not_a_database_is_a_typed_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database file, just junk " * 200)
    with pytest.raises(StoreError) as err:
        connect(path, store="replay store")
    assert err.value.reason == "corrupt"
    assert err.value.path == str(path)
    assert str(err.value).startswith(f"replay store {path}: cannot open: ")


def test_transaction_commits_and_rolls_back(tmp_path):
    conn = connect(tmp_path / "t.db", store="test store")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    with transaction(conn, store="test store", path="t.db") as c:
        c.execute("INSERT INTO t VALUES (1, 'one')")
    with pytest.raises(RuntimeError), transaction(conn, store="test store", path="t.db") as c:
        c.execute("INSERT INTO t VALUES (2, 'two')")
        raise RuntimeError("caller's own failure: rolled back, passed on unchanged")
    assert not conn.in_transaction
    assert conn.execute("SELECT k FROM t").fetchall() == [(1,)]


def test_sqlite_errors_inside_a_transaction_become_store_errors(tmp_path):
    conn = connect(tmp_path / "t.db", store="mailbox store")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(StoreError) as err, transaction(conn, store="mailbox store", path="t.db", action="store"):
        conn.execute("INSERT INTO t VALUES (2)")
        conn.execute("INSERT INTO t VALUES (1)")
    assert err.value.reason == "constraint"
    assert "mailbox store t.db: cannot store: UNIQUE constraint failed" in str(err.value)
    assert isinstance(err.value.__cause__, sqlite3.IntegrityError)
    assert conn.execute("SELECT k FROM t").fetchall() == [(1,)]  # the whole transaction rolled back
    # keep_integrity lets a caller turn the constraint into its own message.
    with pytest.raises(sqlite3.IntegrityError), transaction(conn, store="s", path="t.db", keep_integrity=True):
        conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction


def test_a_second_writer_waits_then_fails_busy(tmp_path, monkeypatch):
    monkeypatch.setattr("anonmail.daemon.sqlite.BUSY_TIMEOUT_S", 0.05)
    first = connect(tmp_path / "w.db", store="agent store")
    second = connect(tmp_path / "w.db", store="agent store")
    first.execute("CREATE TABLE t (k INTEGER)")
    with transaction(first, store="agent store", path="w.db"):
        first.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(StoreError) as err, transaction(second, store="agent store", path="w.db"):
            pass
    assert err.value.reason == "busy"
    with transaction(second, store="agent store", path="w.db"):  # free again once the first committed
        second.execute("INSERT INTO t VALUES (2)")
    assert sorted(first.execute("SELECT k FROM t").fetchall()) == [(1,), (2,)]


def test_translated_reads(tmp_path):
    conn = connect(tmp_path / "r.db", store="authority store")
    with pytest.raises(StoreError) as err, translated("authority store", "r.db", "read descriptors"):
        conn.execute("SELECT * FROM missing")
    assert str(err.value) == "authority store r.db: cannot read descriptors: no such table: missing"
    assert err.value.reason == "failed"


def test_store_error_without_an_sqlite_code():
    assert store_error("s", "p", "x", sqlite3.Error("plain")).reason == "failed"


def test_per_thread_connections(tmp_path):
    pool = PerThread(tmp_path / "p.db", store="replay store")
    main = pool.get()
    assert pool.get() is main
    seen: list[sqlite3.Connection] = []
    worker = threading.Thread(target=lambda: seen.append(pool.get()))
    worker.start()
    worker.join()
    assert seen and seen[0] is not main
    pool.close()
    with pytest.raises(sqlite3.ProgrammingError):
        main.execute("SELECT 1")
    assert pool.get() is not main  # reopens after close
    pool.close()
