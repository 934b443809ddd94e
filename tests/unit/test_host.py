"""Host: what a dry run does without a connection (no SSH server needed), and what its errors
show of a secret argument."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from invoke.exceptions import CommandTimedOut

from portable_deploy import host as host_module
from portable_deploy.command import Command, Secret, cmd
from portable_deploy.commands import files, portablectl
from portable_deploy.errors import DeployError
from portable_deploy.host import Host, RemoteCommandError, Result, Target


@pytest.fixture
def nowhere() -> Target:
    """A target on this machine's loopback where nothing listens: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Target("nowhere", "127.0.0.1", port=port, known_hosts=Path("/dev/null"))


def test_dry_run_shows_a_mutating_command_without_connecting(nowhere: Target) -> None:
    """Host(dry_run=True).run of a mutating command echoes it as skipped and opens no connection."""
    shown: list[tuple[str, str, bool]] = []
    host = Host(nowhere, dry_run=True, echo=lambda *line: shown.append(line))
    result = host.run(portablectl.reattach("/var/lib/portables/a_2.raw", "pd-hardened"))
    host.put(Path("/etc/hostname"), "/tmp/x")
    assert (result.ok, result.stdout, host.connections_opened) == (True, "", 0)
    assert shown == [
        (
            "nowhere",
            "portablectl reattach --profile pd-hardened --copy=copy --enable /var/lib/portables/a_2.raw",
            True,
        ),
        ("nowhere", "sftp put /etc/hostname /tmp/x", True),
    ]


def test_dry_run_still_runs_read_only_commands(nowhere: Target) -> None:
    """A read-only command in a dry run goes to the host: here it tries, and cannot reach it."""
    host = Host(nowhere, dry_run=True)
    with pytest.raises(DeployError, match=r"^\[nowhere\] cannot reach 127\.0\.0\.1:"):
        host.run(files.cat("/etc/hostname"))
    assert host.connections_opened == 0


class Scripted(Host):
    """A Host whose transport answers every command with RESULT, or raises ERROR."""

    def __init__(self, result: Result | None = None, error: BaseException | None = None) -> None:
        super().__init__(Target("h", "192.0.2.1"), echo=lambda *line: self.shown.append(line))
        self.shown: list[tuple[str, str, bool]] = []
        self.sent: list[str] = []
        self.result, self.error = result, error

    def _execute(self, command: Command, timeout: float | None) -> Result:
        self.sent.append(command.render(reveal=True))
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


SECRET_CMD = cmd("systemd-creds", "encrypt", Secret("s3cr3t\nline2"), mutates=True)


def test_failed_command_error_masks_the_secret_in_command_and_output() -> None:
    """A failing command with a Secret: the error shows *** for it, also where the program echoed it."""
    host = Scripted(Result("", "bad input: s3cr3t\nline2 rejected\nthen: line2", 1))
    with pytest.raises(RemoteCommandError) as info:
        host.run(SECRET_CMD)
    assert "s3cr3t" not in str(info.value)
    assert str(info.value).startswith(
        "[h] command failed (exit 1): systemd-creds encrypt ***: bad input: *** rejected / then: ***"
    )
    assert host.sent == ["systemd-creds encrypt 's3cr3t\nline2'"]


def test_echo_shows_the_secret_masked() -> None:
    """--echo prints the command with *** while the host gets the value."""
    host = Scripted(Result("", "", 0))
    host.run(SECRET_CMD)
    assert host.shown == [("h", "systemd-creds encrypt ***", False)]


@pytest.mark.parametrize(
    "raised", [CommandTimedOut(None, 5), OSError("broken pipe")], ids=["timeout", "transport"]
)
def test_timeout_and_transport_errors_mask_the_secret(raised: BaseException) -> None:
    """A command that timed out or lost the connection is named with its secret masked."""
    with pytest.raises(DeployError) as info:
        Scripted(error=raised).run(SECRET_CMD, timeout=5)
    assert "systemd-creds encrypt ***" in str(info.value)
    assert "s3cr3t" not in str(info.value)


def test_a_commands_stdin_is_given_whole_to_each_read() -> None:
    """Invoke reads a non-terminal stdin one byte per 10 ms: the stream hands it all at once
    (a 3 KB dead-man script took 30 s), then reports the end."""
    stream = host_module._AllAtOnce("x" * 3000)
    assert stream.read(1) == "x" * 3000
    assert stream.read(1) == ""
