"""When a held deploy lock counts as stale, so that --break-lock may break it."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portable_deploy.facts import LockRecord
from portable_deploy.locking import _held_message, _read_id, _stale, boot_id, machine_id

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


def test_a_lock_exactly_ttl_old_is_not_yet_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stale means older than lock_ttl: a lock exactly lock_ttl seconds old still holds."""
    monkeypatch.setattr("portable_deploy.locking.time.time", lambda: 10_000.0)
    young = LockRecord("t", "alice", "elsewhere", 7, 10_000.0 - TTL, "app_2", "deploy")
    assert _stale(young, TTL) is False
    assert _stale(dataclasses.replace(young, at=young.at - 0.5), TTL) is True


def test_a_local_owner_that_may_not_be_signalled_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """A young local lock whose pid exists but refuses our signal (EPERM): its owner lives."""

    def refuse(pid: int, signal: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("portable_deploy.locking.os.kill", refuse)
    assert _stale(holder(age=5, origin=socket.gethostname(), pid=4242), TTL) is False


@pytest.fixture
def tokyo_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The local time zone is UTC+9 for the test (a POSIX TZ: no tzdata needed)."""
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tokyo_time")
def test_the_held_message_names_the_holder_and_the_time_in_utc() -> None:
    """Who holds the lock, since when (UTC whatever the local zone), doing what, and the hint."""
    record = LockRecord("t", "alice", "laptop", 42, 86_400.0, "app_2", "deploy")
    assert _held_message("web", record, TTL, break_lock=False) == (
        "[web] deploy lock held by alice@laptop (pid 42) since 1970-01-02 00:00:00 UTC, running "
        "`deploy` for app_2 (hint: wait for it; if its owner (on another machine) is gone, retry with --break-lock)"
    )


def test_this_machine_and_boot_are_read_from_the_system() -> None:
    """machine_id() is /etc/machine-id, boot_id() this boot's id, both without the newline."""
    assert boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip() != ""
    if Path("/etc/machine-id").exists():
        assert machine_id() == Path("/etc/machine-id").read_text().strip()


def test_an_unreadable_id_is_empty(tmp_path: Path) -> None:
    """A machine without /etc/machine-id has the id "" (and then the host name decides)."""
    assert _read_id(str(tmp_path / "machine-id")) == ""
