"""Every failure after the switch ends rolled back (or explained) in one line, and audited: a
reattach that fails or times out, a dropped connection, an interrupt; transport errors before the
switch are one line too, and a failed lock release never hides the first error."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
from pathlib import Path

import paramiko
import pytest
from invoke.exceptions import CommandTimedOut

from portable_deploy import pipeline, preflight, ui
from portable_deploy.commands import lock, systemctl, trust
from portable_deploy.config import AppConfig, SignConfig
from portable_deploy.errors import DeployError
from portable_deploy.host import Result, TransportError
from portable_deploy.release import Options

from .conftest import HOST_INFO, FakeHost, config, signed
from .test_pipeline_flow import V2
from .test_verify_flow import BACK, SWAP


def _deploy(host: FakeHost, tmp_path: Path) -> DeployError:
    host.version = host.version or "1"  # what the rolled-back scoreboard_1 answers on /version
    with pytest.raises(DeployError) as failed:
        pipeline.deploy_to(host, config(tmp_path), signed(V2), Options(), ui.Steps())
    assert "\n" not in str(failed.value)
    return failed.value


def _rolled_back(host: FakeHost) -> None:
    """scoreboard_1 was checked and reattached after the swap, and the lock was released."""
    verbs = host.verbs()
    assert SWAP in verbs and BACK in verbs
    back = verbs.index(BACK)
    assert verbs[back - 1 : back] == ["check-release"]
    assert verbs[-1] == "lock.release"


def test_a_failing_reattach_command_is_rolled_back_and_audited(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """`systemctl restart` failing in the reattach (the app does not start) rolls back like a
    failed verify, with a message saying what failed."""
    live_v1.fail(systemctl.restart, Result("", "Job for scoreboard.service failed.", 1), times=1)
    error = _deploy(live_v1, tmp_path)
    assert error.message.startswith("[fake] scoreboard_2 failed to start: [fake] command failed")
    assert error.message.endswith("; rolled back, scoreboard_1 is live")
    _rolled_back(live_v1)
    [record] = live_v1.audited()
    assert (record.release, record.live, record.result) == (
        "scoreboard_2",
        "scoreboard_1",
        "rolled-back",
    )
    assert "Job for scoreboard.service failed." in record.message


def test_a_reattach_that_times_out_is_rolled_back(tmp_path: Path, live_v1: FakeHost) -> None:
    """Invoke's CommandTimedOut on the reattach becomes a failed start and a rollback."""
    live_v1.fail(systemctl.restart, CommandTimedOut(None, 180), times=1)  # type: ignore[arg-type]
    error = _deploy(live_v1, tmp_path)
    assert error.message.startswith("[fake] scoreboard_2 failed to start: [fake] no answer within")
    _rolled_back(live_v1)
    assert [r.result for r in live_v1.audited()] == ["rolled-back"]


def test_a_connection_dropped_during_verify_reconnects_and_rolls_back(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """An SSHException under verify: the rollback opens a new connection and puts v1 back."""
    live_v1.fail(systemctl.show, paramiko.SSHException("Socket is closed"), times=1)
    error = _deploy(live_v1, tmp_path)
    assert error.message.startswith(
        "[fake] scoreboard_2 lost its connection: [fake] SSH connection"
    )
    assert "Socket is closed" in error.message
    _rolled_back(live_v1)
    assert [r.result for r in live_v1.audited()] == ["rolled-back"]


def test_an_interrupt_during_verify_rolls_back(tmp_path: Path, live_v1: FakeHost) -> None:
    """Ctrl-C (or SIGTERM) after the switch puts the previous release back before exiting."""
    live_v1.fail(systemctl.show, KeyboardInterrupt("SIGTERM"), times=1)
    error = _deploy(live_v1, tmp_path)
    assert error.message.startswith("[fake] scoreboard_2 was interrupted: interrupted (SIGTERM)")
    _rolled_back(live_v1)
    assert [r.result for r in live_v1.audited()] == ["rolled-back"]


def test_an_interrupt_during_the_reattach_waits_for_it_then_rolls_back(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """A real SIGINT while the reattach runs: the command finishes, then the rollback runs."""
    finished = []

    def interrupted_swap(line: str) -> Result:
        os.kill(os.getpid(), signal.SIGINT)
        finished.append(line)  # reached: the signal did not cut the command short
        return Result("", "", 0)

    live_v1.on(r"portablectl reattach .*scoreboard_2\.raw", interrupted_swap)
    error = _deploy(live_v1, tmp_path)
    assert finished and error.message.startswith("[fake] scoreboard_2 was interrupted")
    _rolled_back(live_v1)


def test_rollback_refuses_a_previous_release_no_longer_trusted(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """After a failed verify, the automatic rollback checks scoreboard_1's signature again: a
    key removed from the trust root is not honoured, and the message says both failures."""
    live_v1.health = 500
    live_v1.fail(
        trust.check_release,
        Result("", "Could not verify signature.", trust.BAD_SIGNATURE),
        matching=r"/releases/scoreboard_1\.manifest\.json",
    )
    error = _deploy(live_v1, tmp_path)
    assert "and the rollback to scoreboard_1 failed too" in error.message
    assert "signature check failed" in error.message
    assert BACK not in live_v1.verbs()
    assert [r.result for r in live_v1.audited()] == ["rollback-failed"]


def test_a_full_disk_upload_is_one_line_with_a_hint(tmp_path: Path, live_v1: FakeHost) -> None:
    """SFTP's OSError("Failure") on the image upload is a one-line error naming the disk."""
    live_v1.put_error = OSError("Failure")
    error = _deploy(live_v1, tmp_path)
    assert isinstance(error, TransportError)
    assert error.message.startswith("[fake] SSH connection failed while uploading")
    assert error.hint is not None and "disk full" in error.hint
    assert not any(line.startswith("portablectl") for line in live_v1.log)
    incoming = "/var/lib/portable-deploy/scoreboard/incoming/scoreboard_2"
    # The partial image goes at once, before the audit line, which then has room again.
    removal = (
        f"rm -f {incoming}.manifest.json {incoming}.manifest.json.sig {incoming}.raw "
        f"{incoming}.index && sh -c"
    )
    [cleanup] = [line for line in live_v1.log if line.startswith(removal)]
    # ... and the delta stream with it (kept after a dropped connection, to resume).
    assert "/var/lib/portable-deploy/scoreboard/partial" in cleanup
    assert live_v1.log.index(cleanup) < live_v1.log.index(live_v1.audit_lines()[0])
    assert live_v1.verbs()[-1] == "lock.release"


def test_a_failed_lock_release_does_not_hide_the_first_error(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """The connection is gone: the error says why the deploy failed and that the lock is held."""
    live_v1.put_error = OSError("Failure")
    live_v1.fail(lock.release, paramiko.SSHException("Socket is closed"))
    error = _deploy(live_v1, tmp_path)
    assert error.message.startswith("[fake] SSH connection failed while uploading")
    assert "the deploy lock is still held" in error.message
    assert error.hint is not None and "--break-lock" in error.hint


def test_a_host_never_set_up_is_named_at_the_lock(tmp_path: Path, live_v1: FakeHost) -> None:
    """No state directory on the host: the lock step says to run host.setup, not a script error."""
    live_v1.fail(lock.acquire, Result("", "", lock.NOT_SET_UP))
    error = _deploy(live_v1, tmp_path)
    assert error.message == (
        "[fake] is not set up for portable-deploy (no /var/lib/portable-deploy/scoreboard)"
    )
    assert error.hint == "run `invoke host.setup --host fake` once"
    assert live_v1.verbs() == ["lock.acquire"]


def test_a_signed_manifest_of_another_release_is_refused(tmp_path: Path, live_v1: FakeHost) -> None:
    """A validly signed old manifest staged under a new name is refused, audited, not installed."""
    live_v1.fail(trust.check_release, Result("", "", trust.OTHER_RELEASE))
    error = _deploy(live_v1, tmp_path)
    assert error.message == (
        "[fake] refused scoreboard_2: its signed manifest is another release's "
        "(staged under this name)"
    )
    assert not any(line.startswith(("portablectl", "mv")) for line in live_v1.log)
    assert [r.result for r in live_v1.audited()] == ["refused"]


def test_a_failed_upload_is_audited_as_failed(tmp_path: Path, live_v1: FakeHost) -> None:
    """A full disk stops the deploy before the switch, and the audit log says so."""
    live_v1.put_error = OSError("Failure")
    _deploy(live_v1, tmp_path)
    [record] = live_v1.audited()
    assert (record.event, record.release, record.live, record.result) == (
        "deploy",
        "scoreboard_2",
        "scoreboard_1",
        "failed",
    )
    assert record.message.startswith("[fake] SSH connection failed while uploading")


def test_each_app_gets_its_own_trust_root(tmp_path: Path, live_v1: FakeHost) -> None:
    """host.setup of a second app installs its own allowed_signers and leaves the first app's
    alone: one app's key never signs another app's releases."""
    signers = tmp_path / "allowed_signers"
    signers.write_text('deploy namespaces="portable-deploy" ssh-ed25519 AAAA\n')
    live_v1.fail(trust.host_info, HOST_INFO)  # answered by builder
    for app in ("scoreboard", "blog"):
        cfg = dataclasses.replace(
            config(tmp_path),
            app=AppConfig(app, "1"),
            sign=SignConfig(allowed_signers=signers),
        )
        preflight.setup_host(live_v1, cfg)
    installs = [line for line in live_v1.log if line.startswith("sh -c 'umask 077;")]
    assert [re.findall(r"/etc/portable-deploy/\S+", line)[0] for line in installs] == [
        "/etc/portable-deploy/scoreboard/allowed_signers",
        "/etc/portable-deploy/blog/allowed_signers",
    ]
