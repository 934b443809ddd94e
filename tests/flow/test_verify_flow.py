"""Verify's settle check: a unit that restarts (or changes its main PID) soon after the health
check fails the release, and the deploy rolls back."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from portable_deploy import pipeline, ui, verify
from portable_deploy.config import VerifyConfig
from portable_deploy.errors import DeployError
from portable_deploy.host import Result
from portable_deploy.release import Options

from .conftest import FakeClock, FakeHost, config, manifest, signed

V2 = manifest("2", app="e")
SWAP = (
    "portablectl reattach --profile pd-hardened --copy=copy --enable /var/lib/portables/scoreboard_2.raw && "
    "systemctl restart scoreboard.service"
)
BACK = (
    "portablectl reattach --profile pd-hardened --copy=copy --enable /var/lib/portables/scoreboard_1.raw && "
    "systemctl restart scoreboard.service"
)


def app_unsettles(host: FakeHost, *, restarts: int, pid: int) -> None:
    """From the second `systemctl show` on, scoreboard.service reports RESTARTS and PID."""
    calls = 0

    def show(line: str) -> Result:
        nonlocal calls
        calls += 1
        blocks = []
        for unit in re.findall(r"(scoreboard[\w-]*\.(?:service|socket))", line):
            app = unit == "scoreboard.service" and calls > 1
            blocks.append(
                f"Id={unit}\nLoadState=loaded\nActiveState=active\nSubState=running\n"
                f"Result=success\nNRestarts={restarts if app else 0}\nMainPID={pid if app else 42}\n"
                "ActiveEnterTimestampMonotonic=1\nActiveEnterTimestamp=x\n"
            )
        return Result("\n".join(blocks), "", 0)

    def back_to_v1(line: str) -> Result:
        host.version = "1"
        return Result("", "", 0)

    host.version = "2"
    host.on(r"systemctl show", show)
    host.on(r"portablectl reattach .*scoreboard_1\.raw", back_to_v1)


@pytest.mark.parametrize(
    ("restarts", "pid", "why"),
    [
        (
            1,
            42,
            "scoreboard.service restarted or stopped within 0.01s of the switch (restarts 0 -> 1)",
        ),
        (
            0,
            43,
            "scoreboard.service changed its main PID within 0.01s of the switch (restart loop?)",
        ),
    ],
    ids=["NRestarts", "MainPID"],
)
def test_a_unit_restarting_during_settle_fails_verify_and_rolls_back(
    tmp_path: Path, live_v1: FakeHost, restarts: int, pid: int, why: str
) -> None:
    """NRestarts or MainPID changing within [verify] settle: scoreboard_1 is put back and audited."""
    app_unsettles(live_v1, restarts=restarts, pid=pid)
    cfg = dataclasses.replace(config(tmp_path), verify=VerifyConfig(settle=0.01, timeout=2))
    with pytest.raises(DeployError) as failed:
        pipeline.deploy_to(live_v1, cfg, signed(V2), Options(), ui.Steps())
    assert failed.value.message == (
        f"[fake] scoreboard_2 failed verification: {why}; rolled back, scoreboard_1 is live"
    )
    verbs = live_v1.verbs()
    verified = ["systemctl show", "GET :80/healthz", "GET :80/version", "systemctl show"]
    [audit_line] = live_v1.audit_lines()
    assert verbs[verbs.index(SWAP) :] == [
        SWAP,
        *verified,
        # The deployer rolls back itself, holding the host's switch back (its heartbeat rides
        # on the rollback's commands) until the rollback is audited.
        "deadman.hold",
        "check-release",  # the rollback checks scoreboard_1 again before reattaching it
        BACK,
        *verified,
        "deadman.disarm",
        audit_line,
        "lock.release",
    ]
    [record] = live_v1.audited()
    assert (record.release, record.live, record.result, record.message) == (
        "scoreboard_2",
        "scoreboard_1",
        "rolled-back",
        why,
    )


def test_a_release_that_crashes_while_its_health_check_fails_is_judged_at_once(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """The health check fails and meanwhile the app was restarted by systemd (a crash): verify
    fails after that one look, not at [verify] timeout, and says both."""
    app_unsettles(live_v1, restarts=1, pid=77)
    live_v1.health = 500

    def healthy_again(line: str) -> Result:
        live_v1.health, live_v1.version = 200, "1"
        return Result("", "", 0)

    live_v1.on(r"portablectl reattach .*scoreboard_1\.raw", healthy_again)
    cfg = dataclasses.replace(config(tmp_path), verify=VerifyConfig(timeout=300))
    with pytest.raises(DeployError) as failed:
        pipeline.deploy_to(live_v1, cfg, signed(V2), Options(), ui.Steps())
    assert failed.value.message.startswith(
        "[fake] scoreboard_2 failed verification: scoreboard.service exited and was restarted "
        "(restarts 0 -> 1); health check failed: GET /healthz -> 500"
    )
    verbs = live_v1.verbs()
    assert verbs[verbs.index(SWAP) :][:4] == [
        SWAP,
        "systemctl show",
        "GET :80/healthz",
        "systemctl show",
    ]


def test_the_settle_window_counts_from_the_switch(
    tmp_path: Path, live_v1: FakeHost, fake_clock: FakeClock
) -> None:
    """Settle is measured from the end of the restarts: the health checks run inside it, and
    verify waits only for what is left of it (then reads the units once more), but never less
    than AFTER_HEALTHY after the health check passed (a release that crashes soon after its
    first answer fails, however late that answer came)."""
    cfg = dataclasses.replace(config(tmp_path), verify=VerifyConfig(settle=2, timeout=10))
    live_v1.version = "1"
    v1 = live_v1.manifests["scoreboard_1"]
    start = fake_clock.now
    verify.verify(live_v1, cfg, v1, ui.Steps(), since=start - 0.2)
    assert fake_clock.now - start == pytest.approx(1.8)
    assert live_v1.verbs()[-1] == "systemctl show"
    for switched in (1.5, 5):  # the health checks took long: still watched AFTER_HEALTHY
        start = fake_clock.now
        verify.verify(live_v1, cfg, v1, ui.Steps(), since=start - switched)
        assert fake_clock.now - start == pytest.approx(verify.AFTER_HEALTHY)
        assert live_v1.verbs()[-3:] == ["GET :80/healthz", "GET :80/version", "systemctl show"]
    start = fake_clock.now
    verify.verify(live_v1, cfg, v1, ui.Steps())  # on its own: the whole window after the checks
    assert fake_clock.now - start == pytest.approx(2)
