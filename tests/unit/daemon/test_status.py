"""anonmail.daemon.status: which PIDs count as running (zombies do not)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from anonmail.daemon.status import liveness, pid_alive

pytestmark = pytest.mark.unit


@pytest.fixture
def zombie() -> int:
    """The PID of a child that exited and is not reaped yet (a zombie)."""
    child = subprocess.Popen(["true"])
    try:
        for _ in range(200):
            with open(f"/proc/{child.pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        else:
            pytest.fail("the child did not become a zombie")
        yield child.pid
    finally:
        child.wait()


def test_pid_alive():
    assert pid_alive(os.getpid()) is True
    assert pid_alive(None) is False
    assert pid_alive(0) is False
    child = subprocess.Popen(["true"])
    child.wait()
    assert pid_alive(child.pid) is False  # reaped: gone (a recycled PID is very unlikely this fast)


def test_pid_alive_refuses_what_is_not_a_pid():
    assert not any(pid_alive(value) for value in (True, -1, "123", 1.5, [os.getpid()]))


def test_pid_alive_is_false_for_a_zombie(zombie):
    assert pid_alive(zombie) is False


def test_a_fresh_status_of_a_zombie_is_not_running(zombie):
    now = time.time()
    assert liveness({"running": True, "pid": zombie, "updated_at": now}, now=now)[0] is False
    assert liveness({"running": True, "pid": os.getpid(), "updated_at": now}, now=now)[0] is True
