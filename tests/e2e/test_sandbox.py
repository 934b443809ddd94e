"""The sandbox VM: a real Debian 12 host with systemd 252 and portablectl, reached over SSH."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from portable_deploy.errors import DeployError
from portable_deploy.sandbox import VM, Sandbox, base_key, mux, qemu
from tests.conftest import BOOT_TIMEOUT, pid_alive, ssh_run, teardown_sandbox

pytestmark = pytest.mark.e2e

# A static HTTP server for socket activation: systemd passes the listening socket as fd 3.
SERVER_C = r"""
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    static const char reply[] =
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n"
        "Connection: close\r\n\r\nhello from pdtest\n";
    char buf[4096];
    for (;;) {
        int c = accept(3, 0, 0);
        if (c < 0) return 1;
        (void)read(c, buf, sizeof buf);
        (void)write(c, reply, sizeof reply - 1);
        close(c);
    }
}
"""

SOCKET_UNIT = """\
[Unit]
Description=pdtest socket

[Socket]
ListenStream=80
Accept=no

[Install]
WantedBy=sockets.target
"""

SERVICE_UNIT = """\
[Unit]
Description=pdtest static HTTP server

[Service]
ExecStart=/usr/bin/pdtest-server
"""

OS_RELEASE = 'ID=pdtest\nNAME="pdtest"\nVERSION_ID=1\n'


def build_portable_image(out: Path) -> Path:
    """pdtest_1.raw: a squashfs portable image with a socket-activated static server."""
    tree = out / "tree"
    for d in ("usr/bin", "usr/lib/systemd/system", "etc", "proc", "sys", "dev", "run", "tmp"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    (tree / "var/tmp").mkdir(parents=True)
    (tree / "usr/lib/os-release").write_text(OS_RELEASE)
    (tree / "etc/resolv.conf").write_text("")
    (tree / "etc/machine-id").write_text("")
    (tree / "usr/lib/systemd/system/pdtest.socket").write_text(SOCKET_UNIT)
    (tree / "usr/lib/systemd/system/pdtest.service").write_text(SERVICE_UNIT)
    source = out / "server.c"
    source.write_text(SERVER_C)
    binary = tree / "usr/bin/pdtest-server"
    subprocess.run(["gcc", "-static", "-Os", "-o", str(binary), str(source)], check=True)
    image = out / "pdtest_1.raw"
    subprocess.run(
        ["mksquashfs", str(tree), str(image), "-noappend", "-all-root", "-quiet", "-no-progress"],
        check=True,
    )
    return image


def http_get(port: int, attempts: int = 20) -> str:
    """GET http://127.0.0.1:PORT/ (loopback only), retrying while the service starts."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
                return str(resp.status) + " " + resp.read().decode()
        except OSError as exc:
            last = exc
            time.sleep(1)
    raise AssertionError(f"no HTTP answer on 127.0.0.1:{port}: {last}")


def test_up_gives_root_ssh_with_checked_host_key(sandbox_vm: VM) -> None:
    """up() returns a VM where root logs in with the sandbox key and a pinned host key."""
    assert ssh_run(sandbox_vm, "id -un").stdout.strip() == "root"
    assert ssh_run(sandbox_vm, "hostname").stdout.strip() == "sandbox-1"
    assert sandbox_vm.known_hosts.read_text().startswith(f"[127.0.0.1]:{sandbox_vm.ssh_port} ")


def test_ssh_argv_pins_host_key_and_key(sandbox: Sandbox, sandbox_vm: VM) -> None:
    """ssh_argv() is strict about the host key, uses only the sandbox key, and works."""
    argv = sandbox.ssh_argv("sandbox-1", ["echo", "ok"])
    assert "StrictHostKeyChecking=yes" in argv
    assert f"UserKnownHostsFile={sandbox_vm.known_hosts}" in argv
    assert argv[argv.index("-i") + 1] == str(sandbox_vm.key)
    assert subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout == "ok\n"


def test_a_shared_connection_carries_commands_and_stops_by_pid(sandbox_vm: VM) -> None:
    """mux.share starts one master per VM that ssh_argv's commands ride on (ssh -O check finds
    it); mux.stop ends it, its socket goes, and commands connect on their own again."""
    check = [*sandbox_vm.ssh_argv(batch=True)[:-1], "-O", "check", "root@127.0.0.1"]
    try:
        assert mux.share(sandbox_vm)
        master = subprocess.run(check, capture_output=True, text=True, check=False)
        assert master.returncode == 0, master.stderr
        pid = int(re.findall(r"pid=(\d+)", master.stderr)[0])
        assert ssh_run(sandbox_vm, "echo through").stdout == "through\n"
        assert mux.stop(sandbox_vm)
        assert not pid_alive(pid) and not sandbox_vm.control_path.exists()
        assert subprocess.run(check, capture_output=True, check=False).returncode != 0
        assert ssh_run(sandbox_vm, "echo direct").stdout == "direct\n"
    finally:
        mux.share(sandbox_vm)  # as the fixture left it


def test_a_changed_host_key_is_refused(sandbox_vm: VM, tmp_path: Path) -> None:
    """With a known_hosts that does not match, ssh refuses instead of accepting the VM."""
    wrong = tmp_path / "known_hosts"
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = (tmp_path / "other.pub").read_text().split()
    wrong.write_text(f"[127.0.0.1]:{sandbox_vm.ssh_port} {pub[0]} {pub[1]}\n")
    argv = dataclasses.replace(sandbox_vm, known_hosts=wrong).ssh_argv(["true"], batch=True)
    # A connection of its own, not the shared one (whose host key was checked when it opened).
    argv[1:1] = ["-o", "ControlPath=none"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in proc.stderr


def test_systemd_is_252(sandbox_vm: VM) -> None:
    """The sandbox runs Debian 12's systemd 252, like the target VPS."""
    assert ssh_run(sandbox_vm, "systemd --version").stdout.startswith("systemd 252 ")


def test_the_vm_has_its_share_of_cores_and_a_tsc_clock(sandbox: Sandbox, sandbox_vm: VM) -> None:
    """The session's VM gets no more vCPUs than its worker's share of the host's cores, and its
    kernel keeps time with the TSC (with QEMU's TSC taken as reliable), not the emulated HPET."""
    expected = qemu.vcpus(1, sandbox.cores)
    out = ssh_run(
        sandbox_vm,
        "nproc; cat /sys/devices/system/clocksource/clocksource0/current_clocksource",
    ).stdout.split()
    assert out == [str(expected), "tsc"]
    assert sandbox_vm.cpus == expected


def test_portablectl_is_installed(sandbox_vm: VM) -> None:
    """portablectl (systemd-container) is there to attach images."""
    assert "attach" in ssh_run(sandbox_vm, "portablectl --help").stdout


def test_localhost_resolves_inside_vm(sandbox_vm: VM) -> None:
    """/etc/hosts exists, so SSH forwards to localhost work inside the VM."""
    assert ssh_run(sandbox_vm, "getent ahostsv4 localhost").stdout.startswith("127.0.0.1 ")


@pytest.fixture
def pdtest_image(sandbox_vm: VM, tmp_path: Path) -> Iterator[str]:
    """pdtest_1.raw copied into /var/lib/portables/ on the VM; detached and deleted after."""
    image = build_portable_image(tmp_path)
    with image.open("rb") as f:
        subprocess.run(
            sandbox_vm.ssh_argv(["cat > /var/lib/portables/pdtest_1.raw"], batch=True),
            stdin=f,
            check=True,
            timeout=120,
        )
    try:
        yield "pdtest_1"
    finally:
        ssh_run(
            sandbox_vm,
            "portablectl detach --now --enable pdtest_1; rm -f /var/lib/portables/pdtest_1.raw",
            check=False,
        )


def test_portable_service_answers_on_forwarded_http_port(sandbox_vm: VM, pdtest_image: str) -> None:
    """A socket-activated portable service on guest :80 answers on 127.0.0.1:http_port."""
    ssh_run(sandbox_vm, f"portablectl attach --now --enable {pdtest_image}")
    # `attach --now` queues the start; on a loaded machine the socket may come a moment later.
    active = ssh_run(
        sandbox_vm,
        "for i in $(seq 100); do systemctl is-active --quiet pdtest.socket && break; "
        "sleep 0.1; done; systemctl is-active pdtest.socket",
    )
    assert active.stdout.strip() == "active"
    assert http_get(sandbox_vm.http_port) == "200 hello from pdtest\n"


def test_second_up_reuses_running_vm(sandbox: Sandbox, sandbox_vm: VM) -> None:
    """up() while sandbox-1 runs returns the same QEMU process, not a new boot."""
    lines: list[str] = []
    again = sandbox.up(1, progress=lines.append)
    assert again == [sandbox_vm]
    assert not any("booting" in line for line in lines)


def test_status_lists_running_vm(sandbox: Sandbox, sandbox_vm: VM) -> None:
    """status() reports sandbox-1 with its live QEMU pid."""
    assert sandbox_vm in sandbox.status()
    assert b"qemu" in Path(f"/proc/{sandbox_vm.pid}/cmdline").read_bytes()


def test_fleet_is_three_distinct_hosts(sandbox_fleet: list[VM], sandbox_vm: VM) -> None:
    """up(3) keeps sandbox-1 and adds two hosts with their own ports, keys and hostnames."""
    assert [vm.name for vm in sandbox_fleet] == ["sandbox-1", "sandbox-2", "sandbox-3"]
    assert sandbox_fleet[0].pid == sandbox_vm.pid
    ports = [p for vm in sandbox_fleet for p in (vm.ssh_port, vm.http_port, vm.https_port)]
    assert len(set(ports)) == 9
    assert len({vm.key for vm in sandbox_fleet}) == 3
    names = [ssh_run(vm, "hostname").stdout.strip() for vm in sandbox_fleet]
    assert names == ["sandbox-1", "sandbox-2", "sandbox-3"]
    machine_ids = {ssh_run(vm, "cat /etc/machine-id").stdout.strip() for vm in sandbox_fleet}
    assert len(machine_ids) == 3


def test_fleet_keys_are_per_vm(sandbox_fleet: list[VM]) -> None:
    """One sandbox's key does not open another sandbox."""
    first, second = sandbox_fleet[0], sandbox_fleet[1]
    borrowed = dataclasses.replace(second, key=first.key)
    proc = subprocess.run(borrowed.ssh_argv(["true"], batch=True), capture_output=True, timeout=60)
    assert proc.returncode == 255


def test_ssh_argv_for_a_vm_that_is_not_running_is_an_error(sandbox: Sandbox) -> None:
    """ssh_argv() names the missing VM and points at sandbox.up instead of returning a dead argv."""
    with pytest.raises(DeployError, match="sandbox-9") as err:
        sandbox.ssh_argv("sandbox-9")
    assert "sandbox.up" in (err.value.hint or "")


def test_missing_qemu_is_reported_with_apt_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without qemu-system-x86_64 on PATH, up() says so and gives the apt-get line."""
    monkeypatch.setenv("PATH", str(tmp_path))
    box = Sandbox(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    with pytest.raises(DeployError, match="qemu-system-x86_64 is not installed") as err:
        box.up(1)
    assert "apt-get install" in (err.value.hint or "")
    assert "qemu-system-x86" in (err.value.hint or "")


def test_building_without_root_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no cached base, a non-root ensure_base() stops with a hint to use sudo."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    box = Sandbox(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    with pytest.raises(DeployError, match="needs root") as err:
        box.ensure_base()
    assert "sudo" in (err.value.hint or "")
    assert not list(box.cache_dir.glob("base-*"))


# --- a second Sandbox with its own cache copy: corruption, rebuild, down -----------------------


def _copy_cache(shared: Path, cache: Path) -> Path:
    """A copy of the shared base dir in CACHE: rootfs hard-linked, nothing shared is written."""
    src = shared / f"base-{base_key()}"
    dst = cache / src.name
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)
    return dst


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, sandbox: Sandbox) -> Iterator[Sandbox]:
    """A Sandbox with its own state dir and a private copy of the base cache."""
    if os.geteuid() != 0:
        pytest.skip("rebuilding a base image needs root")
    sandbox.ensure_base()
    root = tmp_path_factory.mktemp("scratch")
    box = Sandbox(state_dir=root / "state", cache_dir=root / "cache")
    box.cache_dir.mkdir()
    _copy_cache(sandbox.cache_dir, box.cache_dir)
    try:
        yield box
    finally:
        teardown_sandbox(box)


def _replace(path: Path, data: bytes, size: int | None = None) -> None:
    """Write a new file at PATH (never in place: the original may be a hard link)."""
    path.unlink()
    with path.open("wb") as f:
        f.write(data)
        if size is not None:
            f.truncate(size)


def test_flipped_byte_in_disk_head_is_rebuilt(scratch: Sandbox) -> None:
    """A disk.img of the right size whose first 16 MiB changed is rebuilt by ensure_base."""
    disk = scratch.base_dir / "disk.img"
    size = disk.stat().st_size
    with disk.open("rb") as f:
        head = bytearray(f.read(16 << 20))
    head[1024 + 0x78] ^= 0xFF  # inside the ext4 superblock's volume name
    _replace(disk, bytes(head), size)
    lines: list[str] = []
    base = scratch.ensure_base(progress=lines.append)
    meta = json.loads((scratch.base_dir / "base.json").read_text())
    with base.disk.open("rb") as f:
        assert hashlib.sha256(f.read(16 << 20)).hexdigest() == meta["disk_head_sha256"]
    assert any("rebuilding disk.img" in line for line in lines)


def test_truncated_disk_is_rebuilt_not_booted(scratch: Sandbox) -> None:
    """A truncated cached disk.img is rebuilt from the kept rootfs, and the VM boots from it."""
    disk = scratch.base_dir / "disk.img"
    size = disk.stat().st_size
    with disk.open("rb") as f:
        _replace(disk, f.read(1 << 20))
    lines: list[str] = []
    vm = scratch.up(1, progress=lines.append, timeout=BOOT_TIMEOUT)[0]
    assert disk.stat().st_size == size
    assert lines.index(next(x for x in lines if "rebuilding disk.img" in x)) < lines.index(
        next(x for x in lines if "booting" in x)
    )
    assert ssh_run(vm, "findmnt -no SOURCE /").stdout.strip() == "/dev/vda"


def test_down_stops_qemu_and_removes_overlays(scratch: Sandbox) -> None:
    """down() stops the state dir's QEMU processes and deletes their overlays."""
    vms = scratch.up(1, timeout=BOOT_TIMEOUT)
    overlays = list(scratch.state_dir.glob("*/overlay.qcow2"))
    assert overlays
    assert scratch.down() == [vm.name for vm in vms]
    deadline = time.monotonic() + 10
    while any(pid_alive(vm.pid) for vm in vms) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(pid_alive(vm.pid) for vm in vms)
    assert not any(path.exists() for path in overlays)
    assert scratch.status() == []


def test_boot_timeout_shows_console_and_stops_vm(
    scratch: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM not up in time raises with the console's last lines, and its QEMU is stopped."""
    # SSH that can never log in makes the timeout certain, however fast the machine boots.
    real_argv = VM.ssh_argv

    def refused(vm: VM, command: Sequence[str] = (), batch: bool = False) -> list[str]:
        return ["ssh", "-o", "PubkeyAuthentication=no", *real_argv(vm, command, batch)[1:]]

    monkeypatch.setattr(VM, "ssh_argv", refused)
    box = Sandbox(state_dir=tmp_path / "state", cache_dir=scratch.cache_dir)
    try:
        with pytest.raises(DeployError, match="did not answer SSH within 20 s") as err:
            box.up(1, timeout=20)
        header, *tail = err.value.message.splitlines()
        assert "last lines of its console" in header
        raw = (box.state_dir / "sandbox-1/console.log").read_text(errors="replace")
        console = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
        assert tail
        assert all(line in console for line in tail)
        assert box.status() == []
        assert not list(box.state_dir.glob("*/overlay.qcow2"))
    finally:
        teardown_sandbox(box)


def test_shared_cache_untouched_by_scratch(sandbox: Sandbox) -> None:
    """The shared base still verifies after the scratch copies were corrupted and rebuilt."""
    meta = json.loads((sandbox.base_dir / "base.json").read_text())
    disk = sandbox.base_dir / "disk.img"
    assert disk.stat().st_size == meta["disk_bytes"]
    with disk.open("rb") as f:
        assert hashlib.sha256(f.read(16 << 20)).hexdigest() == meta["disk_head_sha256"]
