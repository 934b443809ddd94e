"""The SSH layer's failure paths: every hop checks host keys, a bad address is one line, the
version check is exact, and interrupts wait for a critical section."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import paramiko
import pytest
from fabric import Config as FabricConfig
from fabric import Connection

from portable_deploy import interrupts
from portable_deploy.errors import DeployError
from portable_deploy.host import Host, Target, TransportError, check_host_keys
from portable_deploy.verify import version_matches


def test_every_proxyjump_hop_refuses_unknown_host_keys(tmp_path: Path) -> None:
    """A ProxyJump gateway gets RejectPolicy too (Fabric would build it with AutoAddPolicy)."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host app\n  HostName 127.0.0.1\n  ProxyJump bastion\n")
    config = FabricConfig(runtime_ssh_path=str(ssh_config))
    conn = Connection("app", config=config)
    assert isinstance(conn.gateway, Connection)
    check_host_keys(conn, tmp_path / "known_hosts")
    for hop in (conn, conn.gateway):
        assert isinstance(hop.client._policy, paramiko.RejectPolicy)


def test_an_address_with_user_and_a_user_key_is_one_line() -> None:
    """address = "root@h:2222" with user = "x": Fabric's ValueError becomes a hint to pick one."""
    host = Host(Target("prod", "root@h:2222", user="x"))
    with pytest.raises(DeployError) as error:
        host.connection()
    assert error.value.message.startswith("[prod] address 'root@h:2222': ")
    assert error.value.hint is not None and "not both" in error.value.hint


@pytest.mark.parametrize(
    ("body", "version", "matches"),
    [
        ("2.1\n", "2.1", True),
        ("2.10\n", "2.1", False),
        ("v2.1", "2.1", False),
        ('{"version": "2.1", "commit": "abc"}', "2.1", True),
        ('{"version": "2.10"}', "2.1", False),
        ("[1, 2]", "2", False),
        ("", "1", False),
    ],
)
def test_the_version_page_must_name_exactly_the_version(
    body: str, version: str, matches: bool
) -> None:
    """The whole body, or the JSON "version" field, equals the version; no substring match."""
    assert version_matches(body, version) is matches


def test_an_interrupt_in_a_critical_section_is_raised_after_it() -> None:
    """SIGINT inside `deferred()` lets the block finish, then raises KeyboardInterrupt."""
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append(True)
    assert done == [True]


def test_a_second_interrupt_in_a_critical_section_is_raised_at_once() -> None:
    """The user insists: a second signal inside `deferred()` interrupts immediately."""
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        done.append(True)
    assert done == []


def test_sigterm_is_an_interrupt_while_a_task_runs() -> None:
    """Under `terminate_is_interrupt()`, SIGTERM raises KeyboardInterrupt (so the lock is released)."""
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), interrupts.terminate_is_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_an_interrupt_swallowed_under_a_remote_command_is_raised_after_it() -> None:
    """Invoke catches Ctrl-C/SIGTERM under a command and carries on: raise_pending raises it."""
    with interrupts.terminate_is_interrupt():
        with contextlib.suppress(KeyboardInterrupt):  # what Invoke's runner does with it
            os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            interrupts.raise_pending()
        interrupts.raise_pending()  # raised once, not again


def test_a_dead_connection_under_a_health_check_is_a_transport_error() -> None:
    """GET through SSH on a connection that has died is a lost connection, not a refused port."""

    class DeadTransport:
        def is_active(self) -> bool:
            return False

        def open_channel(self, *args: object, **kwargs: object) -> None:
            raise paramiko.SSHException("SSH session not active")

    host = Host(Target("prod", "203.0.113.9"))
    host._conn = type("Conn", (), {"transport": DeadTransport(), "close": lambda self: None})()
    with pytest.raises(TransportError, match=r"^\[prod\] SSH connection failed while GET /healthz"):
        host.http_get(80, "/healthz")
    assert host._conn is None  # dropped: the next operation connects again
