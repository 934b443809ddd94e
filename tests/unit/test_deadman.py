"""The dead-man switch's host-side logic, run in a real sh (systemd-run itself is left to e2e):
it waits while the heartbeat is fresh, claims the switch and reverts once it is stale, and
stands down when it is disarmed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from portable_deploy.command import Command
from portable_deploy.commands import deadman
from portable_deploy.commands.layout import Layout


def _start(heartbeat: Path, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """Run the switch's script as its timer would: ``sh FILE HEARTBEAT SECONDS``."""
    script = heartbeat.parent / "deadman.sh"
    script.write_text(deadman.WAIT + f"echo reverted > {out}\n")
    return subprocess.Popen(["sh", str(script), str(heartbeat), str(seconds)])


def test_a_stale_heartbeat_fires_the_revert_once(tmp_path: Path) -> None:
    """With no sign of life for SECONDS the revert runs and the heartbeat becomes .fired."""
    hb, out = tmp_path / "hb", tmp_path / "out"
    hb.touch()
    proc = _start(hb, 1, out)
    assert proc.wait(timeout=20) == 0
    assert out.read_text() == "reverted\n"
    assert not hb.exists() and (tmp_path / "hb.fired").exists()


def test_a_fresh_heartbeat_holds_the_revert(tmp_path: Path) -> None:
    """While the heartbeat is touched, nothing happens; once disarmed (no heartbeat) the switch
    exits without reverting."""
    hb, out = tmp_path / "hb", tmp_path / "out"
    hb.touch()
    proc = _start(hb, 3, out)
    for _ in range(4):
        time.sleep(1)
        os.utime(hb)
    assert proc.poll() is None and not out.exists()
    hb.unlink()  # what disarm does
    assert proc.wait(timeout=20) == 0
    assert not out.exists()


def test_a_command_still_running_on_the_host_holds_the_switch(tmp_path: Path) -> None:
    """A stale heartbeat does not fire while the deployer's marked shell (this boot's) runs;
    a mark from another boot counts for nothing."""
    hb, out = tmp_path / "hb", tmp_path / "out"
    hb.touch()
    os.utime(hb, (0, 0))
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    Path(f"{hb}.busy").write_text(f"{os.getpid()} {boot}\n")
    proc = _start(hb, 1, out)
    time.sleep(3)
    assert proc.poll() is None and not out.exists()
    Path(f"{hb}.busy").write_text(f"{os.getpid()} another-boot\n")
    assert proc.wait(timeout=20) == 0
    assert out.read_text() == "reverted\n"


def test_a_heartbeat_marks_the_running_command_line(tmp_path: Path) -> None:
    """heartbeat touches the heartbeat and marks its parent shell, with the boot id, as busy."""
    hb = tmp_path / "hb"
    hb.touch()
    command = deadman.heartbeat(Layout("app"))
    script = str(command.tokens[2])
    subprocess.run(
        ["sh", "-c", f"sh -c '{script}' sh {hb}; echo $$ > {tmp_path}/shell"], check=True
    )
    pid, boot = Path(f"{hb}.busy").read_text().split()
    assert pid == (tmp_path / "shell").read_text().strip()
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_disarm_reports_a_switch_that_fired(tmp_path: Path) -> None:
    """disarm exits FIRED when the switch has claimed itself, and removes the heartbeat
    otherwise."""
    layout = Layout("app")
    command = deadman.disarm(layout)
    assert command.mutates
    hb = tmp_path / "hb"
    script = command.tokens[2]
    sh_file = tmp_path / "deadman.sh"
    run = ["sh", "-c", str(script), "sh", "pd-deadman-none", str(hb), str(sh_file)]
    hb.touch()
    sh_file.touch()
    assert subprocess.run(run, capture_output=True).returncode == 0
    assert not hb.exists() and not sh_file.exists()
    (tmp_path / "hb.fired").touch()
    result = subprocess.run(run, capture_output=True, text=True)
    assert result.returncode == deadman.FIRED and "fired" in result.stderr


def test_arm_names_the_unit_the_timeout_and_the_script() -> None:
    """arm starts a transient timer for the app, with the timeout and the revert script, and
    installs the boot unit for the app."""
    command = deadman.arm(Layout("app"), 60, "echo back")
    assert "systemd-run --quiet --unit=" in command.render()
    assert command.tokens[4:8] == (
        "pd-deadman-app",
        "/var/lib/portable-deploy/app/deadman.heartbeat",
        "60",
        "/var/lib/portable-deploy/app/deadman.sh",
    )
    assert command.tokens[8] == "app"
    boot = "\n".join(str(t) for t in command.tokens[9:])
    assert "ConditionPathExists=/var/lib/portable-deploy/%i/deadman.heartbeat" in boot
    assert "deadman.heartbeat 0" in boot and "WantedBy=multi-user.target" in boot
    assert "\n" not in command.render()  # an error message with it stays one line
    assert command.stdin is not None and command.stdin.value.endswith("echo back\n")


def _no_systemd(tmp_path: Path) -> dict[str, str]:
    """An environment whose systemctl answers "inactive" to everything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


def _run(
    command: Command, hb: Path, script: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """COMMAND's script with this test's heartbeat and script paths in place of the layout's."""
    layout = Layout("app")
    tokens = [
        {layout.heartbeat: str(hb), layout.deadman_script: str(script)}.get(str(t), str(t))
        for t in command.tokens
    ]
    return subprocess.run(tokens, capture_output=True, text=True, env=env, timeout=30)


def test_hold_pushes_the_switch_back_or_says_it_fired(tmp_path: Path) -> None:
    """hold touches a live heartbeat and exits FIRED once the switch has claimed itself."""
    hb = tmp_path / "hb"
    hb.touch()
    os.utime(hb, (0, 0))
    env = _no_systemd(tmp_path)
    assert _run(deadman.hold(Layout("app")), hb, tmp_path / "s", env).returncode == 0
    assert time.time() - hb.stat().st_mtime < 60
    hb.rename(tmp_path / "hb.fired")
    result = _run(deadman.hold(Layout("app")), hb, tmp_path / "s", env)
    assert result.returncode == deadman.FIRED


def test_finish_runs_an_armed_switch_now_and_only_once(tmp_path: Path) -> None:
    """finish claims an armed switch and runs its revert at once (the heartbeat fresh or not);
    with nothing armed it does nothing."""
    hb, out, script = tmp_path / "hb", tmp_path / "out", tmp_path / "deadman.sh"
    script.write_text(deadman.WAIT + f"echo reverted >> {out}\n")
    hb.touch()  # fresh: the timer would still wait
    env = _no_systemd(tmp_path)
    first = _run(deadman.finish(Layout("app")), hb, script, env)
    assert first.returncode == 0 and deadman.FINISHED in first.stdout
    assert out.read_text() == "reverted\n"
    assert not hb.exists() and (tmp_path / "hb.fired").exists()
    again = _run(deadman.finish(Layout("app")), hb, script, env)
    assert again.returncode == 0 and deadman.FINISHED not in again.stdout
    assert out.read_text() == "reverted\n"
