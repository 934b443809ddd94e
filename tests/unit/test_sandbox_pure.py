"""The sandbox's pure parts: cache key, QEMU command line, VM records, console tail, vCPUs."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import pytest

from portable_deploy.errors import DeployError
from portable_deploy.sandbox import VM, base_key
from portable_deploy.sandbox.base import FILES_DIR, ROOTFS_FILES, base_dir, lock_root_password
from portable_deploy.sandbox.qemu import (
    KEY_PARAM,
    VM_MAX_CPUS,
    Accel,
    Ports,
    QemuSpec,
    forced_accel,
    is_port_clash,
    is_qemu_on,
    kernel_cmdline,
    kvm_probe_argv,
    qemu_argv,
    vcpus,
)
from portable_deploy.sandbox.vm import console_tail, known_hosts_line

# The value base_key() had before the sandbox became a package. Users' base images are cached
# under ~/.cache/portable-deploy/base-KEY: changing the key silently invalidates every user's
# cache and costs each of them a root debootstrap. Change it only on purpose, with the recipe.
PINNED_BASE_KEY = "a0d9348ccb73"

# A vm.json written by the code before the split (sandbox.py at eb0350b), copied from a VM it
# booted on the development machine. Running VMs of users who upgrade must stay visible to
# status() and down().
OLD_VM_JSON = """\
{
  "name": "sandbox-1",
  "pid": 28798,
  "ssh_port": 48357,
  "http_port": 53333,
  "https_port": 51669,
  "key": "/tmp/qs2-sandbox/sandbox-1/id_ed25519",
  "known_hosts": "/tmp/qs2-sandbox/sandbox-1/known_hosts",
  "user": "root",
  "overlay": "/tmp/qs2-sandbox/sandbox-1/overlay.qcow2",
  "base": "/root/.cache/portable-deploy/base-a0d9348ccb73",
  "accel": "tcg",
  "cpus": 2,
  "started_at": 1795735982.4332952
}
"""
# The shape written before "cpus" was recorded (commit f4ff346).
OLDEST_VM_JSON = """\
{
  "name": "sandbox-2",
  "pid": 4242,
  "ssh_port": 40001,
  "http_port": 40002,
  "https_port": 40003,
  "key": "/state/sandbox-2/id_ed25519",
  "known_hosts": "/state/sandbox-2/known_hosts",
  "user": "root",
  "overlay": "/state/sandbox-2/overlay.qcow2",
  "base": "/cache/base-0123456789ab",
  "accel": "kvm",
  "started_at": 1700000000.5
}
"""


def _spec(accel: Accel = Accel.TCG) -> QemuSpec:
    return QemuSpec(
        name="sandbox-1",
        accel=accel,
        cpus=2,
        kernel=Path("/cache/base/vmlinuz"),
        initrd=Path("/cache/base/initrd.img"),
        append="root=/dev/vda rw",
        overlay=Path("/state/sandbox-1/overlay.qcow2"),
        console=Path("/state/sandbox-1/console.log"),
        pidfile=Path("/state/sandbox-1/qemu.pid"),
    )


PORTS = Ports(ssh=41000, http=41001, https=41002)


def _value(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


# --- base image -----------------------------------------------------------------------------


def test_base_key_is_pinned() -> None:
    """base_key() is the recorded value, so existing cached base images stay valid."""
    assert base_key() == PINNED_BASE_KEY


def test_base_dir_is_named_after_the_key(tmp_path: Path) -> None:
    """The base image of the current recipe lives in CACHE/base-KEY."""
    assert base_dir(tmp_path) == tmp_path / f"base-{PINNED_BASE_KEY}"


def test_every_rootfs_file_is_package_data() -> None:
    """Each file the base image gets is present in the package's files directory."""
    assert sorted(p.name for p in FILES_DIR.iterdir()) == sorted(ROOTFS_FILES)


def test_root_password_is_locked() -> None:
    """Provisioning prefixes root's password hash with ! and leaves other accounts alone."""
    shadow = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
    assert lock_root_password(shadow) == "root:!*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def test_locked_root_password_is_not_locked_twice() -> None:
    """An already locked root password is left as it is."""
    shadow = "root:!*:19000:0:99999:7:::\n"
    assert lock_root_password(shadow) == shadow


# --- QEMU command line ----------------------------------------------------------------------


def test_qemu_argv_is_pinned() -> None:
    """The whole QEMU command line for a TCG VM, option next to value."""
    assert qemu_argv(_spec(), PORTS) == [
        "qemu-system-x86_64",
        "-name", "sandbox-1",
        "-accel", "tcg,thread=multi", "-cpu", "max",
        "-m", "1024",
        "-smp", "2",
        "-kernel", "/cache/base/vmlinuz",
        "-initrd", "/cache/base/initrd.img",
        "-append", "root=/dev/vda rw",
        "-drive", "file=/state/sandbox-1/overlay.qcow2,format=qcow2,if=virtio",
        "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:41000-:22,hostfwd=tcp:127.0.0.1:41001-:80,"
        "hostfwd=tcp:127.0.0.1:41002-:443",
        "-device", "virtio-net-pci,netdev=n0",
        "-serial", "file:/state/sandbox-1/console.log",
        "-display", "none",
        "-monitor", "none",
        "-nodefaults",
        "-daemonize",
        "-pidfile", "/state/sandbox-1/qemu.pid",
    ]  # fmt: skip


def test_qemu_forwards_ports_on_loopback_only() -> None:
    """Every host port forward binds 127.0.0.1, never all interfaces."""
    netdev = _value(qemu_argv(_spec(), PORTS), "-netdev")
    forwards = [part for part in netdev.split(",") if part.startswith("hostfwd=")]
    assert forwards == [
        "hostfwd=tcp:127.0.0.1:41000-:22",
        "hostfwd=tcp:127.0.0.1:41001-:80",
        "hostfwd=tcp:127.0.0.1:41002-:443",
    ]


def test_qemu_tcg_uses_multithreaded_emulation() -> None:
    """Under TCG, QEMU gets multi-threaded TCG and -cpu max, and no KVM flags."""
    argv = qemu_argv(_spec(Accel.TCG), PORTS)
    assert (_value(argv, "-accel"), _value(argv, "-cpu")) == ("tcg,thread=multi", "max")
    assert "kvm" not in argv


def test_qemu_kvm_uses_host_cpu() -> None:
    """Under KVM, QEMU gets -accel kvm and -cpu host."""
    argv = qemu_argv(_spec(Accel.KVM), PORTS)
    assert (_value(argv, "-accel"), _value(argv, "-cpu")) == ("kvm", "host")


def test_qemu_daemonizes_without_a_display() -> None:
    """QEMU runs in the background with -display none (-nographic cannot go with -daemonize)."""
    argv = qemu_argv(_spec(), PORTS)
    assert "-daemonize" in argv
    assert _value(argv, "-display") == "none"
    assert "-nographic" not in argv


def test_qemu_writes_its_pidfile() -> None:
    """QEMU writes its pid to the VM's qemu.pid, which down() reads."""
    assert _value(qemu_argv(_spec(), PORTS), "-pidfile") == "/state/sandbox-1/qemu.pid"


def test_kernel_cmdline_carries_the_vm_key_and_identity() -> None:
    """The kernel command line names the VM and hands it its authorized key in base64."""
    line = kernel_cmdline("sandbox-3", "ab" * 16, b"ssh-ed25519 AAAA test\n").split()
    assert line[:3] == ["root=/dev/vda", "rw", "console=ttyS0"]
    assert "systemd.hostname=sandbox-3" in line
    assert f"systemd.machine_id={'ab' * 16}" in line
    key = next(w for w in line if w.startswith(f"{KEY_PARAM}="))
    assert base64.b64decode(key.split("=", 1)[1]) == b"ssh-ed25519 AAAA test\n"


def test_kvm_probe_boots_only_the_kernel() -> None:
    """The KVM probe boots the kernel under KVM with no disk, no network and no daemonizing."""
    argv = kvm_probe_argv(Path("/cache/base/vmlinuz"), Path("/tmp/probe/serial.log"))
    assert (_value(argv, "-accel"), _value(argv, "-kernel")) == ("kvm", "/cache/base/vmlinuz")
    assert not {"-drive", "-netdev", "-daemonize"} & set(argv)


@pytest.mark.parametrize(
    ("error", "clash"),
    [
        (
            "qemu-system-x86_64: Could not set up host forwarding rule 'tcp:127.0.0.1:41000-:22'",
            True,
        ),
        ("qemu-system-x86_64: -netdev user: address already in use", True),
        ("qemu-system-x86_64: could not load kernel '/cache/base/vmlinuz'", False),
    ],
)
def test_port_clash_is_recognised(error: str, clash: bool) -> None:
    """Only QEMU errors about a forwarded port make start() retry with other ports."""
    assert is_port_clash(error) is clash


def test_qemu_process_is_recognised_by_its_overlay() -> None:
    """A QEMU command line naming the VM's overlay is that VM's QEMU."""
    cmdline = b"qemu-system-x86_64\0-drive\0file=/state/sandbox-1/overlay.qcow2,format=qcow2\0"
    assert is_qemu_on(cmdline, Path("/state/sandbox-1/overlay.qcow2"))


def test_other_qemu_is_not_ours() -> None:
    """A QEMU on another VM's overlay is not stopped by this VM's down()."""
    cmdline = b"qemu-system-x86_64\0-drive\0file=/state/sandbox-2/overlay.qcow2\0"
    assert not is_qemu_on(cmdline, Path("/state/sandbox-1/overlay.qcow2"))


def test_non_qemu_process_naming_the_overlay_is_not_ours() -> None:
    """A reused pid running something else (here rm of the overlay) is not taken for QEMU."""
    cmdline = b"rm\0-f\0/state/sandbox-1/overlay.qcow2\0"
    assert not is_qemu_on(cmdline, Path("/state/sandbox-1/overlay.qcow2"))


def test_gone_process_is_not_ours() -> None:
    """An empty command line (a zombie, or a pid that vanished) is not a running QEMU."""
    assert not is_qemu_on(b"", Path("/state/sandbox-1/overlay.qcow2"))


# --- accelerator and vCPUs ------------------------------------------------------------------


def test_unset_accel_variable_forces_nothing() -> None:
    """An empty PORTABLE_DEPLOY_ACCEL leaves the choice to the KVM probe."""
    assert forced_accel("  ") is None


def test_accel_variable_is_case_insensitive() -> None:
    """PORTABLE_DEPLOY_ACCEL=' KVM ' forces KVM."""
    assert forced_accel(" KVM ") is Accel.KVM


def test_unknown_accel_variable_is_an_error_with_hint() -> None:
    """PORTABLE_DEPLOY_ACCEL=xen is refused, with the values it takes."""
    with pytest.raises(DeployError, match="'xen' is not an accelerator") as err:
        forced_accel("xen")
    assert "PORTABLE_DEPLOY_ACCEL=tcg" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("booting", "cores", "expected"),
    [(1, 2, 2), (2, 2, 1), (3, 2, 1), (1, 16, VM_MAX_CPUS), (1, 1, 1), (4, 16, 2)],
)
def test_vcpus_never_exceed_host_cores(booting: int, cores: int, expected: int) -> None:
    """VMs booting together get no more vCPUs in all than the host has cores, at least one each."""
    assert vcpus(booting, cores) == expected


# --- VM records -----------------------------------------------------------------------------


def test_vm_json_written_before_the_split_loads() -> None:
    """A vm.json from the old sandbox.py loads into the same VM fields."""
    vm = VM.from_json(OLD_VM_JSON)
    assert (vm.name, vm.pid, vm.ssh_port, vm.http_port, vm.https_port) == (
        "sandbox-1", 28798, 48357, 53333, 51669
    )  # fmt: skip
    assert vm.key == Path("/tmp/qs2-sandbox/sandbox-1/id_ed25519")
    assert vm.known_hosts == Path("/tmp/qs2-sandbox/sandbox-1/known_hosts")
    assert vm.overlay == Path("/tmp/qs2-sandbox/sandbox-1/overlay.qcow2")
    assert (vm.user, vm.accel, vm.cpus) == ("root", "tcg", 2)


def test_vm_json_is_written_as_before() -> None:
    """to_json() of an old record gives back the old text, byte for byte."""
    assert VM.from_json(OLD_VM_JSON).to_json() == OLD_VM_JSON


def test_vm_json_without_cpus_loads() -> None:
    """A record from before vCPUs were recorded loads, with cpus unknown."""
    vm = VM.from_json(OLDEST_VM_JSON)
    assert (vm.name, vm.cpus, vm.accel) == ("sandbox-2", None, "kvm")
    assert VM.from_json(vm.to_json()) == vm


def test_vm_json_round_trip() -> None:
    """A VM written with to_json() reads back equal, so up() and status() agree."""
    vm = VM(
        name="sandbox-2",
        pid=7,
        ssh_port=1,
        http_port=2,
        https_port=3,
        key=Path("/s/k"),
        known_hosts=Path("/s/kh"),
        overlay=Path("/s/o.qcow2"),
        base=Path("/c/base-x"),
        accel=Accel.KVM.value,
        cpus=1,
        started_at=1795735982.4332952,
    )
    assert VM.from_json(vm.to_json()) == vm


def test_vm_json_without_user_means_root() -> None:
    """A record with no user field logs in as root, as the old reader did."""
    data = json.loads(OLD_VM_JSON)
    del data["user"]
    assert VM.from_json(json.dumps(data)).user == "root"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"name": "sandbox-1"}',
        OLD_VM_JSON.replace('"pid": 28798', '"pid": "x"'),
        OLD_VM_JSON.replace('  "overlay": "/tmp/qs2-sandbox/sandbox-1/overlay.qcow2",\n', ""),
    ],
)
def test_broken_vm_json_is_a_value_error(text: str) -> None:
    """An empty, partial or mistyped record raises ValueError, which status() skips."""
    with pytest.raises(ValueError):
        VM.from_json(text)


def test_vm_ssh_argv_checks_the_host_key() -> None:
    """ssh to the VM uses only its key, its own known_hosts, and strict host key checking."""
    vm = VM.from_json(OLD_VM_JSON)
    argv = vm.ssh_argv(["true"])
    assert argv[-2:] == ["root@127.0.0.1", "true"]
    assert _value(argv, "-p") == "48357"
    assert _value(argv, "-i") == "/tmp/qs2-sandbox/sandbox-1/id_ed25519"
    assert "StrictHostKeyChecking=yes" in argv
    assert "UserKnownHostsFile=/tmp/qs2-sandbox/sandbox-1/known_hosts" in argv
    assert "BatchMode=yes" not in argv


def test_vm_ssh_argv_batch_never_prompts() -> None:
    """BATCH adds BatchMode and a connect timeout, before the destination."""
    argv = VM.from_json(OLD_VM_JSON).ssh_argv(batch=True)
    assert argv[-1] == "root@127.0.0.1"
    assert "BatchMode=yes" in argv and "ConnectTimeout=5" in argv


def test_vm_ssh_argv_rides_on_the_shared_connection_when_one_runs() -> None:
    """Every command names the VM's control socket, in its state dir, and never becomes a
    master itself: with no shared connection running, ssh connects on its own."""
    vm = VM.from_json(OLD_VM_JSON)
    argv = vm.ssh_argv(["true"])
    assert vm.control_path == Path("/tmp/qs2-sandbox/sandbox-1/ssh-48357.mux")
    assert "ControlPath=/tmp/qs2-sandbox/sandbox-1/ssh-48357.mux" in argv
    assert "ControlMaster=no" in argv


def test_vm_is_frozen() -> None:
    """A VM is a value: fields cannot be reassigned, only replaced into a new VM."""
    vm = VM.from_json(OLD_VM_JSON)
    with pytest.raises(dataclasses.FrozenInstanceError):
        vm.pid = 1  # type: ignore[misc]


def test_known_hosts_line_pins_the_forwarded_port() -> None:
    """The known_hosts entry names 127.0.0.1 with the VM's SSH port, as ssh -p looks it up."""
    assert known_hosts_line(41000, "ssh-ed25519 AAAAC3") == "[127.0.0.1]:41000 ssh-ed25519 AAAAC3\n"


# --- console --------------------------------------------------------------------------------


def test_console_tail_drops_escapes_and_blank_lines() -> None:
    """Terminal colour codes, carriage returns and empty lines are left out of the tail."""
    text = "\x1b[0;32m  OK  \x1b[0m] Started ssh.service\r\n\r\n\x1b[?25lLogin: \n"
    assert console_tail(text) == "  OK  ] Started ssh.service\nLogin:"


def test_console_tail_keeps_the_last_lines() -> None:
    """Only the last LINES lines of a long console are shown."""
    text = "".join(f"line {i}\n" for i in range(100))
    assert console_tail(text, lines=3) == "line 97\nline 98\nline 99"


def test_empty_console_says_so() -> None:
    """A console with nothing printed says so instead of showing nothing."""
    assert console_tail("\r\n \n") == "(no console output)"
