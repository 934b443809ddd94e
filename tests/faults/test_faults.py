"""The fault suite: a deploy or rollback that dies at each step boundary, under a writer of
numbered rows and a reader of the version, on the real sandbox VM.

For every case: the app answered with the old or the new release and nothing else; no
acknowledged row is lost; the host heals by itself (within the confirm timeout when the deployer
died after the switch); it has exactly one attached release and every image under a release name
matches its signed sha256; the next plain `invoke deploy` succeeds. Each case runs once here;
bench/faults.py runs them N times and measures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from portable_deploy.sandbox import VM
from tests.faults.harness import (
    CASES,
    CONFIRM_TIMEOUT,
    CUT,
    DISK_FULL,
    KILL_LITESTREAM,
    REBOOT,
    SIGKILL,
    Case,
    Load,
    Outcome,
    audit_tail,
    no_fault_left,
    prepare,
    run_case,
    shown,
    ssh,
)
from tests.project import Project, make_project

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def project(sandbox_vm: VM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    p = make_project(sandbox_vm, tmp_path_factory.mktemp("faults"))
    p.reset()
    prepare(p)
    yield p
    p.reset()
    ssh(p, "rm -f /etc/default/scoreboard")


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    return " ".join(lines[0].split())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_fault_heals_and_loses_nothing(project: Project, case: Case) -> None:
    """The host heals by itself to the old or the new release, every acknowledged row is kept,
    every image matches its signature, and the next plain deploy succeeds."""
    with no_fault_left(project):
        outcome = run_case(project, case, f"f{CASES.index(case):02d}", Load.SUITE_PACE)
    assert outcome.problems == [], f"{outcome.problems}; {shown(outcome)}"
    _expected_ending(project, outcome)


def _expected_ending(project: Project, o: Outcome) -> None:
    """How each kind of case ends for the deployer, and which release it leaves live."""
    c = o.case
    if c.fault == SIGKILL:
        assert o.exit_code == -9, shown(o)
        if c.after_switch:  # the host's dead-man switch put the old release back, freed the lock
            assert o.live == o.old and not o.lock_held, shown(o)
            record = audit_tail(project, 2)[0]  # the next plain deploy's record comes last
            assert record["result"] == "rolled-back", record
            assert f"for {CONFIRM_TIMEOUT}s" in record["message"]
            assert "dead-man switch" in record["message"]
    elif c.fault == CUT and o.exit_code == 0:
        # The cut came while the deployer was idle (stopped at its boundary): its next command
        # found the connection closed, opened a new one, and the task went on to its end.
        assert o.live == o.new, shown(o)
    elif c.fault == CUT and c.where == "rolling-back":
        # The release failed verification; its rollback lost the connection and ran again on a
        # new one.
        line = _one_line(o.stderr)
        assert o.exit_code == 1 and f"rolled back, scoreboard_{o.old} is live" in line, shown(o)
        assert o.live == o.old
    elif c.fault == CUT:
        assert o.exit_code == 1, shown(o)
        line = _one_line(o.stderr)
        assert "SSH connection" in line or "lost its connection" in line, line
        if c.after_switch:
            assert o.live == o.old, shown(o)
    elif c.fault == DISK_FULL:
        # One line naming the disk; the partial upload deleted, the failure audited.
        assert o.exit_code == 1 and "disk full" in _one_line(o.stderr), shown(o)
        assert o.live == o.old and not o.lock_held and o.staged == []
        record = audit_tail(project, 2)[0]
        assert (record["release"], record["result"]) == (f"scoreboard_{o.new}", "failed")
    elif c.fault == REBOOT:
        assert o.live == o.old, shown(o)
        record = audit_tail(project, 2)[0]
        assert record["result"] == "rolled-back" and "dead-man switch" in record["message"]
    elif c.fault == KILL_LITESTREAM:
        assert project.unit("scoreboard-litestream.service", "ActiveState") == "active"
    else:  # the release itself is broken
        line = _one_line(o.stderr)
        assert o.exit_code == 1 and f"rolled back, scoreboard_{o.old} is live" in line, shown(o)
        assert o.live == o.old
