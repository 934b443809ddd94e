"""Sandbox VMs for the end-to-end tests: one shared Sandbox per session, always torn down.

The VMs live in a state dir under the session's temp dir (never the user's own sandbox); the base
image cache is the default one, so it is built once per machine and shared with `invoke sandbox.up`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from portable_deploy.sandbox import VM, Sandbox, mux

BOOT_TIMEOUT = 300.0


def ssh_run(
    vm: VM,
    command: str | Sequence[str],
    *,
    input: str | bytes | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run COMMAND (a shell line, or argv joined by ssh) as root on VM; text output captured."""
    argv = vm.ssh_argv([command] if isinstance(command, str) else list(command), batch=True)
    data = input.decode() if isinstance(input, bytes) else input
    proc = subprocess.run(
        argv, input=data, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"ssh {vm.name} {command!r} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def pid_alive(pid: int) -> bool:
    """True if PID is a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def teardown_sandbox(sandbox: Sandbox) -> None:
    """Stop every VM of SANDBOX and fail loudly if one of its QEMU processes survives."""
    pids = sorted({vm.pid for vm in sandbox.status()} | set(_BOOTED.get(sandbox.state_dir, [])))
    for vm in _SHARED.pop(sandbox.state_dir, []):
        mux.stop(vm)
    sandbox.down()
    # A VM whose record is gone (its state dir deleted under it) is still ours: stop it by pid.
    for pid in pids:
        if pid_alive(pid) and b"qemu-system" in _cmdline(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [p for p in pids if pid_alive(p)]
    assert not survivors, f"QEMU processes still running after down(): {survivors}"


#: QEMU pids booted through the fixtures, by state dir: stopped at the end even if their vm.json
#: records are gone (never another Sandbox's: each teardown stops only its own).
_BOOTED: dict[Path, list[int]] = {}
#: The VMs whose shared SSH connection (mux.py) the fixtures started, by state dir: the tests'
#: many short ssh commands then cost no handshake each on the TCG guest.
_SHARED: dict[Path, list[VM]] = {}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _up(sandbox: Sandbox, count: int) -> list[VM]:
    vms = sandbox.up(count, timeout=BOOT_TIMEOUT)
    _BOOTED.setdefault(sandbox.state_dir, []).extend(vm.pid for vm in vms)
    for vm in vms:
        mux.share(vm)
        _SHARED.setdefault(sandbox.state_dir, []).append(vm)
    return vms


def cores_per_worker() -> int:
    """This xdist worker's share of the host's cores (all of them without xdist): each worker
    boots VMs of its own, and VMs with more vCPUs than their share of cores run slower."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The session's Sandbox: VMs under a temp state dir, the default (shared) base cache.

    The state dir is not under pytest's basetemp: pytest deletes old basetemps while other
    pytest runs start, which would pull the VM records from under a long e2e session.
    """
    if os.geteuid() != 0 and not any(Sandbox().cache_dir.glob("base-*/base.json")):
        pytest.skip("the sandbox base image is not built and building it needs root")
    state = Path(tempfile.mkdtemp(prefix="portable-deploy-e2e-"))
    box = Sandbox(state_dir=state, cores=cores_per_worker())
    # atexit covers a run killed between tests; the finalizer is the normal path (and runs on ^C).
    atexit.register(box.down)
    try:
        yield box
    finally:
        try:
            teardown_sandbox(box)
        finally:
            atexit.unregister(box.down)
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox_vm(sandbox: Sandbox) -> VM:
    """sandbox-1, up and answering SSH."""
    return _up(sandbox, 1)[0]


@pytest.fixture(scope="session")
def sandbox_fleet(sandbox: Sandbox, sandbox_vm: VM) -> list[VM]:
    """sandbox-1..3; sandbox-1 is the already running sandbox_vm."""
    return _up(sandbox, 3)


#: Tests that share a sandbox VM run in one xdist worker (`pytest -n 2 --dist loadgroup`): the
#: e2e layer on one, the fault suite on another, so the two layers run side by side, each on VMs
#: of its own. The fault suite is the longer layer: the e2e modules that need only one VM and
#: no other module's state (status, logs) run in the fault suite's worker, before it (collection
#: order; each module resets its VM first), so both workers end about together. Unit, flow and
#: app tests have no group and fill whichever worker is free.
VM_LAYERS = ("e2e", "faults")
#: The e2e modules that run in the fault suite's worker.
E2E_IN_FAULTS = ("test_status.py", "test_logs.py")


def vm_group(item: pytest.Item) -> str | None:
    layer = item.path.parent.name
    if layer not in VM_LAYERS:
        return None
    if layer == "e2e" and item.path.name in E2E_IN_FAULTS:
        return "faults"
    return layer


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (it renames items by them)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = vm_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """In an xdist worker under --dist loadgroup, every e2e and fault test must carry its group
    in its id (xdist's side channel to the scheduler): if not, the layers would be spread over
    both workers, each booting VMs for both, and that must not pass silently."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [
        item.nodeid
        for item in session.items
        if vm_group(item) is not None and "@" not in item.nodeid.rsplit("]", 1)[-1]
    ]
    if lost:
        raise pytest.UsageError(
            f"--dist loadgroup lost the test groups ({lost[0]} has none): this pytest breaks "
            "xdist's groups; install the pinned one: .venv/bin/pip install -e '.[dev]'"
        )
