"""When a held deploy lock counts as stale, so that --break-lock may break it."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from portable_deploy.facts import LockRecord
from portable_deploy.locking import _stale

TTL = 900


def holder(*, age: float, origin: str, pid: int) -> LockRecord:
    return LockRecord("t", "alice", origin, pid, time.time() - age, "app_2", "deploy")


@pytest.fixture(scope="module")
def gone_pid() -> int:
    """The pid of a process of this machine that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_lock_older_than_the_ttl_is_stale() -> None:
    """Older than lock_ttl: stale, whoever holds it and wherever."""
    assert _stale(holder(age=TTL + 5, origin="elsewhere", pid=os.getpid()), TTL) is True


def test_a_young_lock_of_a_live_local_process_is_not_stale() -> None:
    """Young and held by a running pid on this machine: not stale."""
    assert _stale(holder(age=5, origin=socket.gethostname(), pid=os.getpid()), TTL) is False


def test_a_young_lock_of_a_local_process_that_is_gone_is_stale(gone_pid: int) -> None:
    """Young, taken from this machine, and its pid no longer runs: stale."""
    assert _stale(holder(age=5, origin=socket.gethostname(), pid=gone_pid), TTL) is True


def test_a_young_lock_from_another_machine_is_not_stale(gone_pid: int) -> None:
    """Young and taken elsewhere: this machine cannot tell whether its owner lives, so not stale."""
    assert _stale(holder(age=5, origin="elsewhere", pid=gone_pid), TTL) is False


def test_a_young_lock_of_a_local_process_owned_by_someone_else_is_not_stale() -> None:
    """pid 1 runs (signalling it may be refused): a live owner, not stale."""
    assert _stale(holder(age=5, origin=socket.gethostname(), pid=1), TTL) is False
