"""A release's secrets on a host, as data: which secret goes to which unit, and how (pure).

A *secret set* is what one deploy delivered: each secret's name, its keyed digest (never the
value), the units that receive it, and whether it is a credential file (``LoadCredentialEncrypted=``)
or an environment variable (a root-only ``EnvironmentFile=``). Its id is a digest of exactly that,
so the same values for the same units are the same set: stored once on the host under
``secrets/SET_ID/``, referenced by the audit record of every deploy that used it, and put back by
a rollback. Units get the set through one drop-in each (``DROPIN``), whose text this module
renders; a unit whose drop-in text changes is restarted by the deploy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: The drop-in a deploy writes next to each unit that receives secrets.
DROPIN = "50-portable-deploy-secrets.conf"
#: Where unit drop-ins live on the host (they apply to attached portable units too).
DROPIN_ROOT = "/etc/systemd/system"
#: In each set directory: the set's description, without values.
SET_FILE = "set.json"


@dataclass(frozen=True)
class Entry:
    """One secret of a set, without its value."""

    name: str
    digest: str
    units: tuple[str, ...]
    #: The variable it is delivered as (None: a credential file named NAME).
    environment: str | None = None


@dataclass(frozen=True)
class SecretSet:
    entries: tuple[Entry, ...] = ()

    @property
    def id(self) -> str:
        """Names, digests, units and delivery, digested; "" for no secrets."""
        if not self.entries:
            return ""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:20]

    def to_json(self) -> str:
        data = [
            {
                "name": e.name,
                "digest": e.digest,
                "units": list(e.units),
                "environment": e.environment,
            }
            for e in sorted(self.entries, key=lambda e: e.name)
        ]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SecretSet:
        entries = [
            Entry(
                str(d["name"]),
                str(d["digest"]),
                tuple(str(u) for u in d["units"]),
                None if d.get("environment") is None else str(d["environment"]),
            )
            for d in json.loads(text)
        ]
        return cls(tuple(sorted(entries, key=lambda e: e.name)))

    def units(self) -> set[str]:
        return {u for e in self.entries for u in e.units}

    def digests(self) -> dict[str, str]:
        return {e.name: e.digest for e in self.entries}


def dropin_path(unit: str) -> str:
    return f"{DROPIN_ROOT}/{unit}.d/{DROPIN}"


def env_file(set_dir: str, unit: str) -> str:
    return f"{set_dir}/{unit}.env"


def dropin_text(set_dir: str, secrets: SecretSet, unit: str) -> str | None:
    """The drop-in that gives UNIT its secrets from SET_DIR (None: it gets none)."""
    mine = [e for e in secrets.entries if unit in e.units]
    if not mine:
        return None
    lines = [f"# Written by portable-deploy: secret set {secrets.id}. Do not edit.", "[Service]"]
    lines += [
        f"LoadCredentialEncrypted={e.name}:{set_dir}/{e.name}.cred"
        for e in mine
        if e.environment is None
    ]
    if any(e.environment for e in mine):
        lines.append(f"EnvironmentFile={env_file(set_dir, unit)}")
    return "\n".join(lines) + "\n"


def wanted_dropins(
    set_dir: str,
    secrets: SecretSet,
    units: Sequence[str],
    present: Mapping[str, str],
    same_as: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """Unit -> drop-in text for every unit of the release and every unit that has one now
    (None: remove it). SAME_AS: units that get another unit's secrets (an overlap twin, its
    app's), from the same files."""
    alias = same_as or {}
    return {
        u: dropin_text(set_dir, secrets, alias.get(u, u)) for u in sorted(set(units) | set(present))
    }


def changed_units(present: Mapping[str, str], wanted: Mapping[str, str | None]) -> set[str]:
    """Units whose drop-in appears, disappears or changes."""
    return {u for u, text in wanted.items() if present.get(u) != text}


def parse_dropins(section: str, marker: str = "=== ") -> dict[str, str]:
    """The state script's ``secrets-dropins`` section: ``=== UNIT`` then the file's text."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in section.splitlines():
        if line.startswith(marker):
            current = found.setdefault(line[len(marker) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {u: "\n".join(lines) + "\n" for u, lines in found.items()}


def set_id_of(text: str) -> str | None:
    """The set a drop-in names in its first line."""
    first = text.splitlines()[0] if text else ""
    prefix = "# Written by portable-deploy: secret set "
    return first[len(prefix) :].split(".")[0] if first.startswith(prefix) else None


def env_line(variable: str, value: str) -> str:
    """``VAR='value'`` as systemd's EnvironmentFile= parser reads it back exactly (no expansion
    happens in an environment file); newlines are refused by the caller."""
    if "'" not in value:
        return f"{variable}='{value}'\n"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{variable}="{escaped}"\n'
