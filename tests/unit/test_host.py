"""Host: what a dry run does without a connection (no SSH server needed)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from portable_deploy.commands import files, portablectl
from portable_deploy.errors import DeployError
from portable_deploy.host import Host, Target


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
