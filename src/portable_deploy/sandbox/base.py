"""The sandbox's base image: debootstrap, provisioning, ``mkfs.ext4 -d``, checks against base.json.

Built once per recipe (``base_key()``) into ``cache_dir/base-KEY/`` and shared by every VM, which
boots on a qcow2 overlay of its ``disk.img``. The rootfs is kept next to the disk, so a damaged
disk is rebuilt in seconds instead of by a new debootstrap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portable_deploy.errors import DeployError

from .local import HINT_BUILD, HINT_SSH, Progress, locked, quiet, require, run, write_atomic

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
    # Let's Encrypt's test CA: the ACME server of the TLS tests and benchmarks (sandbox/acme.py).
    "pebble",
    # The baseline bench/upload.py measures delta uploads against (never used by the tool).
    "rsync",
)
DISK_SIZE = "3G"

FILES_DIR = Path(__file__).parent / "files"
# data file -> (path inside the rootfs, mode)
ROOTFS_FILES: dict[str, tuple[str, int]] = {
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
ENABLED_UNITS: dict[str, str] = {
    "lib/systemd/system/systemd-networkd.service": "multi-user.target.wants",
    "lib/systemd/system/systemd-networkd.socket": "sockets.target.wants",
    "lib/systemd/system/ssh.service": "multi-user.target.wants",
    "etc/systemd/system/portable-deploy-sandbox-init.service": "multi-user.target.wants",
}
# Units debootstrap enables that a sandbox does without: they cost boot time under emulation, and
# the apt timers would reach out to a package mirror from inside the VM.
DISABLED_UNITS = (
    "multi-user.target.wants/e2scrub_reap.service",
    "sysinit.target.wants/systemd-pstore.service",
    "getty.target.wants/getty@tty1.service",
    "timers.target.wants/apt-daily.timer",
    "timers.target.wants/apt-daily-upgrade.timer",
    "timers.target.wants/dpkg-db-backup.timer",
    "timers.target.wants/e2scrub_all.timer",
    "timers.target.wants/fstrim.timer",
)

# base.json checks the whole disk's size but hashes only its head (where the ext4 superblock is):
# it is checked before every boot, and hashing 3 GB each time would be slow.
_HEAD_BYTES = 16 * 1024 * 1024


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


def base_key() -> str:
    """Short hash of everything that defines the base image; a change makes a new cache entry."""
    recipe = {
        "recipe": RECIPE_VERSION,
        "suite": SUITE,
        "variant": "minbase",
        "packages": list(PACKAGES),
        "disk_size": DISK_SIZE,
        "enabled": sorted(ENABLED_UNITS.items()),
        "disabled": sorted(DISABLED_UNITS),
        "files": {
            target: [mode, hashlib.sha256((FILES_DIR / name).read_bytes()).hexdigest()]
            for name, (target, mode) in sorted(ROOTFS_FILES.items())
        },
    }
    blob = json.dumps(recipe, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def base_dir(cache_dir: Path) -> Path:
    """Where the base image of the current recipe lives in CACHE_DIR."""
    return cache_dir / f"base-{base_key()}"


def ensure_base(cache_dir: Path, progress: Progress = quiet) -> BaseImage:
    """The cached base image, rebuilding the disk (or everything) if it fails its checks."""
    key = base_key()
    final = base_dir(cache_dir)
    base = read_base(final, key)
    if base is not None:
        _private(final)
        return base
    _require_root("building the sandbox base image")
    require("mkfs.ext4", HINT_BUILD)
    require("ssh-keygen", HINT_SSH)
    with locked(cache_dir / f"base-{key}.lock"):
        base = read_base(final, key)  # another process may have built it meanwhile
        if base is not None:
            return base
        if _rootfs_ok(final / "rootfs", key):
            progress(f"base image {final} failed its checks; rebuilding disk.img from the rootfs")
            _rebuild_disk(final, key, progress)
        else:
            _build_all(cache_dir, final, key, progress)
    base = read_base(final, key)
    if base is None:
        raise DeployError(
            f"the base image in {final} fails its checks right after being built",
            hint=f"delete {final} and rerun",
        )
    return base


def _private(directory: Path) -> None:
    """Caches built by earlier versions were world-readable (0755): close them."""
    if directory.stat().st_mode & 0o077:
        directory.chmod(0o700)


def read_base(base_dir: Path, key: str) -> BaseImage | None:
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


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise DeployError(
            f"{what} needs root: debootstrap and mkfs.ext4 -d must read and own every file",
            hint="run with sudo (or as root) once; later `sandbox.up` runs reuse the cached image",
        )


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


def _build_all(cache_dir: Path, final: Path, key: str, say: Progress) -> None:
    """debootstrap, provision and build the disk in a temp dir, then rename it to FINAL."""
    require("debootstrap", HINT_BUILD)
    for stale in cache_dir.glob(f"base-{key}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"base-{key}.tmp-", dir=cache_dir))
    try:
        rootfs = tmp / "rootfs"
        log = tmp / "debootstrap.log"
        say(f"debootstrap {SUITE} with {KERNEL_PACKAGE} (a few minutes; log: {log})")
        started = time.monotonic()
        run(
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
        _write_meta(tmp, key, meta, build)
        # mkdtemp makes it 0700, and so it stays: the disk and the rootfs hold the private host
        # key that every sandbox VM presents; only the user who runs the sandbox may read it.
        if final.exists():
            trash = final.with_name(f"{final.name}.old-{os.getpid()}")
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(final)
        say(f"base image ready in {final} ({sum(build.values()):.0f} s)")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _rebuild_disk(final: Path, key: str, say: Progress) -> None:
    old = json.loads((final / "base.json").read_text()) if (final / "base.json").is_file() else {}
    (final / "base.json").unlink(missing_ok=True)  # invalid until the new disk is complete
    meta = _build_disk(final / "rootfs", final, say)
    build = dict(old.get("build_seconds", {}))
    build["disk"] = meta["disk_seconds"]
    _write_meta(final, key, meta, build)
    say(f"disk.img rebuilt in {meta['disk_seconds']} s")


def _provision(rootfs: Path, key: str) -> None:
    """Make a debootstrap tree bootable as a sandbox: plain file writes, no chroot."""
    for name, (target, mode) in ROOTFS_FILES.items():
        dest = rootfs / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FILES_DIR / name, dest)
        dest.chmod(mode)
    for unit, wants in ENABLED_UNITS.items():
        link = rootfs / "etc/systemd/system" / wants / Path(unit).name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/" + unit)
    for wanted in DISABLED_UNITS:
        (rootfs / "etc/systemd/system" / wanted).unlink(missing_ok=True)

    shadow = rootfs / "etc/shadow"
    shadow.write_text(lock_root_password(shadow.read_text()))

    # One fresh host key per base image, so known_hosts can be written before the first boot.
    ssh_dir = rootfs / "etc/ssh"
    for old in ssh_dir.glob("ssh_host_*"):
        old.unlink()
    run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "portable-deploy-sandbox",
         "-f", str(ssh_dir / "ssh_host_ed25519_key")],
        "generating the sandbox host key",
    )  # fmt: skip

    # Downloaded .debs stay in the tree after debootstrap; the disk does not need them.
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    (rootfs / "etc" / "portable-deploy-sandbox").write_text(key + "\n")


def lock_root_password(shadow: str) -> str:
    """/etc/shadow text with root's password locked (``!``): key login only."""
    lines = shadow.splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and not fields[1].startswith("!"):
            fields[1] = "!" + fields[1]
            lines[i] = ":".join(fields)
    return "\n".join(lines) + "\n"


def _build_disk(rootfs: Path, out_dir: Path, progress: Progress) -> dict[str, Any]:
    """disk.img, kernel and initrd from a provisioned rootfs; the facts base.json records."""
    found = _find_kernel(rootfs)
    if found is None:
        raise DeployError(f"no kernel in {rootfs}/boot", hint="delete the cache dir and rerun")
    kernel_src, initrd_src = found
    started = time.monotonic()
    progress(f"building disk.img ({DISK_SIZE}) from {rootfs}")
    tmp_disk = out_dir / ".disk.img.tmp"
    tmp_disk.unlink(missing_ok=True)
    run(["truncate", "-s", DISK_SIZE, str(tmp_disk)], "creating disk.img")
    run(["mkfs.ext4", "-q", "-F", "-L", "sandbox", "-d", str(rootfs), str(tmp_disk)], "mkfs.ext4")
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


def _write_meta(out_dir: Path, key: str, meta: dict[str, Any], build: dict[str, float]) -> None:
    """base.json, written last: its presence says the disk beside it is complete."""
    record = {
        "key": key,
        "recipe": RECIPE_VERSION,
        "suite": SUITE,
        "packages": list(PACKAGES),
        **{k: v for k, v in meta.items() if k != "disk_seconds"},
        "build_seconds": build,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_atomic(out_dir / "base.json", json.dumps(record, indent=2) + "\n")
