"""QEMU: the command line that boots a sandbox VM (pure), starting it, and the KVM probe."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from portable_deploy.errors import DeployError

from .local import shell, write_atomic

VM_MEMORY_MB = 1024
VM_MAX_CPUS = 2
# The kernel command-line parameter that hands a VM its authorized key (read by sandbox-init.sh):
# the key is made per VM, so it is never baked into the shared base image.
KEY_PARAM = "portable_deploy.authorized_key"

_START_ATTEMPTS = 5
_KVM_PROBE_SECONDS = 8.0


class Accel(StrEnum):
    """QEMU's accelerator: software emulation, or the kernel's KVM."""

    TCG = "tcg"
    KVM = "kvm"


@dataclass(frozen=True)
class Ports:
    """Host ports, on 127.0.0.1, forwarded to the guest's SSH, HTTP and HTTPS."""

    ssh: int
    http: int
    https: int

    def forwards(self) -> tuple[tuple[int, int], ...]:
        """(host port, guest port) pairs."""
        return ((self.ssh, 22), (self.http, 80), (self.https, 443))


@dataclass(frozen=True)
class QemuSpec:
    """Everything a VM's QEMU command line is made of, except the ports chosen at start."""

    name: str
    accel: Accel
    cpus: int
    kernel: Path
    initrd: Path
    append: str
    overlay: Path
    console: Path
    pidfile: Path
    memory_mb: int = VM_MEMORY_MB


def kernel_cmdline(name: str, machine_id: str, authorized_key: bytes) -> str:
    """The ``-append`` line: root on virtio, serial console, hostname, machine id and SSH key."""
    return " ".join(
        [
            "root=/dev/vda",
            "rw",
            "console=ttyS0",
            # Kernel chatter off, systemd's status lines on: the console tail shown when a
            # boot times out is then about units.
            "loglevel=4",
            "systemd.show_status=true",
            "panic=-1",
            # QEMU's TSC is the host's clock, the same on every vCPU; without this the kernel
            # finds it "unsynchronized" at boot and falls back to the HPET, and then every
            # clock read (Go's runtime makes many, systemd too) is a system call and an
            # emulated MMIO read.
            "tsc=reliable",
            f"systemd.hostname={name}",
            f"systemd.machine_id={machine_id}",
            f"{KEY_PARAM}={base64.b64encode(authorized_key).decode()}",
        ]
    )


def accel_args(accel: Accel) -> list[str]:
    """``-accel`` and ``-cpu`` for ACCEL."""
    if accel == Accel.KVM:
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def qemu_argv(spec: QemuSpec, ports: Ports) -> list[str]:
    """The command line that starts SPEC's VM in the background, its ports on 127.0.0.1 only."""
    forwards = ",".join(
        f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in ports.forwards()
    )
    return [
        "qemu-system-x86_64",
        "-name", spec.name,
        *accel_args(spec.accel),
        "-m", str(spec.memory_mb),
        "-smp", str(spec.cpus),
        "-kernel", str(spec.kernel),
        "-initrd", str(spec.initrd),
        "-append", spec.append,
        "-drive", f"file={spec.overlay},format=qcow2,if=virtio",
        "-netdev", f"user,id=n0,{forwards}",
        "-device", "virtio-net-pci,netdev=n0",
        "-serial", f"file:{spec.console}",
        # -nographic cannot be combined with -daemonize.
        "-display", "none",
        "-monitor", "none",
        "-nodefaults",
        # No -no-reboot: a reboot inside the VM (the fault suite's hard reboot) resets it.
        "-daemonize",
        "-pidfile", str(spec.pidfile),
    ]  # fmt: skip


def is_port_clash(error: str) -> bool:
    """True if QEMU's ERROR output says a forwarded port could not be bound (worth a retry)."""
    lowered = error.lower()
    return "forward" in lowered or "address" in lowered


def start(spec: QemuSpec) -> Ports:
    """Start SPEC's QEMU (it daemonizes); retry with new ports when one was taken meanwhile."""
    last_error = ""
    for _attempt in range(_START_ATTEMPTS):
        ports = Ports(*free_ports(3))
        argv = qemu_argv(spec, ports)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode == 0:
            return ports
        last_error = (proc.stderr or proc.stdout).strip()
        if not is_port_clash(last_error):
            raise DeployError(
                f"QEMU failed to start {spec.name}: {last_error}", hint=f"rerun: {shell(argv)}"
            )
    raise DeployError(
        f"QEMU could not bind free ports for {spec.name}: {last_error}",
        hint="free some ports on 127.0.0.1 and rerun",
    )


def free_ports(count: int) -> list[int]:
    """COUNT distinct free TCP ports on 127.0.0.1 (all held open while choosing)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def vcpus(booting: int, cores: int | None = None) -> int:
    """vCPUs per VM when BOOTING VMs start together: no more emulated CPUs than host CORES.

    Under TCG every vCPU is a busy host thread; three 2-vCPU VMs on two cores took 47 s to
    start sshd against 40 s with one vCPU each, while a lone VM boots faster with two. A VM
    given more vCPUs than its share of cores is slower, not faster: with another core-bound
    process beside it, an app-only deploy took 27.6 s in a 2-vCPU VM and 22.0 s in a 1-vCPU one
    (a vCPU thread that holds a guest lock is descheduled while the other spins for it).
    """
    cores = cores or os.cpu_count() or 1
    return max(1, min(VM_MAX_CPUS, cores // max(1, booting)))


# --- processes ------------------------------------------------------------------------------


def is_qemu_on(cmdline: bytes, overlay: Path) -> bool:
    """True if CMDLINE (``/proc/PID/cmdline``) is a QEMU booted on OVERLAY."""
    argv = cmdline.split(b"\0")
    return bool(argv) and b"qemu" in argv[0] and any(str(overlay).encode() in a for a in argv)


def is_our_qemu(pid: int, overlay: Path) -> bool:
    """True if PID is a live QEMU booted on OVERLAY (a reused pid or a zombie is not)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return is_qemu_on(cmdline, overlay)


# --- KVM ------------------------------------------------------------------------------------


def forced_accel(value: str) -> Accel | None:
    """The accelerator that ``PORTABLE_DEPLOY_ACCEL``'s VALUE forces; None when it is unset."""
    forced = value.strip().lower()
    if not forced:
        return None
    if forced in (Accel.TCG, Accel.KVM):
        return Accel(forced)
    raise DeployError(
        f"PORTABLE_DEPLOY_ACCEL={forced!r} is not an accelerator",
        hint="use PORTABLE_DEPLOY_ACCEL=tcg or PORTABLE_DEPLOY_ACCEL=kvm, or unset it",
    )


def choose_accel(cache_dir: Path, kernel: Path) -> Accel:
    """KVM if /dev/kvm really boots KERNEL (probed once per host boot, cached), else TCG."""
    forced = forced_accel(os.environ.get("PORTABLE_DEPLOY_ACCEL", ""))
    if forced is not None:
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel.TCG
    record = cache_dir / "kvm-probe.json"
    boot_id = _boot_id()
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(record.read_text())
        if cached.get("boot_id") == boot_id:
            return Accel.KVM if cached.get("works") else Accel.TCG
    works = probe_kvm(kernel, Path(tempfile.gettempdir()))
    with contextlib.suppress(OSError):  # a cache dir built by root may be read-only to us
        write_atomic(record, json.dumps({"boot_id": boot_id, "works": works}) + "\n")
    return Accel.KVM if works else Accel.TCG


def kvm_probe_argv(kernel: Path, serial: Path) -> list[str]:
    """A throwaway KVM guest that boots KERNEL with no disk and prints to SERIAL."""
    return [
        "qemu-system-x86_64",
        "-accel", "kvm", "-cpu", "host", "-m", "256",
        "-kernel", str(kernel),
        "-append", "console=ttyS0 panic=-1",
        "-serial", f"file:{serial}",
        "-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults",
    ]  # fmt: skip


def probe_kvm(kernel: Path, scratch: Path) -> bool:
    """Boot KERNEL under KVM for a few seconds; it works if the kernel prints its banner.

    Bounded, because on some machines /dev/kvm exists and QEMU then hangs silently.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="kvm-probe-") as tmp:
        serial = Path(tmp) / "serial.log"
        argv = kvm_probe_argv(kernel, serial)
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + _KVM_PROBE_SECONDS
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(OSError):
                    if b"Linux version" in serial.read_bytes():
                        return True
                time.sleep(0.2)
            return False
        finally:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"
