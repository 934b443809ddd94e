"""The host's system, for host.setup: the package that brings portablectl, and whether the disk
and the kernel can hold and mount the images."""

from __future__ import annotations

from ..command import Command, builder, cmd, sh_args

#: The Debian package with portablectl and systemd-portabled (not installed by default).
PORTABLE_PACKAGE = "systemd-container"


@builder
def install_packages(*names: str) -> Command:
    """``apt-get install`` with no question asked (run as root). No recommends: the tool needs
    none (systemd-container's, libnss-mymachines, is for machinectl's containers), and a host
    set up from a local package cache must not have to download more."""
    return cmd(
        ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y"],
        ["--no-install-recommends", *names],
        mutates=True,
    )


#: Prints ``free_kib=N`` (space left for non-root users on the file system that holds, or will
#: hold, $1) and ``squashfs=`` ``loaded``, ``module`` (the kernel can load it) or ``no``.
CAPACITY_SCRIPT = (
    'd="$1"; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; '
    'echo "free_kib=$(df -Pk "$d" | awk \'NR == 2 {print $4}\')"; '
    "if grep -qw squashfs /proc/filesystems; then echo squashfs=loaded; "
    "elif modprobe -nq squashfs 2>/dev/null || "
    'grep -qs "/squashfs\\.ko" "/lib/modules/$(uname -r)/modules.dep" '
    '"/lib/modules/$(uname -r)/modules.builtin"; then echo squashfs=module; '
    "else echo squashfs=no; fi"
)


@builder
def capacity(portables_dir: str) -> Command:
    """Free space where the images go, and whether the kernel mounts squashfs (read-only)."""
    return sh_args(CAPACITY_SCRIPT, portables_dir)
