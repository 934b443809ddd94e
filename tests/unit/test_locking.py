"""When a held deploy lock counts as stale, so that --break-lock may break it."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from portable_deploy.facts import LockRecord
from portable_deploy.locking import _stale, boot_id, machine_id

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


def _machine_holder(*, machine: str, boot: str, pid: int, origin: str = "ci") -> LockRecord:
    return LockRecord(
        "t", "alice", origin, pid, time.time() - 5, "app_2", "deploy", machine=machine, boot=boot
    )


def test_a_same_named_other_machine_is_never_judged_by_pid(gone_pid: int) -> None:
    """Two CI runners both called like this one: a lock from the other machine id is not stale,
    even though a process with its pid does not exist here."""
    other = _machine_holder(
        machine="0" * 32, boot=boot_id(), pid=gone_pid, origin=socket.gethostname()
    )
    if not machine_id():
        pytest.skip("this machine has no /etc/machine-id")
    assert _stale(other, TTL) is False


def test_a_lock_of_this_machine_from_an_earlier_boot_is_stale() -> None:
    """Same machine id, another boot id: the process that took it cannot be running."""
    rebooted = _machine_holder(machine=machine_id(), boot="f" * 32, pid=os.getpid())
    assert _stale(rebooted, TTL) is True


def test_a_lock_of_this_machine_and_boot_is_judged_by_pid(gone_pid: int) -> None:
    """Same machine and boot: stale exactly when the pid is gone, whatever the host name."""
    alive = _machine_holder(machine=machine_id(), boot=boot_id(), pid=os.getpid())
    gone = _machine_holder(machine=machine_id(), boot=boot_id(), pid=gone_pid)
    assert (_stale(alive, TTL), _stale(gone, TTL)) == (False, True)
