"""Facts: pure parsers that turn the output of a read-only remote command into typed values.

Each parser is tested against output recorded on a real Debian 12 host by running the command its
builder renders (``tests/unit/recorded/``, recorded again by ``scripts/record-facts``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass


def images_in_use(output: str, portables_dir: str) -> set[str]:
    """The releases (``NAME_VERSION``) whose images back a loop device: a unit runs from them.

    ``output`` is the content of /sys/block/loop*/loop/backing_file, one path a line; a path
    whose file was deleted ends in " (deleted)".
    """
    names = set()
    for line in output.splitlines():
        path = line.strip().removesuffix(" (deleted)")
        directory, _, file = path.rpartition("/")
        if directory == portables_dir and file.endswith(".raw"):
            names.add(file.removesuffix(".raw"))
    return names


def live_release(output: str, app: str) -> str | None:
    """The attached release (``NAME_VERSION``) from the ``RootImage=`` lines of the app's units.

    If units disagree (a half-finished attach), the most common image wins.
    """
    counts: dict[str, int] = {}
    for line in output.splitlines():
        if line.startswith("RootImage="):
            name = line.split("=", 1)[1].strip().rsplit("/", 1)[-1].removesuffix(".raw")
            if name.split("_", 1)[0] == app:
                counts[name] = counts.get(name, 0) + 1
    return max(counts, key=lambda n: counts[n]) if counts else None


@dataclass(frozen=True)
class UnitState:
    id: str
    load_state: str
    active_state: str
    sub_state: str
    result: str
    n_restarts: int
    main_pid: int
    active_enter_monotonic: int
    active_enter: str
    #: Bytes of memory its cgroup uses (``MemoryCurrent``); None when systemd does not count it.
    memory: int | None = None
    #: What a socket unit listens on (``Listen``: "[::]:80 (Stream)"), one entry per address.
    listen: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.active_state == "active"


#: ``MemoryCurrent`` when there is no value: "[not set]", or UINT64_MAX on some versions.
_NO_MEMORY = {"", "[not set]", str(2**64 - 1)}


def unit_states(output: str) -> dict[str, UnitState]:
    """``systemctl show -p ... UNIT...``: blocks of KEY=VALUE separated by blank lines (a
    socket's ``Listen`` comes once per address)."""
    states: dict[str, UnitState] = {}
    for block in output.strip().split("\n\n"):
        pairs = [line.split("=", 1) for line in block.splitlines() if "=" in line]
        props = dict(pairs)
        if "Id" not in props:
            continue
        memory = props.get("MemoryCurrent", "")
        states[props["Id"]] = UnitState(
            id=props["Id"],
            load_state=props.get("LoadState", ""),
            active_state=props.get("ActiveState", ""),
            sub_state=props.get("SubState", ""),
            result=props.get("Result", ""),
            n_restarts=_int(props.get("NRestarts")),
            main_pid=_int(props.get("MainPID")),
            active_enter_monotonic=_int(props.get("ActiveEnterTimestampMonotonic")),
            active_enter=props.get("ActiveEnterTimestamp", ""),
            memory=None if memory in _NO_MEMORY or not memory.isdigit() else int(memory),
            listen=tuple(value for key, value in pairs if key == "Listen" and value),
        )
    return states


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def sha256sum(output: str) -> str | None:
    """``sha256sum FILE`` -> the hex digest, or None when nothing was printed (no file)."""
    fields = output.split()
    return fields[0] if fields else None


@dataclass(frozen=True)
class HostInfo:
    systemd_version: int
    has_portablectl: bool
    has_ssh_keygen: bool
    trusted: bool
    set_up: bool
    user: str


def host_info(output: str) -> HostInfo:
    """The KEY=VALUE lines printed by ``commands.trust.host_info``."""
    props = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return HostInfo(
        systemd_version=_int(props.get("systemd")),
        has_portablectl=bool(props.get("portablectl")),
        has_ssh_keygen=bool(props.get("ssh_keygen")),
        trusted=props.get("trust") == "yes",
        set_up=props.get("state") == "yes",
        user=props.get("user", ""),
    )


@dataclass(frozen=True)
class Capacity:
    """What ``commands.system.capacity`` says: room for images, and squashfs in the kernel."""

    #: Bytes free where the images go (None: df printed nothing readable).
    free_bytes: int | None
    #: The kernel mounts squashfs: it is loaded, built in, or a module it can load (None: the
    #: output did not say).
    squashfs: bool | None


_SQUASHFS = {"loaded": True, "module": True, "no": False}


def capacity(output: str) -> Capacity:
    """The KEY=VALUE lines printed by ``commands.system.capacity``."""
    props = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    free = props.get("free_kib", "").strip()
    return Capacity(
        free_bytes=int(free) * 1024 if free.isdigit() else None,
        squashfs=_SQUASHFS.get(props.get("squashfs", "").strip()),
    )


@dataclass(frozen=True)
class AuditRecord:
    """One line of the host's audit log: what happened, and which release was live after it."""

    at: str
    event: str
    release: str
    live: str | None
    result: str
    user: str
    origin: str
    message: str = ""
    #: The secret set the release ran with after this event ("" for none); never values.
    secrets: str = ""
    #: The fleet operation this event was part of ("fleet deploy ID", "" for one host).
    operation: str = ""

    def shown(self) -> dict[str, str | None]:
        """The record as `audit --json` and `status --json` show it: its fields with a value,
        and always ``live`` and ``message``."""
        return {k: v for k, v in self.__dict__.items() if v or k in ("live", "message")}

    def to_json(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k not in ("secrets", "operation") or v}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


def audit_log(output: str) -> list[AuditRecord]:
    """The JSON lines of the audit log; unreadable lines are skipped, not fatal."""
    records = []
    for line in output.splitlines():
        try:
            data = json.loads(line)
            records.append(
                AuditRecord(
                    at=str(data["at"]),
                    event=str(data["event"]),
                    release=str(data["release"]),
                    live=data.get("live"),
                    result=str(data["result"]),
                    user=str(data.get("user", "")),
                    origin=str(data.get("origin", "")),
                    message=str(data.get("message", "")),
                    secrets=str(data.get("secrets", "")),
                    operation=str(data.get("operation", "")),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return records


def live_history(records: Sequence[AuditRecord]) -> list[str]:
    """The releases that were live, oldest first, one entry per change."""
    history: list[str] = []
    for record in records:
        if record.live and (not history or history[-1] != record.live):
            history.append(record.live)
    return history


def previous_release(records: Sequence[AuditRecord], live: str | None) -> str | None:
    """The release live before the current one, by deploy history (not by version order)."""
    for release in reversed(live_history(records)):
        if release != live:
            return release
    return None


@dataclass(frozen=True)
class LockRecord:
    token: str
    user: str
    origin: str
    pid: int
    at: float
    release: str
    command: str
    #: The deploying machine's /etc/machine-id and boot id ("" in records of older versions):
    #: CI runners share host names like "localhost", never machine ids.
    machine: str = ""
    boot: str = ""


def lock_record(output: str) -> LockRecord | None:
    """The JSON in the lock file; None when there is no lock. A garbled lock still counts as held."""
    text = output.strip()
    if not text:
        return None
    try:
        data = json.loads(text.splitlines()[0])
        return LockRecord(
            token=str(data["token"]),
            user=str(data["user"]),
            origin=str(data["origin"]),
            pid=int(data["pid"]),
            at=float(data["at"]),
            release=str(data["release"]),
            command=str(data["command"]),
            machine=str(data.get("machine", "")),
            boot=str(data.get("boot", "")),
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return LockRecord(token=text, user="?", origin="?", pid=0, at=0.0, release="?", command="?")


def state_sections(output: str, marker: str) -> dict[str, str]:
    """Split the output of ``commands.state.host_state`` into its named sections."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(marker):
            current = sections.setdefault(line[len(marker) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) + ("\n" if lines else "") for name, lines in sections.items()}


_SHA256 = re.compile(r"[0-9a-f]{64}")


def digest(section: str) -> str | None:
    """A SHA-256 digest printed alone on a line (``sha256sum < FILE | cut ...``), or None."""
    text = section.strip()
    return text if _SHA256.fullmatch(text) else None


_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def exposure(output: str) -> float | None:
    """The overall score ``systemd-analyze security UNIT`` prints (0 safest .. 10), or None."""
    m = _EXPOSURE.search(output)
    return float(m.group(1)) if m else None


@dataclass(frozen=True)
class Inventory:
    """What a delta upload plans from (``delta.inventory``)."""

    #: sha256 of the release's image already in place, if any.
    image: str | None
    #: Kept release -> sha256 of its chunk index, in the order listed.
    indexes: dict[str, str]
    #: File name of a left-over delta stream -> its size.
    partials: dict[str, int]


def inventory(output: str) -> Inventory:
    image, indexes, partials = None, {}, {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "image":
            image = fields[1]
        elif len(fields) == 3 and fields[0] == "index":
            indexes[fields[1]] = fields[2]
        elif len(fields) == 3 and fields[0] == "partial" and fields[2].isdigit():
            partials[fields[1]] = int(fields[2])
    return Inventory(image, indexes, partials)


def unix_time(value: str) -> int | None:
    """A time as ``systemctl show --timestamp=unix`` prints it (``@1790000000``); None for
    none (a unit never active prints nothing)."""
    text = value.strip().removeprefix("@")
    return int(text) if text.isdigit() and int(text) > 0 else None


@dataclass(frozen=True)
class DiskUse:
    """What the app's releases take on the host's disk, and what is left there."""

    #: Images kept (``NAME_VERSION.raw`` in /var/lib/portables).
    images: int
    #: Their bytes, plus the tool's per-release files (manifests, signatures, chunk indexes).
    bytes: int
    #: Bytes free on the file system of /var/lib/portables (None: not reported).
    free: int | None


def disk_use(images: str, releases_dir: str, df: str) -> DiskUse:
    """IMAGES: ``stat -c "%s %n"`` lines; RELEASES_DIR: ``du -sk DIR``; DF: ``df -Pk DIR``'s
    last line (the available column is the fourth, in KiB)."""
    sizes = [
        int(f[0]) for f in (line.split() for line in images.splitlines()) if f and f[0].isdigit()
    ]
    du = releases_dir.split()
    extra = int(du[0]) * 1024 if du and du[0].isdigit() else 0
    fields = df.strip().splitlines()[-1].split() if df.strip() else []
    free = int(fields[3]) * 1024 if len(fields) >= 4 and fields[3].isdigit() else None
    return DiskUse(len(sizes), sum(sizes) + extra, free)
