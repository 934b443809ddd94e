"""Local helpers shared by the base-image builder and the VM manager: tools, locks, files."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from portable_deploy.errors import DeployError

Progress = Callable[[str], None]

HINT_QEMU = "apt-get install -y --no-install-recommends qemu-system-x86 qemu-utils"
HINT_BUILD = "apt-get install -y --no-install-recommends debootstrap e2fsprogs"
HINT_SSH = "apt-get install -y --no-install-recommends openssh-client"


def quiet(_: str) -> None:
    """A Progress that shows nothing."""


def require(tool: str, hint: str) -> str:
    """The path of TOOL on PATH; a DeployError with HINT (how to install it) when it is missing."""
    path = shutil.which(tool)
    if path is None:
        raise DeployError(f"{tool} is not installed", hint=hint)
    return path


def shell(argv: Sequence[str | os.PathLike[str]]) -> str:
    """ARGV as a line that can be pasted into a shell."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def run(argv: Sequence[str], what: str, log: Path | None = None, timeout: float = 1800) -> None:
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
        raise DeployError(f"{what} timed out after {timeout:.0f} s", hint=shell(argv)) from exc
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise DeployError(
            f"{what} failed (exit {proc.returncode}):\n{tail}",
            hint=f"rerun by hand to see more: {shell(argv)}",
        )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on PATH (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write TEXT beside PATH and rename it into place: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
