"""The release manifest: what an image holds, written next to it as NAME_VERSION.manifest.json.

The manifest is the thing that gets signed; the image is bound to it by its sha256. Hosts check
that binding with plain shell (``grep -F '"image_sha256": "<hex>"'``), so ``to_json`` keeps that
key unique and always renders it as exactly that text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import DeployError
from .units import is_attachable

FORMAT = 1

_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE_VALUE = re.compile(r"sha256:[0-9a-f]{64}|symlink:.+", re.DOTALL)


@dataclass(frozen=True)
class Manifest:
    """One release: image identity, where it came from, and a hash of every file inside it."""

    name: str
    version: str
    image_sha256: str
    image_size: int
    compression: str
    git_commit: str | None
    git_dirty: bool
    #: Image path (relative POSIX, no leading slash) -> "sha256:<hex>" or "symlink:<target>".
    files: Mapping[str, str] = field(hash=False)
    #: Unit file names that portablectl attaches from this image, sorted.
    units: tuple[str, ...] = ()
    #: Unit name -> ``units.UnitInfo.to_dict()``: what plan.py needs to restart only what changed.
    unit_info: Mapping[str, Mapping[str, object]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    #: [image] compression_level the image was packed at; None: the compressor's own default.
    compression_level: int | None = None

    def __post_init__(self) -> None:
        # Read-only and in a stable order, so a Manifest really is a value.
        object.__setattr__(self, "files", MappingProxyType(dict(sorted(self.files.items()))))
        object.__setattr__(self, "units", tuple(sorted(self.units)))
        info = {k: MappingProxyType(dict(v)) for k, v in sorted(self.unit_info.items())}
        object.__setattr__(self, "unit_info", MappingProxyType(info))

    @property
    def release(self) -> str:
        return f"{self.name}_{self.version}"

    @property
    def image_name(self) -> str:
        return f"{self.release}.raw"

    @property
    def manifest_name(self) -> str:
        return f"{self.release}.manifest.json"

    def to_json(self) -> str:
        """Canonical text: sorted keys, two-space indent, trailing newline."""
        obj = {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "release": self.release,
            "image": self.image_name,
            "image_sha256": self.image_sha256,
            "image_size": self.image_size,
            "compression": str(self.compression),
            "git": {"commit": self.git_commit, "dirty": self.git_dirty},
            "files": dict(self.files),
            "units": list(self.units),
            "unit_info": {k: dict(v) for k, v in self.unit_info.items()},
        }
        if self.compression_level is not None:  # absent: the compressor's default, as before
            obj["compression_level"] = self.compression_level
        return json.dumps(obj, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Manifest:
        """Parse and validate manifest text; ``source`` names it in errors (a path, a host:path)."""
        hint = "rebuild the release with `invoke build`; the tool writes manifests, not people"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DeployError(f"{source}: manifest is not valid JSON ({e})", hint) from None
        try:
            return _parse(obj)
        except _Invalid as e:
            raise DeployError(f"{source}: invalid manifest: {e}", hint) from None


def changed_paths(old: Manifest, new: Manifest) -> frozenset[str]:
    """Image paths added, removed or changed between two releases."""
    keys = old.files.keys() | new.files.keys()
    return frozenset(k for k in keys if old.files.get(k) != new.files.get(k))


class _Invalid(Exception):
    pass


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    if key not in obj:
        raise _Invalid(f"missing key {where}{key!r}")
    value = obj[key]
    # bool is an int in Python; a JSON true is never a valid size.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Invalid(f"{where}{key!r} has the wrong type ({type(value).__name__})")
    return value


def _parse(obj: Any) -> Manifest:
    if not isinstance(obj, dict):
        raise _Invalid("top level is not an object")
    fmt = _get(obj, "format", int)
    if fmt != FORMAT:
        raise _Invalid(f"format {fmt} is not supported (expected {FORMAT})")
    sha = _get(obj, "image_sha256", str)
    if not _SHA256.fullmatch(sha):
        raise _Invalid("'image_sha256' is not 64 lower-case hex digits")
    size = _get(obj, "image_size", int)
    if size < 0:
        raise _Invalid("'image_size' is negative")
    git = _get(obj, "git", dict)
    commit = _get(git, "commit", (str, type(None)), "git.")
    dirty = _get(git, "dirty", bool, "git.")
    files = _get(obj, "files", dict)
    for path, value in files.items():
        if not isinstance(value, str) or not _FILE_VALUE.fullmatch(value):
            raise _Invalid(f"files[{path!r}] is neither 'sha256:<hex>' nor 'symlink:<target>'")
        if not path or path.startswith("/"):
            raise _Invalid(f"files key {path!r} is not a relative path")
    units = _get(obj, "units", list)
    if not all(isinstance(u, str) for u in units):
        raise _Invalid("'units' is not a list of strings")
    unit_info = obj.get("unit_info", {})
    if not isinstance(unit_info, dict) or not all(isinstance(v, dict) for v in unit_info.values()):
        raise _Invalid("'unit_info' is not an object of objects")
    name = _get(obj, "name", str)
    # Deploys restart what these name: never a unit the app's image cannot attach.
    for key, names in (("units", units), ("unit_info", list(unit_info))):
        for unit in names:
            if not is_attachable(unit, name):
                raise _Invalid(f"{key!r} names {unit!r}, which is not a unit file of {name!r}")
    manifest = Manifest(
        name=name,
        version=_get(obj, "version", str),
        image_sha256=sha,
        image_size=size,
        compression=_get(obj, "compression", str),
        git_commit=commit,
        git_dirty=dirty,
        files=files,
        units=tuple(units),
        unit_info=unit_info,
        compression_level=_get(obj, "compression_level", int)
        if "compression_level" in obj
        else None,
    )
    # Derived keys must agree with what they are derived from.
    for key, expected in (("release", manifest.release), ("image", manifest.image_name)):
        if _get(obj, key, str) != expected:
            raise _Invalid(f"{key!r} is {obj[key]!r}, expected {expected!r}")
    return manifest
