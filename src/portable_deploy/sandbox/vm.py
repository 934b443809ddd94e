"""A sandbox VM's record (``vm.json``), its files in the state directory, and its console."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

USER = "root"


def vm_name(index: int) -> str:
    """The name of the INDEXth sandbox VM (1-based)."""
    return f"sandbox-{index}"


#: The VM that a deploy.toml host with `sandbox = true` is.
FIRST_VM = vm_name(1)
CONSOLE_TAIL_LINES = 20


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
    _: KW_ONLY
    #: The qcow2 overlay QEMU runs on: a pid counts as this VM's only if its command line names it.
    overlay: Path
    # What the VM was booted with; records written before a field existed lack it (None).
    base: Path | None = None
    accel: str | None = None
    cpus: int | None = None
    started_at: float | None = None

    @property
    def control_path(self) -> Path:
        """The socket of this VM's shared connection, when one runs (``mux.py``). It names the
        port: a VM value with another VM's files never rides on that VM's connection."""
        return self.key.parent / f"ssh-{self.ssh_port}.mux"

    def ssh_argv(self, command: Sequence[str] = (), batch: bool = False) -> list[str]:
        """``ssh`` to root on this VM, host key checked; BATCH adds no-prompt, short-timeout options.
        The command rides on the VM's shared connection when one runs, else connects on its own.

        Like any ssh command line, COMMAND is joined with spaces and run by the remote shell.
        """
        argv = [
            "ssh",
            "-i", str(self.key),
            "-p", str(self.ssh_port),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", f"ControlPath={self.control_path}",
            "-o", "ControlMaster=no",
        ]  # fmt: skip
        if batch:
            argv += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
        return [*argv, f"{self.user}@127.0.0.1", *command]

    def to_json(self) -> str:
        """The text of ``vm.json``; fields that are None are left out."""
        record: dict[str, Any] = {
            "name": self.name,
            "pid": self.pid,
            "ssh_port": self.ssh_port,
            "http_port": self.http_port,
            "https_port": self.https_port,
            "key": str(self.key),
            "known_hosts": str(self.known_hosts),
            "user": self.user,
            "overlay": str(self.overlay),
        }
        optional = {
            "base": None if self.base is None else str(self.base),
            "accel": self.accel,
            "cpus": self.cpus,
            "started_at": self.started_at,
        }
        record.update({k: v for k, v in optional.items() if v is not None})
        return json.dumps(record, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> VM:
        """The VM a ``vm.json`` text describes; ValueError if it is not a complete record."""
        try:
            data = json.loads(text)
            return cls(
                name=str(data["name"]),
                pid=int(data["pid"]),
                ssh_port=int(data["ssh_port"]),
                http_port=int(data["http_port"]),
                https_port=int(data["https_port"]),
                key=Path(data["key"]),
                known_hosts=Path(data["known_hosts"]),
                user=str(data.get("user", USER)),
                overlay=Path(data["overlay"]),
                base=None if data.get("base") is None else Path(data["base"]),
                accel=None if data.get("accel") is None else str(data["accel"]),
                cpus=None if data.get("cpus") is None else int(data["cpus"]),
                started_at=None if data.get("started_at") is None else float(data["started_at"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a sandbox VM record: {exc!r}") from exc


@dataclass(frozen=True)
class VMFiles:
    """Where one VM keeps its files: a directory named after it in the state directory."""

    dir: Path

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def key_pub(self) -> Path:
        return self.dir / "id_ed25519.pub"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def overlay(self) -> Path:
        return self.dir / "overlay.qcow2"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def record(self) -> Path:
        return self.dir / "vm.json"


def known_hosts_line(ssh_port: int, host_key: str) -> str:
    """The known_hosts line that pins HOST_KEY (``TYPE BASE64``) for 127.0.0.1:SSH_PORT."""
    return f"[127.0.0.1]:{ssh_port} {host_key}\n"


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def console_tail(text: str, lines: int = CONSOLE_TAIL_LINES) -> str:
    """The last non-empty lines of a serial console's TEXT, without terminal escapes."""
    text = _ANSI.sub("", text)
    kept = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) or "(no console output)"
