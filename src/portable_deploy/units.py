"""Unit files: which ones an image takes, how their text is read, and what each one is for.

One home for these rules: deploy.toml loading (config.py), the image build (image.py) and the
manifest (manifest.py) all ask this module, so they cannot disagree about a unit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from . import fs
from .errors import DeployError

UNIT_DIR = "usr/lib/systemd/system"
#: Unit types that ``portablectl attach`` copies to the host (systemd 252, src/portable/portable.c).
ATTACHABLE_SUFFIXES = (".service", ".socket", ".target", ".timer", ".path")
#: Unit types it does not attach: refused with a reason of their own.
_OTHER_UNIT_SUFFIXES = (".mount", ".automount", ".swap", ".slice", ".scope", ".device")
#: Directories next to a unit that systemd would read, but portablectl does not attach.
_DROP_IN_SUFFIXES = (".d", ".wants", ".requires", ".upholds")
#: What follows the app name in a unit name that portablectl attaches.
_NAME_SEPARATORS = (".", "-", "@")
_COMMENTS = ("#", ";")
#: [Socket] settings that make a socket listen.
_LISTEN_KEYS = ("ListenStream", "ListenDatagram", "ListenSequentialPacket")
#: systemd's read_line ends a line at any of these.
_NEWLINE = re.compile(r"\r\n|\r|\n")
_EXEC_KEYS = (
    "ExecStart",
    "ExecStartPre",
    "ExecStartPost",
    "ExecReload",
    "ExecStop",
    "ExecStopPost",
    "ExecCondition",
)


# --- which files are units of the app ----------------------------------------------------------


def named_for(unit: str, app: str) -> bool:
    """The unit's name is the app's, then ".", "-" or "@" (the prefix rule of portable.c)."""
    return unit.startswith(app) and unit[len(app) : len(app) + 1] in _NAME_SEPARATORS


def is_attachable(unit: str, app: str) -> bool:
    """``portablectl attach`` copies this unit file from the app's image to the host."""
    return unit.endswith(ATTACHABLE_SUFFIXES) and named_for(unit, app)


class UnitDirError(DeployError):
    """The units directory holds something an image cannot take.

    The message names no key: deploy.toml loading and the build each say where it came from.
    """


def unit_files(directory: Path, app: str) -> list[Path]:
    """The unit files in ``directory``, sorted by name; anything else there is a UnitDirError.

    Every entry must be an attachable unit file named after the app: a README, a hidden file, a
    drop-in directory or a .mount unit there is an error, not skipped, so what the directory
    holds is what the image attaches.
    """
    where = _shown(directory)
    if not fs.is_dir(directory):
        raise UnitDirError(
            f"expected a directory of systemd unit files, found no directory at {where}",
            f"create it with {app}.service in it, or point units at your unit directory",
        )
    try:
        entries = sorted(directory.iterdir(), key=lambda entry: entry.name)
    except OSError as exc:
        raise UnitDirError(
            f"expected a readable directory, found {where}: {exc.strerror}",
            "check the directory's permissions",
        ) from None
    for entry in entries:
        _check_entry(entry, app, where)
    if not entries:
        raise UnitDirError(
            f"expected at least one unit file, found an empty directory {where}",
            f"add {app}.service; a portable image without units cannot be attached",
        )
    return entries


def _check_entry(entry: Path, app: str, where: str) -> None:
    name = _shown(entry.name)
    if fs.is_dir(entry):
        stem, dot, suffix = entry.name.rpartition(".")
        drop_in = bool(dot) and f".{suffix}" in _DROP_IN_SUFFIXES
        raise UnitDirError(
            f"expected only unit files in {where}, found {name}, a directory: portablectl "
            "attaches unit files, not drop-in or .wants directories",
            f"merge its settings into the unit file itself ({_shown(stem)})"
            if drop_in
            else "only unit files belong there; put other files in [image] tree or files",
        )
    hidden = entry.name.startswith(".")
    if entry.name.endswith(_OTHER_UNIT_SUFFIXES) and not hidden:
        raise UnitDirError(
            f"expected only {' '.join(ATTACHABLE_SUFFIXES)} units in {where}, found {name}: "
            "portablectl attaches no other types",
            "run this unit from the host's own configuration instead",
        )
    if hidden or not entry.name.endswith(ATTACHABLE_SUFFIXES):
        raise UnitDirError(
            f"expected only unit files ({' '.join(ATTACHABLE_SUFFIXES)}) in {where}, "
            f"found {name}, which is not a unit file",
            f"only unit files belong there: keep unit files named {app}.*, {app}-* or {app}@* "
            "in it, move notes elsewhere, and put image files in [image] tree or files",
        )
    if not fs.is_file(entry):
        raise UnitDirError(
            f"expected only unit files in {where}, found {name}, which is not a regular file",
            "a unit file is a regular file or a symlink to one; replace or remove this one",
        )
    if not named_for(entry.name, app):
        raise UnitDirError(
            f'expected unit names starting with "{app}." "{app}-" or "{app}@", found {name} '
            f"in {where}",
            f"portablectl silently ignores units not named after the image; rename it "
            f"to {app}-{name} or similar",
        )


def _shown(text: str | Path) -> str:
    """A name for a one-line message: as is when printable, else quoted with escapes."""
    s = str(text)
    return s if s.isprintable() else json.dumps(s)


# --- reading a unit file -----------------------------------------------------------------------


def logical_lines(text: str) -> Iterator[str]:
    """The section headers and settings of a unit file, read the way systemd reads them.

    As in config_parse() (systemd src/shared/conf-parser.c): a line whose first non-blank
    character is "#" or ";" is skipped, also inside a continuation, so a comment neither
    continues nor ends one; a line ending in an unescaped backslash continues on the next, the
    backslash becoming a space; a blank line ends a continuation. Lines come back stripped.
    """
    pending: str | None = None
    for raw in _NEWLINE.split(text.removeprefix("\ufeff")):
        if raw.lstrip().startswith(_COMMENTS):
            continue
        line = raw if pending is None else pending + raw
        # "\\" at the end is an escaped backslash, not a continuation.
        if (len(line) - len(line.rstrip("\\"))) % 2:
            pending = line[:-1] + " "
            continue
        pending = None
        if line.strip():
            yield line.strip()
    if pending is not None and pending.strip():
        yield pending.strip()


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (see ``logical_lines``)."""
    result: list[tuple[str, str, str]] = []
    section = ""
    for line in logical_lines(text):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line:
            key, value = line.split("=", 1)
            result.append((section, key.strip(), value.strip()))
    return result


# --- what a unit is for ------------------------------------------------------------------------


class Kind(StrEnum):
    SOCKET = "socket"
    #: A long-running service (the app, or a sidecar such as Litestream).
    SERVICE = "service"
    #: Type=oneshot without RemainAfterExit: runs when something that needs it starts.
    ONESHOT = "oneshot"
    #: The app service's twin for overlapped switches (``overlap_twin``): runs only during one.
    OVERLAP = "overlap"
    OTHER = "other"


@dataclass(frozen=True)
class UnitInfo:
    name: str
    kind: Kind
    #: For a socket: the service it activates.
    activates: str | None
    #: Image paths (relative) the unit runs or reads: its own file, Exec binaries, files named in them.
    paths: frozenset[str]
    #: For a socket: what it listens on, as written (``80``, ``[::]:443``, ``/run/x.sock``).
    listen: tuple[str, ...] = ()
    #: For an overlap twin: the app service it doubles during a switch.
    overlap_of: str | None = None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "kind": str(self.kind),
            "activates": self.activates,
            "paths": sorted(self.paths),
        }
        if self.kind is Kind.SOCKET:
            data["listen"] = list(self.listen)
        if self.overlap_of is not None:
            data["overlap_of"] = self.overlap_of
        return data

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, object]) -> UnitInfo:
        paths = data.get("paths", [])
        activates = data.get("activates")
        listen = data.get("listen", [])
        overlap_of = data.get("overlap_of")
        return cls(
            name=name,
            kind=Kind(str(data.get("kind", "other"))),
            activates=str(activates) if activates else None,
            paths=frozenset(str(p) for p in paths) if isinstance(paths, list) else frozenset(),
            listen=tuple(str(x) for x in listen) if isinstance(listen, list) else (),
            overlap_of=str(overlap_of) if overlap_of else None,
        )


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
    overlap_of: str | None = None
    listen: list[str] = []
    for section, key, value in directives(text):
        if section == "Unit" and key == OVERLAP_KEY:
            overlap_of = value or None
        elif section == "Service" and key == "Type":
            service_type = value
        elif section == "Service" and key == "RemainAfterExit":
            remain = value.lower() in {"yes", "true", "1", "on"}
        elif section == "Service" and (
            key in _EXEC_KEYS or key in ("Environment", "EnvironmentFile")
        ):
            paths |= _paths_in(value)
        elif section == "Socket" and key == "Service":
            activates = value
        elif section == "Socket" and key in _LISTEN_KEYS:
            # An empty assignment resets the list, as in systemd.
            listen = [*listen, value] if value else []
    if name.endswith(".socket"):
        kind = Kind.SOCKET
        activates = activates or name.removesuffix(".socket") + ".service"
    elif name.endswith(".service") and overlap_of:
        kind = Kind.OVERLAP
    elif name.endswith(".service"):
        kind = Kind.ONESHOT if service_type == "oneshot" and not remain else Kind.SERVICE
    else:
        kind = Kind.OTHER
    return UnitInfo(
        name=name,
        kind=kind,
        activates=activates,
        paths=frozenset(paths),
        listen=tuple(listen) if kind is Kind.SOCKET else (),
        overlap_of=overlap_of if kind is Kind.OVERLAP else None,
    )


# --- overlapped switches -------------------------------------------------------------------------

#: The [Unit] key that marks an overlap twin and names the app service it doubles (systemd
#: ignores keys that start with "X-").
OVERLAP_KEY = "X-PortableDeploy-OverlapOf"


def overlap_name(service: str) -> str:
    """The twin of an app service: ``app.service`` -> ``app-overlap.service``."""
    return service.removesuffix(".service") + "-overlap.service"


def overlapped_services(infos: Mapping[str, UnitInfo]) -> list[str]:
    """The services that get a twin with ``[deploy] overlap``: those a socket activates."""
    activated = {i.activates for i in infos.values() if i.kind is Kind.SOCKET and i.activates}
    return sorted(n for n in activated if n in infos and infos[n].kind is Kind.SERVICE)


def overlap_twin(service: str, text: str) -> str:
    """The twin unit of SERVICE (its unit file's TEXT) for overlapped switches.

    The same service, so it takes the same sockets (``Sockets=``), user, state and settings, and
    runs from whatever image is attached: a switch starts it from the new release beside the old
    process, restarts SERVICE while it serves, then stops it. It differs in three ways: no
    [Install] section (never enabled, never started at boot); ``Restart=no`` (a release that
    fails its start stays off the sockets); and the key that marks it as SERVICE's twin.
    """
    kept: list[str] = []
    section = ""
    for raw in _NEWLINE.split(text.removeprefix("\ufeff")):
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        if section != "Install":
            kept.append(raw)
    while kept and not kept[-1].strip():
        kept.pop()
    description = next(
        (v for s, k, v in directives(text) if s == "Unit" and k == "Description"), service
    )
    return (
        f"# Generated by portable-deploy from {service} ([deploy] overlap = true): the new\n"
        "# release runs here beside the old one during a switch, and only then.\n"
        + "\n".join(kept)
        + f"\n\n[Unit]\nDescription={description} (overlap, during a switch)\n"
        f"{OVERLAP_KEY}={service}\n\n[Service]\nRestart=no\n"
    )


# --- who holds the ports -----------------------------------------------------------------------


def listen_port(listen: str) -> int | None:
    """The TCP/UDP port of a socket's Listen*= value (``80``, ``0.0.0.0:80``, ``[::]:80``);
    None for a path, an abstract name or anything else that is not a port."""
    text = listen.strip()
    if text.startswith(("/", "@")):
        return None
    port = text.rpartition(":")[2] if ":" in text else text
    return int(port) if port.isdigit() and 1 <= int(port) <= 65535 else None


def held_ports(infos: Mapping[str, UnitInfo]) -> list[tuple[int, str]]:
    """(port, socket unit) for every port a .socket of the release holds, by port."""
    return sorted(
        (port, info.name)
        for info in infos.values()
        if info.kind is Kind.SOCKET
        for port in (listen_port(value) for value in info.listen)
        if port is not None
    )


def held_ports_line(infos: Mapping[str, UnitInfo]) -> str:
    """The dry run's line: ``ports held by systemd: 80 (app-http.socket), 443 (...)``."""
    ports = held_ports(infos)
    if ports:
        return "ports held by systemd: " + ", ".join(f"{p} ({unit})" for p, unit in ports)
    return (
        "ports held by systemd: none: a service that binds its own port closes it at every "
        "restart (add a .socket unit per port)"
    )


def self_bound_warning(infos: Mapping[str, UnitInfo], verify_port: int) -> str | None:
    """A warning when the app seems to bind its own port: some long-running service is
    activated by no socket, and no socket holds the port verify checks. None otherwise.

    Such an app refuses connections while it restarts (every deploy), and under a portable
    profile (DynamicUser=, PrivateUsers=, no capabilities) cannot bind a port below 1024 at all.
    """
    activated = {i.activates for i in infos.values() if i.kind is Kind.SOCKET}
    alone = sorted(n for n, i in infos.items() if i.kind is Kind.SERVICE and n not in activated)
    if not alone or any(port == verify_port for port, _ in held_ports(infos)):
        return None
    app = min(alone, key=len).removesuffix(".service")
    return (
        f"{', '.join(alone)} {'is' if len(alone) == 1 else 'are'} started by no .socket, and no "
        f"socket holds port {verify_port}, the one verify checks: an app that binds its own "
        "port drops connections at every restart, and under the portable profile cannot bind "
        f"a port below 1024; add a {app}-http.socket with ListenStream={verify_port} and serve "
        "the socket systemd passes ($LISTEN_FDS)"
    )
