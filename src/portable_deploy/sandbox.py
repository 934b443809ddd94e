"""The sandbox: real Debian 12 VMs under QEMU on the developer's machine.

Users rehearse deploys on them, and the end-to-end tests run against them. One base image is built
once per recipe and cached (``cache_dir/base-KEY/``); each VM boots from its own qcow2 overlay of it,
with a fresh SSH key, and ports forwarded on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from portable_deploy.errors import DeployError

Progress = Callable[[str], None]

# Bump when the recipe changes in a way the inputs below do not show; it is part of the cache key.
RECIPE_VERSION = 1
SUITE = "bookworm"
# The cloud flavour boots under TCG with virtio disk and net, and is a quarter of the generic
# kernel's size: smaller rootfs, faster debootstrap and mkfs.
KERNEL_PACKAGE = "linux-image-cloud-amd64"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "systemd-container",
    "openssh-server",
    KERNEL_PACKAGE,
    "udev",
    "dbus",
    "iproute2",
    "curl",
    "ca-certificates",
    "sqlite3",
)
DISK_SIZE = "3G"
VM_MEMORY_MB = 1024
VM_MAX_CPUS = 2
USER = "root"

_FILES_DIR = Path(__file__).parent / "sandbox_files"
# data file -> (path inside the rootfs, mode)
_ROOTFS_FILES: dict[str, tuple[str, int]] = {
    "hostname": ("etc/hostname", 0o644),
    "hosts": ("etc/hosts", 0o644),
    "fstab": ("etc/fstab", 0o644),
    "80-sandbox-dhcp.network": ("etc/systemd/network/80-sandbox-dhcp.network", 0o644),
    "sshd-sandbox.conf": ("etc/ssh/sshd_config.d/portable-deploy-sandbox.conf", 0o644),
    "portable-deploy-sandbox-init.service": (
        "etc/systemd/system/portable-deploy-sandbox-init.service",
        0o644,
    ),
    "sandbox-init.sh": ("usr/local/sbin/portable-deploy-sandbox-init", 0o755),
}
# unit -> the .wants directory `systemctl enable` would link it from
_ENABLED_UNITS: dict[str, str] = {
    "lib/systemd/system/systemd-networkd.service": "multi-user.target.wants",
    "lib/systemd/system/systemd-networkd.socket": "sockets.target.wants",
    "lib/systemd/system/ssh.service": "multi-user.target.wants",
    "etc/systemd/system/portable-deploy-sandbox-init.service": "multi-user.target.wants",
}
# Units debootstrap enables that a sandbox does without: they cost boot time under emulation, and
# the apt timers would reach out to a package mirror from inside the VM.
_DISABLED_UNITS = (
    "multi-user.target.wants/e2scrub_reap.service",
    "sysinit.target.wants/systemd-pstore.service",
    "getty.target.wants/getty@tty1.service",
    "timers.target.wants/apt-daily.timer",
    "timers.target.wants/apt-daily-upgrade.timer",
    "timers.target.wants/dpkg-db-backup.timer",
    "timers.target.wants/e2scrub_all.timer",
    "timers.target.wants/fstrim.timer",
)
_KEY_PARAM = "portable_deploy.authorized_key"

_HINT_QEMU = "apt-get install -y --no-install-recommends qemu-system-x86 qemu-utils"
_HINT_BUILD = "apt-get install -y --no-install-recommends debootstrap e2fsprogs"
_HINT_SSH = "apt-get install -y --no-install-recommends openssh-client"

_QEMU_START_ATTEMPTS = 5
_STOP_GRACE_SECONDS = 10.0
_KVM_PROBE_SECONDS = 8.0
_HEAD_BYTES = 16 * 1024 * 1024
_CONSOLE_TAIL_LINES = 20


@dataclass(frozen=True)
class VM:
    """A running sandbox VM, reachable as ``root@127.0.0.1 -p ssh_port``."""

    name: str
    pid: int
    ssh_port: int
    http_port: int
    https_port: int
    key: Path
    known_hosts: Path
    user: str = USER

    def ssh_argv(self, command: Sequence[str] = (), batch: bool = False) -> list[str]:
        """``ssh`` to root on this VM, host key checked; BATCH adds no-prompt, short-timeout options.

        Like any ssh command line, COMMAND is joined with spaces and run by the remote shell.
        """
        argv = [
            "ssh",
            "-i", str(self.key),
            "-p", str(self.ssh_port),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
        ]  # fmt: skip
        if batch:
            argv += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
        return [*argv, f"{self.user}@127.0.0.1", *command]


@dataclass(frozen=True)
class BaseImage:
    """A verified base image: the raw disk every overlay reads, and the kernel that boots it."""

    dir: Path
    disk: Path
    kernel: Path
    initrd: Path
    host_key_pub: Path
    kernel_flavour: str
    build_seconds: dict[str, float]

    def host_key(self) -> str:
        """``TYPE BASE64`` of the image's SSH host key, as known_hosts wants it."""
        fields = self.host_key_pub.read_text().split()
        return f"{fields[0]} {fields[1]}"


def _quiet(_: str) -> None:
    pass


def _default_state_dir() -> Path:
    explicit = os.environ.get("PORTABLE_DEPLOY_SANDBOX_DIR")
    if explicit:
        return Path(explicit)
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "portable-deploy" / "sandbox"


def _default_cache_dir() -> Path:
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "portable-deploy"


def base_key() -> str:
    """Short hash of everything that defines the base image; a change makes a new cache entry."""
    recipe = {
        "recipe": RECIPE_VERSION,
        "suite": SUITE,
        "variant": "minbase",
        "packages": list(PACKAGES),
        "disk_size": DISK_SIZE,
        "enabled": sorted(_ENABLED_UNITS.items()),
        "disabled": sorted(_DISABLED_UNITS),
        "files": {
            target: [mode, hashlib.sha256((_FILES_DIR / name).read_bytes()).hexdigest()]
            for name, (target, mode) in sorted(_ROOTFS_FILES.items())
        },
    }
    blob = json.dumps(recipe, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _sha256(path: Path, limit: int | None = None) -> str:
    digest = hashlib.sha256()
    remaining = limit
    with path.open("rb") as f:
        while remaining is None or remaining > 0:
            size = 1 << 20 if remaining is None else min(1 << 20, remaining)
            chunk = f.read(size)
            if not chunk:
                break
            digest.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return digest.hexdigest()


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise DeployError(f"{tool} is not installed", hint=hint)
    return path


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise DeployError(
            f"{what} needs root: debootstrap and mkfs.ext4 -d must read and own every file",
            hint="run with sudo (or as root) once; later `sandbox.up` runs reuse the cached image",
        )


def _run(argv: Sequence[str], what: str, log: Path | None = None, timeout: float = 1800) -> None:
    """Run a local build step; on failure, raise a DeployError that shows the command to rerun."""
    try:
        if log is None:
            proc = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=timeout, check=False
            )
            output = proc.stdout + proc.stderr
        else:
            with log.open("a") as out:
                proc = subprocess.run(
                    list(argv),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            output = log.read_text(errors="replace")
    except subprocess.TimeoutExpired as exc:
        raise DeployError(f"{what} timed out after {timeout:.0f} s", hint=_shell(argv)) from exc
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise DeployError(
            f"{what} failed (exit {proc.returncode}):\n{tail}",
            hint=f"rerun by hand to see more: {_shell(argv)}",
        )


def _shell(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


# --- base image -----------------------------------------------------------------------------


def _rootfs_ok(rootfs: Path, key: str) -> bool:
    stamp = rootfs / "etc" / "portable-deploy-sandbox"
    try:
        if stamp.read_text().strip() != key:
            return False
    except OSError:
        return False
    needed = ["usr/lib/systemd/systemd", "usr/sbin/sshd", "etc/ssh/ssh_host_ed25519_key"]
    return all((rootfs / p).is_file() for p in needed) and _find_kernel(rootfs) is not None


def _find_kernel(rootfs: Path) -> tuple[Path, Path] | None:
    for kernel in sorted((rootfs / "boot").glob("vmlinuz-*"), reverse=True):
        initrd = rootfs / "boot" / f"initrd.img-{kernel.name.removeprefix('vmlinuz-')}"
        if initrd.is_file():
            return kernel, initrd
    return None


def _provision(rootfs: Path, key: str) -> None:
    """Make a debootstrap tree bootable as a sandbox: plain file writes, no chroot."""
    for name, (target, mode) in _ROOTFS_FILES.items():
        dest = rootfs / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_FILES_DIR / name, dest)
        dest.chmod(mode)
    for unit, wants in _ENABLED_UNITS.items():
        link = rootfs / "etc/systemd/system" / wants / Path(unit).name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/" + unit)
    for wanted in _DISABLED_UNITS:
        (rootfs / "etc/systemd/system" / wanted).unlink(missing_ok=True)

    # A locked root password: key login only.
    shadow = rootfs / "etc/shadow"
    lines = shadow.read_text().splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and not fields[1].startswith("!"):
            fields[1] = "!" + fields[1]
            lines[i] = ":".join(fields)
    shadow.write_text("\n".join(lines) + "\n")

    # One fresh host key per base image, so known_hosts can be written before the first boot.
    ssh_dir = rootfs / "etc/ssh"
    for old in ssh_dir.glob("ssh_host_*"):
        old.unlink()
    _run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "portable-deploy-sandbox",
         "-f", str(ssh_dir / "ssh_host_ed25519_key")],
        "generating the sandbox host key",
    )  # fmt: skip

    # Downloaded .debs stay in the tree after debootstrap; the disk does not need them.
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    (rootfs / "etc" / "portable-deploy-sandbox").write_text(key + "\n")


def _build_disk(rootfs: Path, out_dir: Path, progress: Progress) -> dict[str, Any]:
    """disk.img, kernel and initrd from a provisioned rootfs, then base.json written last."""
    found = _find_kernel(rootfs)
    if found is None:
        raise DeployError(f"no kernel in {rootfs}/boot", hint="delete the cache dir and rerun")
    kernel_src, initrd_src = found
    started = time.monotonic()
    progress(f"building disk.img ({DISK_SIZE}) from {rootfs}")
    tmp_disk = out_dir / ".disk.img.tmp"
    tmp_disk.unlink(missing_ok=True)
    _run(["truncate", "-s", DISK_SIZE, str(tmp_disk)], "creating disk.img")
    _run(["mkfs.ext4", "-q", "-F", "-L", "sandbox", "-d", str(rootfs), str(tmp_disk)], "mkfs.ext4")
    # Every file is written beside its final name and renamed: never in place, so a crash leaves
    # no half file, and a cache copy made of hard links never writes through to the original.
    for src, name in (
        (kernel_src, "vmlinuz"),
        (initrd_src, "initrd.img"),
        (rootfs / "etc/ssh/ssh_host_ed25519_key.pub", "host_key.pub"),
    ):
        tmp = out_dir / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        tmp.chmod(0o644)
        tmp.replace(out_dir / name)
    tmp_disk.replace(out_dir / "disk.img")
    disk = out_dir / "disk.img"
    return {
        "disk_bytes": disk.stat().st_size,
        "disk_head_sha256": _sha256(disk, _HEAD_BYTES),
        "kernel_sha256": _sha256(out_dir / "vmlinuz"),
        "initrd_sha256": _sha256(out_dir / "initrd.img"),
        "kernel_version": kernel_src.name.removeprefix("vmlinuz-"),
        "disk_seconds": round(time.monotonic() - started, 1),
    }


def _read_base(base_dir: Path, key: str) -> BaseImage | None:
    """The cached base if base.json matches the files; None when anything is missing or differs."""
    try:
        meta = json.loads((base_dir / "base.json").read_text())
        disk = base_dir / "disk.img"
        ok = (
            meta.get("key") == key
            and disk.stat().st_size == meta["disk_bytes"]
            and _sha256(disk, _HEAD_BYTES) == meta["disk_head_sha256"]
            and _sha256(base_dir / "vmlinuz") == meta["kernel_sha256"]
            and _sha256(base_dir / "initrd.img") == meta["initrd_sha256"]
            and (base_dir / "host_key.pub").read_text().startswith("ssh-ed25519 ")
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not ok:
        return None
    return BaseImage(
        dir=base_dir,
        disk=base_dir / "disk.img",
        kernel=base_dir / "vmlinuz",
        initrd=base_dir / "initrd.img",
        host_key_pub=base_dir / "host_key.pub",
        kernel_flavour=str(meta.get("kernel_version", "")),
        build_seconds={k: float(v) for k, v in meta.get("build_seconds", {}).items()},
    )


# --- processes ------------------------------------------------------------------------------


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_our_qemu(pid: int, overlay: Path) -> bool:
    """True if PID is a live QEMU booted on OVERLAY (a reused pid or a zombie is not)."""
    if pid <= 0:
        return False
    argv = _cmdline(pid).split(b"\0")
    return bool(argv) and b"qemu" in argv[0] and any(str(overlay).encode() in a for a in argv)


def _free_ports(count: int) -> list[int]:
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


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _console_tail(path: Path, lines: int = _CONSOLE_TAIL_LINES) -> str:
    """The last non-empty lines of a serial console log, without terminal escapes."""
    try:
        text = _ANSI.sub("", path.read_text(errors="replace"))
    except OSError:
        return "(no console output)"
    kept = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) or "(no console output)"


def _vcpus(booting: int) -> int:
    """vCPUs per VM when BOOTING VMs start together: no more emulated CPUs than host cores.

    Under TCG every vCPU is a busy host thread; three 2-vCPU VMs on two cores took 47 s to
    start sshd against 40 s with one vCPU each, while a lone VM boots faster with two.
    """
    cores = os.cpu_count() or 1
    return max(1, min(VM_MAX_CPUS, cores // max(1, booting)))


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


# --- the sandbox ----------------------------------------------------------------------------


class Sandbox:
    """The VMs of one state directory, booted from the base image in one cache directory."""

    def __init__(self, state_dir: Path | None = None, cache_dir: Path | None = None) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else _default_state_dir()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()

    # -- base image --

    @property
    def base_dir(self) -> Path:
        return self.cache_dir / f"base-{base_key()}"

    def ensure_base(self, progress: Progress | None = None) -> BaseImage:
        """Return the cached base image, rebuilding the disk (or everything) if it fails checks."""
        say = progress or _quiet
        key = base_key()
        final = self.base_dir
        base = _read_base(final, key)
        if base is not None:
            return base
        _require_root("building the sandbox base image")
        _require("mkfs.ext4", _HINT_BUILD)
        _require("ssh-keygen", _HINT_SSH)
        with _locked(self.cache_dir / f"base-{key}.lock"):
            base = _read_base(final, key)  # another process may have built it meanwhile
            if base is not None:
                return base
            if _rootfs_ok(final / "rootfs", key):
                say(f"base image {final} failed its checks; rebuilding disk.img from the rootfs")
                self._rebuild_disk(final, key, say)
            else:
                self._build_all(final, key, say)
        base = _read_base(final, key)
        if base is None:
            raise DeployError(
                f"the base image in {final} fails its checks right after being built",
                hint=f"delete {final} and rerun",
            )
        return base

    def _rebuild_disk(self, final: Path, key: str, say: Progress) -> None:
        old = (
            json.loads((final / "base.json").read_text()) if (final / "base.json").is_file() else {}
        )
        (final / "base.json").unlink(missing_ok=True)  # invalid until the new disk is complete
        meta = _build_disk(final / "rootfs", final, say)
        build = dict(old.get("build_seconds", {}))
        build["disk"] = meta["disk_seconds"]
        self._write_meta(final, key, meta, build)
        say(f"disk.img rebuilt in {meta['disk_seconds']} s")

    def _build_all(self, final: Path, key: str, say: Progress) -> None:
        _require("debootstrap", _HINT_BUILD)
        for stale in self.cache_dir.glob(f"base-{key}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"base-{key}.tmp-", dir=self.cache_dir))
        try:
            rootfs = tmp / "rootfs"
            log = tmp / "debootstrap.log"
            say(f"debootstrap {SUITE} with {KERNEL_PACKAGE} (a few minutes; log: {log})")
            started = time.monotonic()
            _run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                 SUITE, str(rootfs)],
                "debootstrap",
                log=log,
            )  # fmt: skip
            debootstrap_s = round(time.monotonic() - started, 1)
            say(f"debootstrap done in {debootstrap_s} s; provisioning")
            started = time.monotonic()
            _provision(rootfs, key)
            provision_s = round(time.monotonic() - started, 1)
            meta = _build_disk(rootfs, tmp, say)
            build = {"debootstrap": debootstrap_s, "provision": provision_s}
            build["disk"] = meta["disk_seconds"]
            self._write_meta(tmp, key, meta, build)
            tmp.chmod(0o755)  # mkdtemp makes it 0700; QEMU may run as a user later
            if final.exists():
                trash = final.with_name(f"{final.name}.old-{os.getpid()}")
                final.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            tmp.rename(final)
            say(f"base image ready in {final} ({sum(build.values()):.0f} s)")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _write_meta(out_dir: Path, key: str, meta: dict[str, Any], build: dict[str, float]) -> None:
        record = {
            "key": key,
            "recipe": RECIPE_VERSION,
            "suite": SUITE,
            "packages": list(PACKAGES),
            **{k: v for k, v in meta.items() if k != "disk_seconds"},
            "build_seconds": build,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_atomic(out_dir / "base.json", json.dumps(record, indent=2) + "\n")

    # -- acceleration --

    def accel(self, base: BaseImage) -> str:
        """``kvm`` if /dev/kvm really boots a kernel (probed once per host boot), else ``tcg``."""
        forced = os.environ.get("PORTABLE_DEPLOY_ACCEL", "").strip().lower()
        if forced in ("tcg", "kvm"):
            return forced
        if forced:
            raise DeployError(
                f"PORTABLE_DEPLOY_ACCEL={forced!r} is not an accelerator",
                hint="use PORTABLE_DEPLOY_ACCEL=tcg or PORTABLE_DEPLOY_ACCEL=kvm, or unset it",
            )
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "tcg"
        record = self.cache_dir / "kvm-probe.json"
        boot_id = _boot_id()
        with contextlib.suppress(OSError, ValueError):
            cached = json.loads(record.read_text())
            if cached.get("boot_id") == boot_id:
                return "kvm" if cached.get("works") else "tcg"
        works = _probe_kvm(base, Path(tempfile.gettempdir()))
        with contextlib.suppress(OSError):  # a cache dir built by root may be read-only to us
            _write_atomic(record, json.dumps({"boot_id": boot_id, "works": works}) + "\n")
        return "kvm" if works else "tcg"

    # -- VMs --

    def _vm_dir(self, name: str) -> Path:
        return self.state_dir / name

    def _read_vm(self, name: str) -> tuple[VM, Path] | None:
        try:
            data = json.loads((self._vm_dir(name) / "vm.json").read_text())
            vm = VM(
                name=data["name"],
                pid=int(data["pid"]),
                ssh_port=int(data["ssh_port"]),
                http_port=int(data["http_port"]),
                https_port=int(data["https_port"]),
                key=Path(data["key"]),
                known_hosts=Path(data["known_hosts"]),
                user=data.get("user", USER),
            )
            return vm, Path(data["overlay"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _names(self) -> list[str]:
        if not self.state_dir.is_dir():
            return []
        names = [p.name for p in self.state_dir.iterdir() if p.name.startswith("sandbox-")]
        return sorted(names, key=lambda n: int(n.rsplit("-", 1)[1]) if n[8:].isdigit() else 0)

    def status(self) -> list[VM]:
        """The VMs of this state dir whose QEMU process is alive."""
        alive = []
        for name in self._names():
            found = self._read_vm(name)
            if found is not None and _is_our_qemu(found[0].pid, found[1]):
                alive.append(found[0])
        return alive

    def ssh_argv(self, name: str | None = None, command: Sequence[str] = ()) -> list[str]:
        """The ssh command line for root on a VM (the first running one if NAME is None)."""
        if name is None:
            running = self.status()
            if not running:
                raise DeployError("no sandbox VM is running", hint="start one: invoke sandbox.up")
            vm = running[0]
        else:
            found = self._read_vm(name)
            if found is None or not _is_our_qemu(found[0].pid, found[1]):
                raise DeployError(
                    f"no sandbox VM named {name!r} is running (state dir {self.state_dir})",
                    hint="see `invoke sandbox.status`, or start it with `invoke sandbox.up`",
                )
            vm = found[0]
        return vm.ssh_argv(command)

    def up(
        self, count: int = 1, progress: Progress | None = None, timeout: float = 300
    ) -> list[VM]:
        """Make sandbox-1..COUNT run and answer SSH; running ones are reused, others booted."""
        if count < 1:
            raise DeployError(
                f"count must be at least 1, not {count}", hint="use --count 1 or more"
            )
        lock = threading.Lock()

        def say(line: str) -> None:
            if progress is not None:
                with lock:
                    progress(line)

        _require("qemu-system-x86_64", _HINT_QEMU)
        _require("qemu-img", _HINT_QEMU)
        _require("ssh", _HINT_SSH)
        _require("ssh-keygen", _HINT_SSH)
        base = self.ensure_base(say)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.state_dir / ".lock"):
            running = {vm.name: vm for vm in self.status()}
            names = [f"sandbox-{i}" for i in range(1, count + 1)]
            missing = [n for n in names if n not in running]
            accel = self.accel(base) if missing else "tcg"
            cpus = _vcpus(len(missing))
            for name in names:
                if name in running:
                    say(f"{name}: already running (pid {running[name].pid})")

            cancel = threading.Event()

            def start(name: str) -> VM:
                started = time.monotonic()
                if name in running:
                    vm = running[name]
                    self._wait_ready(vm, started, timeout, say, cancel, quiet=True)
                    return vm
                vm = self._boot(name, base, accel, cpus, say)
                self._wait_ready(vm, started, timeout, say, cancel, quiet=False)
                return vm

            with ThreadPoolExecutor(max_workers=len(names)) as pool:
                futures = [pool.submit(start, name) for name in names]
                try:
                    wait(futures, return_when=FIRST_EXCEPTION)
                    for future in futures:
                        if future.done() and future.exception() is not None:
                            future.result()
                    return [future.result() for future in futures]
                except BaseException:
                    # Ctrl-C or a failed VM: the other workers stop waiting now.
                    cancel.set()
                    raise

    def _boot(self, name: str, base: BaseImage, accel: str, cpus: int, say: Progress) -> VM:
        vm_dir = self._vm_dir(name)
        stale = self._read_vm(name)
        if stale is not None and _is_our_qemu(stale[0].pid, stale[1]):
            raise DeployError(f"{name} is already running", hint="invoke sandbox.down first")
        shutil.rmtree(vm_dir, ignore_errors=True)
        vm_dir.mkdir(parents=True, mode=0o700)
        key = vm_dir / "id_ed25519"
        _run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"portable-deploy-{name}",
             "-f", str(key)],
            f"generating the SSH key of {name}",
        )  # fmt: skip
        overlay = vm_dir / "overlay.qcow2"
        _run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base.disk), "-F", "raw",
             str(overlay)],
            f"creating the disk overlay of {name}",
        )  # fmt: skip
        pub = (vm_dir / "id_ed25519.pub").read_bytes()
        append = " ".join(
            [
                "root=/dev/vda",
                "rw",
                "console=ttyS0",
                # Kernel chatter off, systemd's status lines on: the console tail shown when a
                # boot times out is then about units.
                "loglevel=4",
                "systemd.show_status=true",
                "panic=-1",
                f"systemd.hostname={name}",
                f"systemd.machine_id={secrets.token_hex(16)}",
                f"{_KEY_PARAM}={base64.b64encode(pub).decode()}",
            ]
        )
        accel_args = (
            ["-accel", "kvm", "-cpu", "host"]
            if accel == "kvm"
            else ["-accel", "tcg,thread=multi", "-cpu", "max"]
        )
        console = vm_dir / "console.log"
        pidfile = vm_dir / "qemu.pid"
        last_error = ""
        for _attempt in range(_QEMU_START_ATTEMPTS):
            ssh_port, http_port, https_port = _free_ports(3)
            forwards = ",".join(
                f"hostfwd=tcp:127.0.0.1:{host}-:{guest}"
                for host, guest in ((ssh_port, 22), (http_port, 80), (https_port, 443))
            )
            argv = [
                "qemu-system-x86_64",
                "-name", name,
                *accel_args,
                "-m", str(VM_MEMORY_MB),
                "-smp", str(cpus),
                "-kernel", str(base.kernel),
                "-initrd", str(base.initrd),
                "-append", append,
                "-drive", f"file={overlay},format=qcow2,if=virtio",
                "-netdev", f"user,id=n0,{forwards}",
                "-device", "virtio-net-pci,netdev=n0",
                "-serial", f"file:{console}",
                "-display", "none",
                "-monitor", "none",
                "-nodefaults",
                "-no-reboot",
                "-daemonize",
                "-pidfile", str(pidfile),
            ]  # fmt: skip
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
            if proc.returncode == 0:
                break
            last_error = (proc.stderr or proc.stdout).strip()
            if "forward" not in last_error.lower() and "address" not in last_error.lower():
                raise DeployError(
                    f"QEMU failed to start {name}: {last_error}", hint=f"rerun: {_shell(argv)}"
                )
        else:
            raise DeployError(
                f"QEMU could not bind free ports for {name}: {last_error}",
                hint="free some ports on 127.0.0.1 and rerun",
            )
        pid = int(pidfile.read_text().strip())
        known_hosts = vm_dir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{ssh_port} {base.host_key()}\n")
        vm = VM(
            name=name,
            pid=pid,
            ssh_port=ssh_port,
            http_port=http_port,
            https_port=https_port,
            key=key,
            known_hosts=known_hosts,
        )
        record = {
            "name": name,
            "pid": pid,
            "ssh_port": ssh_port,
            "http_port": http_port,
            "https_port": https_port,
            "key": str(key),
            "known_hosts": str(known_hosts),
            "user": USER,
            "overlay": str(overlay),
            "base": str(base.dir),
            "accel": accel,
            "cpus": cpus,
            "started_at": time.time(),
        }
        _write_atomic(vm_dir / "vm.json", json.dumps(record, indent=2) + "\n")
        say(
            f"{name}: booting ({accel}, {cpus} vCPU), ssh on 127.0.0.1:{ssh_port}, http on :{http_port}"
        )
        return vm

    def _wait_ready(
        self,
        vm: VM,
        started: float,
        timeout: float,
        say: Progress,
        cancel: threading.Event,
        quiet: bool,
    ) -> None:
        deadline = started + timeout
        vm_dir = self._vm_dir(vm.name)
        overlay = vm_dir / "overlay.qcow2"
        probe = vm.ssh_argv(["true"], batch=True)
        while True:
            if cancel.is_set():
                raise DeployError(f"{vm.name}: waiting for SSH was cancelled")
            if not _is_our_qemu(vm.pid, overlay):
                self._fail(vm, f"{vm.name}: QEMU (pid {vm.pid}) exited while booting")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(vm, f"{vm.name} did not answer SSH within {timeout:.0f} s")
            try:
                proc = subprocess.run(
                    probe, capture_output=True, timeout=min(remaining, 20), check=False
                )
                if proc.returncode == 0:
                    break
            except subprocess.TimeoutExpired:
                pass
            cancel.wait(min(1.0, max(0.0, deadline - time.monotonic())))
        if not quiet:
            say(f"{vm.name}: ssh up after {time.monotonic() - started:.1f} s")
        remaining = max(1.0, deadline - time.monotonic())
        settle = vm.ssh_argv(
            ["timeout", str(int(remaining)), "systemctl", "is-system-running", "--wait"],
            batch=True,
        )
        try:
            answer = subprocess.run(
                settle, capture_output=True, text=True, timeout=remaining + 10, check=False
            )
            lines = answer.stdout.split()
            state = lines[-1] if lines else "unknown"
        except subprocess.TimeoutExpired:
            state = "timeout"
        if state not in ("running", "degraded"):
            self._fail(vm, f"{vm.name}: systemd did not finish booting (state: {state})")
        if not quiet:
            say(f"{vm.name}: system {state} after {time.monotonic() - started:.1f} s")

    def _fail(self, vm: VM, message: str) -> NoReturn:
        console = self._vm_dir(vm.name) / "console.log"
        tail = _console_tail(console)
        self._stop(vm.name, keep=("console.log",))
        raise DeployError(
            f"{message}; last lines of its console ({console}):\n{tail}",
            hint="rerun with a longer timeout, or read the whole console log",
        )

    def down(self, progress: Progress | None = None) -> list[str]:
        """Stop every VM of this state dir and delete its overlay; return the names stopped."""
        say = progress or _quiet
        if not self.state_dir.is_dir():
            return []
        with _locked(self.state_dir / ".lock"):
            stopped = []
            for name in self._names():
                if self._stop(name):
                    stopped.append(name)
                    say(f"{name}: stopped")
            return stopped

    def _stop(self, name: str, keep: Sequence[str] = ()) -> bool:
        """Stop NAME's QEMU (TERM, then KILL) if it is ours and alive; remove its files but KEEP."""
        vm_dir = self._vm_dir(name)
        overlay = vm_dir / "overlay.qcow2"
        pids: set[int] = set()
        found = self._read_vm(name)
        if found is not None:
            pids.add(found[0].pid)
        with contextlib.suppress(OSError, ValueError):
            pids.add(int((vm_dir / "qemu.pid").read_text().strip()))
        ours = [pid for pid in pids if _is_our_qemu(pid, overlay)]
        for pid in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        while any(_is_our_qemu(p, overlay) for p in ours) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in ours:
            if _is_our_qemu(pid, overlay):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(_is_our_qemu(p, overlay) for p in ours) and time.monotonic() < deadline:
            time.sleep(0.1)
        if keep and vm_dir.is_dir():
            for path in vm_dir.iterdir():
                if path.name not in keep:
                    path.unlink(missing_ok=True)
        else:
            shutil.rmtree(vm_dir, ignore_errors=True)
        return bool(ours)


def _probe_kvm(base: BaseImage, scratch: Path) -> bool:
    """Boot the base kernel under KVM for a few seconds; it works if the kernel prints its banner."""
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="kvm-probe-") as tmp:
        serial = Path(tmp) / "serial.log"
        argv = [
            "qemu-system-x86_64",
            "-accel", "kvm", "-cpu", "host", "-m", "256",
            "-kernel", str(base.kernel),
            "-append", "console=ttyS0 panic=-1",
            "-serial", f"file:{serial}",
            "-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults",
        ]  # fmt: skip
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
