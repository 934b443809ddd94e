"""status, audit and the lock's tasks against the recording fake host: what they run, in order."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from portable_deploy import pipeline
from portable_deploy.commands import lock
from portable_deploy.commands import status as status_commands
from portable_deploy.commands.state import SECTION
from portable_deploy.errors import LockHeld
from portable_deploy.host import Result

from .conftest import FakeHost, config

UNITS = "".join(
    f"Id={name}\nLoadState=loaded\nActiveState=active\nSubState={sub}\nResult=success\n"
    f"NRestarts=0\nMainPID=42\nActiveEnterTimestamp=@1790000000\n{extra}\n"
    for name, sub, extra in [
        ("scoreboard-http.socket", "listening", "Listen=[::]:80 (Stream)\n"),
        ("scoreboard-litestream.service", "running", "MemoryCurrent=2000000\n"),
        ("scoreboard.service", "running", "MemoryCurrent=9000000\n"),
    ]
)
REPORT = (
    f"{SECTION}now\n1790003600\n{SECTION}units\n{UNITS}{SECTION}images\n"
    f"1000 /var/lib/portables/scoreboard_1.raw\n{SECTION}releases-dir\n8\t/x\n"
    f"{SECTION}disk\n/dev/vda 3000000 1000000 2000000 34% /\n{SECTION}lock\n"
)


def answer_report(host: FakeHost) -> None:
    """The state read with status's sections after it, as the host prints them."""
    host.fail(status_commands.report, Result(host.state("").stdout + REPORT, "", 0))


def test_status_reads_a_host_in_one_command_and_one_get(tmp_path: Path, live_v1: FakeHost) -> None:
    """One remote command (state and units together), then one GET of the health path."""
    answer_report(live_v1)
    s = pipeline.status_on(live_v1, config(tmp_path))
    assert len(live_v1.log) == 2 and SECTION in live_v1.log[0]
    assert live_v1.log[1] == "GET :80/healthz"
    assert s.live == "scoreboard_1" and s.health == ("/healthz", 200, 200)
    assert [u.name for u in s.units if u.state is None] == ["scoreboard-restore.service"]


def test_status_of_a_host_with_nothing_live_asks_no_health_check(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """Nothing attached: one command, no GET, and the host is unhealthy."""
    live_v1.live = None
    answer_report(live_v1)
    s = pipeline.status_on(live_v1, config(tmp_path))
    assert len(live_v1.log) == 1 and s.live is None and s.health is None


def _lock(age: float, machine: str = "f" * 32) -> Result:
    record = {"token": "tok-1", "user": "bob", "origin": "ci-7", "pid": 4242,
              "at": time.time() - age, "release": "scoreboard_9", "command": "deploy",
              "machine": machine, "boot": "b" * 32}  # fmt: skip
    return Result(json.dumps(record) + "\n", "", 0)


def test_lock_release_removes_a_lock_older_than_the_ttl(tmp_path: Path, live_v1: FakeHost) -> None:
    """An old lock of another machine: read, then removed by its token (as --break-lock does)."""
    live_v1.fail(lock.read, _lock(age=10_000))
    holder, why = pipeline.release_lock_on(live_v1, config(tmp_path)) or (None, "")
    assert holder is not None and holder.user == "bob" and "lock_ttl" in why
    assert len(live_v1.log) == 2 and live_v1.log[1].endswith("tok-1")


def test_lock_release_refuses_a_young_lock_of_another_machine(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """A young lock of another machine stays: refused with its holder, nothing removed."""
    live_v1.fail(lock.read, _lock(age=5))
    with pytest.raises(LockHeld, match=r"held by bob@ci-7 \(pid 4242\).*not stale") as e:
        pipeline.release_lock_on(live_v1, config(tmp_path))
    assert e.value.hint and "lock_ttl" in e.value.hint
    assert len(live_v1.log) == 1


def test_lock_release_with_no_lock_changes_nothing(tmp_path: Path, live_v1: FakeHost) -> None:
    """No lock: one read, nothing removed."""
    assert pipeline.release_lock_on(live_v1, config(tmp_path)) is None
    assert len(live_v1.log) == 1


def test_lock_status_reads_only(tmp_path: Path, live_v1: FakeHost) -> None:
    """lock.status: the holder and that it is not stale, from one read."""
    live_v1.fail(lock.read, _lock(age=5))
    found = pipeline.lock_on(live_v1, config(tmp_path))
    assert found is not None and found[0].origin == "ci-7" and found[1] is None
    assert len(live_v1.log) == 1


def test_audit_reads_the_log_with_the_state(tmp_path: Path, live_v1: FakeHost) -> None:
    """audit: the records of the state read, oldest first, in one command."""
    records = pipeline.audit_on(live_v1, config(tmp_path))
    assert [r.release for r in records] == ["scoreboard_1"] and len(live_v1.log) == 1
