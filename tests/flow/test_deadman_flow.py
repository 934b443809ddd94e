"""The dead-man switch through the pipeline: armed in the swap's round trip with a script that
puts the live release back, fed while verify runs, disarmed with the success record; what the
deployer says when the host's switch fired first."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import paramiko
import pytest

from portable_deploy import pipeline, ui
from portable_deploy.command import Command
from portable_deploy.commands import deadman, portablectl
from portable_deploy.config import VerifyConfig
from portable_deploy.errors import DeployError
from portable_deploy.host import Result
from portable_deploy.release import Options

from .conftest import FakeHost, config, manifest, signed

V2 = manifest("2", app="e")


def _commands(host: FakeHost) -> list[Command]:
    seen: list[Command] = []
    original = host._execute

    def spy(command: Command, timeout: float | None) -> Result:
        seen.append(command)
        return original(command, timeout)

    host._execute = spy  # type: ignore[method-assign]
    return seen


def test_the_switch_is_armed_with_the_swap_to_put_the_live_release_back(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """One round trip arms the switch and swaps; its script reattaches scoreboard_1, audits
    rolled-back with the host's time and the reason, and frees this deploy's lock."""
    seen = _commands(live_v1)
    live_v1.version = "2"
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    [swap] = [c for c in seen if "deadman.arm" in c.sources]
    assert "portablectl.reattach" in swap.sources
    # The script goes on stdin into a root-only file that the timer runs.
    assert "/var/lib/portable-deploy/scoreboard/deadman.sh" in swap.render()
    assert swap.stdin is not None
    script = swap.stdin.value
    assert "/var/lib/portables/scoreboard_1.raw" in script
    assert '"result":"rolled-back"' in script and "@AT@" in script and "dead-man" in script
    assert "no sign of life from the deployer for 60s" in script
    token = next(line for line in live_v1.log if 'ln "$tmp"' in line).split('"token": "')[1][:32]
    assert token in script
    assert live_v1.log.count("deadman.heartbeat") >= 1
    assert live_v1.verbs().index("deadman.disarm") == len(live_v1.verbs()) - 5


def test_a_first_deploy_and_a_dry_run_arm_nothing(tmp_path: Path, live_v1: FakeHost) -> None:
    """With nothing live there is nothing to go back to; a dry run switches nothing."""
    live_v1.live, live_v1.version = None, "2"
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    assert not any(line.startswith("deadman.") for line in live_v1.log)
    live_v1.log.clear()
    live_v1.live, live_v1.dry_run = "scoreboard_1", True
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(dry_run=True), ui.Steps())
    assert not any("deadman" in line and 'ln "$tmp"' not in line for line in live_v1.log)


def test_a_switch_that_fired_before_the_confirmation_is_one_line(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """Verify passed, but the host's switch had already put scoreboard_1 back: the deploy says
    so and records no success."""
    live_v1.version = "2"
    live_v1.fail(deadman.disarm, Result("", "the dead-man switch has fired", deadman.FIRED))
    with pytest.raises(DeployError) as e:
        pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    assert "passed verification too late" in e.value.message
    assert "put scoreboard_1 back" in e.value.message
    # The success record rode on the disarm, which failed: it was never appended.
    disarm = live_v1.log.index("deadman.disarm")
    assert live_v1.audit_lines() == [live_v1.log[disarm + 1]]


def test_the_deployer_leaves_a_fired_switch_to_finish(tmp_path: Path, live_v1: FakeHost) -> None:
    """Verify failed and the host's switch had already fired: the deployer does not reattach
    scoreboard_1 itself and says the host did."""
    live_v1.version = "2"
    live_v1.health = 500
    live_v1.fail(deadman.hold, Result("", "the dead-man switch has fired", deadman.FIRED))
    with pytest.raises(DeployError) as e:
        pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    assert "dead-man switch has already put scoreboard_1 back" in e.value.message
    assert not any("scoreboard_1.raw" in line and "reattach" in line for line in live_v1.log)


def _failing_verify_then_lost_rollback(live_v1: FakeHost, tmp_path: Path, lost: int) -> str:
    """scoreboard_2 fails verify; the rollback's reattach of scoreboard_1 loses the connection
    LOST times. The deploy's one-line message."""
    live_v1.version, live_v1.health = "1", 500

    def back_to_v1(line: str) -> Result:
        live_v1.health = 200
        return Result("", "", 0)

    live_v1.on(r"portablectl reattach .*scoreboard_1\.raw", back_to_v1)
    live_v1.fail(
        portablectl.reattach,
        paramiko.SSHException("Socket is closed"),
        times=lost,
        matching=r"scoreboard_1\.raw",
    )
    cfg = dataclasses.replace(config(tmp_path), verify=VerifyConfig(timeout=1))
    with pytest.raises(DeployError) as e:
        pipeline.deploy_to(live_v1, cfg, signed(V2), Options(), ui.Steps())
    return e.value.message + " (hint: " + (e.value.hint or "") + ")"


def test_a_rollback_that_loses_its_connection_once_is_tried_again(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """The rollback's reattach runs again on a new connection; it succeeds, and the switch is
    disarmed with the rolled-back record."""
    message = _failing_verify_then_lost_rollback(live_v1, tmp_path, lost=1)
    assert "rolled back, scoreboard_1 is live" in message
    verbs = live_v1.verbs()
    assert verbs.index("deadman.hold") < verbs.index("deadman.disarm")
    assert [r.result for r in live_v1.audited()] == ["rolled-back"]


def test_a_rollback_lost_twice_leaves_the_switch_armed_for_the_host(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """Lost again, the deployer does not disarm the switch (it finishes the rollback on the
    host) and says so; the failure is audited."""
    message = _failing_verify_then_lost_rollback(live_v1, tmp_path, lost=2)
    assert "the rollback to scoreboard_1 failed too" in message
    assert "dead-man switch puts scoreboard_1 back within 60s" in message
    assert "deadman.disarm" not in live_v1.verbs()
    assert [r.result for r in live_v1.audited()] == ["rollback-failed"]


def test_a_switch_left_armed_is_finished_by_the_next_lock_holder_and_said(
    tmp_path: Path, live_v1: FakeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lock's acquire carries deadman.finish; when it ran a gone deploy's revert, the task
    says so; when there was nothing to finish it says nothing."""
    live_v1.version = "2"
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    acquire = next(line for line in live_v1.log if 'ln "$tmp"' in line)
    assert "deadman.heartbeat" in acquire and "deadman.sh" in acquire
    assert "left the host's dead-man switch armed" not in capsys.readouterr().out
    live_v1.on(r'ln "\$tmp"', lambda line: Result(deadman.FINISHED + "\n", "", 0))
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    shown = " ".join(capsys.readouterr().out.split())
    assert "a deploy that is gone left the host's dead-man switch armed" in shown
