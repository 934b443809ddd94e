"""The sandbox tasks as a user runs them: `invoke sandbox.up`, `sandbox.ssh -- CMD`, `sandbox.status`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from portable_deploy.sandbox import VM

pytestmark = pytest.mark.e2e

SRC = Path(__file__).resolve().parents[2] / "src"


def _invoke(cwd: Path, vm: VM, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, PYTHONPATH=str(SRC), PORTABLE_DEPLOY_SANDBOX_DIR=str(vm.key.parent.parent)
    )
    env.pop("DEPLOY_TOML", None)
    (cwd / "tasks.py").write_text("from portable_deploy.tasks import ns  # noqa: F401\n")
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def test_up_reuses_the_vm_and_ssh_runs_a_command(sandbox_vm: VM, tmp_path: Path) -> None:
    """`invoke sandbox.up && invoke sandbox.ssh -- systemctl is-system-running` works."""
    up = _invoke(tmp_path, sandbox_vm, "sandbox.up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert str(sandbox_vm.ssh_port) in up.stdout and str(sandbox_vm.pid) in up.stdout
    ssh = _invoke(tmp_path, sandbox_vm, "sandbox.ssh", "--", "systemctl", "is-system-running")
    # The remote exit status is passed through: 0 for running, 1 for degraded.
    assert (ssh.stdout.strip(), ssh.returncode) in {("running", 0), ("degraded", 1)}, ssh.stderr


def test_status_lists_the_vm(sandbox_vm: VM, tmp_path: Path) -> None:
    """`invoke sandbox.status` shows the running VM and its forwarded ports on 127.0.0.1."""
    status = _invoke(tmp_path, sandbox_vm, "sandbox.status")
    assert status.returncode == 0
    assert "sandbox-1" in status.stdout and f"127.0.0.1:{sandbox_vm.http_port}" in status.stdout


def test_ssh_to_unknown_vm_is_one_line_error(sandbox_vm: VM, tmp_path: Path) -> None:
    """`invoke sandbox.ssh --name nope` fails with one line and exit code 1."""
    result = _invoke(tmp_path, sandbox_vm, "sandbox.ssh", "--name", "nope", "--", "true")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "nope" in result.stderr


def _ssh(vm: VM, line: str) -> int:
    return subprocess.run(vm.ssh_argv([line], batch=True), timeout=120, check=False).returncode


def test_up_needs_no_signing_key(sandbox_vm: VM, tmp_path: Path) -> None:
    """In a clone without .deploy/signing_key, `invoke sandbox.up` boots and says the sandbox
    host is set up on first deploy, instead of failing (booting needs no key)."""
    (tmp_path / "units").mkdir()
    (tmp_path / "units/demo.service").write_text("[Service]\nExecStart=/usr/bin/demo\n")
    (tmp_path / "deploy.toml").write_text(
        '[app]\nname = "demo"\nversion = "1"\n[sign]\nkey = ".deploy/signing_key"\n'
        "[hosts.sandbox]\nsandbox = true\n"
    )
    trust = "/etc/portable-deploy/demo/allowed_signers"
    # A never-set-up sandbox: hide the trust root for the length of the test.
    assert _ssh(sandbox_vm, f"if [ -e {trust} ]; then mv {trust} {trust}.hidden; fi") == 0
    try:
        up = _invoke(tmp_path, sandbox_vm, "sandbox.up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "not set up yet" in up.stdout and "signing key" in up.stdout
        assert _ssh(sandbox_vm, f"test -e {trust}") != 0
    finally:
        _ssh(sandbox_vm, f"if [ -e {trust}.hidden ]; then mv {trust}.hidden {trust}; fi")
