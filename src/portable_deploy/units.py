"""What a unit file is for, read from its text: the facts a deploy needs to restart only what changed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

UNIT_DIR = "usr/lib/systemd/system"
_EXEC_KEYS = (
    "ExecStart",
    "ExecStartPre",
    "ExecStartPost",
    "ExecReload",
    "ExecStop",
    "ExecStopPost",
    "ExecCondition",
)


class Kind(StrEnum):
    SOCKET = "socket"
    #: A long-running service (the app, or a sidecar such as Litestream).
    SERVICE = "service"
    #: Type=oneshot without RemainAfterExit: runs when something that needs it starts.
    ONESHOT = "oneshot"
    OTHER = "other"


@dataclass(frozen=True)
class UnitInfo:
    name: str
    kind: Kind
    #: For a socket: the service it activates.
    activates: str | None
    #: Image paths (relative) the unit runs or reads: its own file, Exec binaries, files named in them.
    paths: frozenset[str]

    def to_dict(self) -> dict[str, object]:
        return {"kind": str(self.kind), "activates": self.activates, "paths": sorted(self.paths)}

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, object]) -> UnitInfo:
        paths = data.get("paths", [])
        activates = data.get("activates")
        return cls(
            name=name,
            kind=Kind(str(data.get("kind", "other"))),
            activates=str(activates) if activates else None,
            paths=frozenset(str(p) for p in paths) if isinstance(paths, list) else frozenset(),
        )


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, continuation lines joined."""
    result: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line:
            key, value = line.split("=", 1)
            result.append((section, key.strip(), value.strip()))
    return result


def _paths_in(command_line: str) -> set[str]:
    paths = set()
    for token in command_line.split():
        token = token.lstrip("@-:+!").strip("'\"")
        if "=/" in token:
            token = token.split("=", 1)[1]
        if token.startswith("/") and ".." not in token:
            paths.add(token.lstrip("/"))
    return paths


def parse_unit(name: str, text: str) -> UnitInfo:
    """Classify a unit and list the image paths it depends on."""
    paths = {f"{UNIT_DIR}/{name}"}
    service_type = ""
    remain = False
    activates: str | None = None
    for section, key, value in directives(text):
        if section == "Service" and key == "Type":
            service_type = value
        elif section == "Service" and key == "RemainAfterExit":
            remain = value.lower() in {"yes", "true", "1", "on"}
        elif section == "Service" and (key in _EXEC_KEYS or key == "EnvironmentFile"):
            paths |= _paths_in(value)
        elif section == "Socket" and key == "Service":
            activates = value
    if name.endswith(".socket"):
        kind = Kind.SOCKET
        activates = activates or name.removesuffix(".socket") + ".service"
    elif name.endswith(".service"):
        kind = Kind.ONESHOT if service_type == "oneshot" and not remain else Kind.SERVICE
    else:
        kind = Kind.OTHER
    return UnitInfo(name=name, kind=kind, activates=activates, paths=frozenset(paths))
