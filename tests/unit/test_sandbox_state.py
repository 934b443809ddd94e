"""Sandbox's state directory read and cleaned up with a stand-in QEMU process (no VM boots)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portable_deploy.errors import DeployError
from portable_deploy.sandbox import Sandbox

# vm.json as the code before the split wrote it, with the paths of this test's state dir.
OLD_VM_JSON = """\
{{
  "name": "sandbox-1",
  "pid": {pid},
  "ssh_port": 48357,
  "http_port": 53333,
  "https_port": 51669,
  "key": "{dir}/id_ed25519",
  "known_hosts": "{dir}/known_hosts",
  "user": "root",
  "overlay": "{dir}/overlay.qcow2",
  "base": "/root/.cache/portable-deploy/base-a0d9348ccb73",
  "accel": "tcg",
  "cpus": 2,
  "started_at": 1795735982.4332952
}}
"""


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Iterator[tuple[Sandbox, subprocess.Popen[bytes]]]:
    """A Sandbox whose sandbox-1 is a sleeping process that looks like QEMU on its overlay."""
    box = Sandbox(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    vm_dir = box.state_dir / "sandbox-1"
    vm_dir.mkdir(parents=True)
    overlay = vm_dir / "overlay.qcow2"
    overlay.touch()
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-c", "import time; time.sleep(60)", f"file={overlay}"],
        executable=sys.executable,
    )
    try:
        # Popen can return before the child's exec shows in /proc/PID/cmdline.
        deadline = time.monotonic() + 10
        while str(overlay).encode() not in _cmdline(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        (vm_dir / "qemu.pid").write_text(f"{proc.pid}\n")
        (vm_dir / "vm.json").write_text(OLD_VM_JSON.format(pid=proc.pid, dir=vm_dir))
        yield box, proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_status_lists_a_vm_recorded_by_the_old_code(
    fake_qemu: tuple[Sandbox, subprocess.Popen[bytes]],
) -> None:
    """A running VM whose vm.json the old sandbox.py wrote is listed by status()."""
    box, proc = fake_qemu
    assert [(vm.name, vm.pid, vm.ssh_port) for vm in box.status()] == [
        ("sandbox-1", proc.pid, 48357)
    ]


def test_ssh_argv_reaches_a_vm_recorded_by_the_old_code(
    fake_qemu: tuple[Sandbox, subprocess.Popen[bytes]],
) -> None:
    """ssh_argv(name) of an old record uses its key and port."""
    box, _ = fake_qemu
    argv = box.ssh_argv("sandbox-1", ["true"])
    assert argv == box.status()[0].ssh_argv(["true"])


def test_down_stops_a_vm_recorded_by_the_old_code(
    fake_qemu: tuple[Sandbox, subprocess.Popen[bytes]],
) -> None:
    """down() stops the process of an old record and removes the VM's directory."""
    box, proc = fake_qemu
    assert box.down() == ["sandbox-1"]
    assert proc.wait(timeout=10) != 0
    assert not (box.state_dir / "sandbox-1").exists()
    assert box.status() == []


def test_dead_vm_is_not_listed(fake_qemu: tuple[Sandbox, subprocess.Popen[bytes]]) -> None:
    """A record whose process has exited is not a running VM."""
    box, proc = fake_qemu
    proc.kill()
    proc.wait(timeout=10)
    assert box.status() == []


def test_ssh_argv_of_a_missing_vm_points_at_up(tmp_path: Path) -> None:
    """ssh_argv() of a VM with no record names it and hints at sandbox.up."""
    box = Sandbox(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    with pytest.raises(DeployError, match="sandbox-9") as err:
        box.ssh_argv("sandbox-9")
    assert "sandbox.up" in (err.value.hint or "")


def test_unreadable_record_is_skipped(tmp_path: Path) -> None:
    """A truncated vm.json makes that VM unknown instead of failing status()."""
    box = Sandbox(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    (box.state_dir / "sandbox-1").mkdir(parents=True)
    (box.state_dir / "sandbox-1/vm.json").write_text('{"name": "sandbox-1", "pid"')
    assert box.status() == []


def test_a_world_readable_base_dir_is_closed(tmp_path: Path) -> None:
    """A base directory left 0755 by an earlier version (its disk holds the VMs' private host
    key) becomes 0700 when it is used."""
    from portable_deploy.sandbox.base import _private

    base = tmp_path / "base-x"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    _private(base)
    assert base.stat().st_mode & 0o777 == 0o700
