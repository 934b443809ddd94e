"""deploy.toml -> frozen dataclasses.

Strict: unknown keys, wrong types and impossible values are errors that name the file and the key
path, say what was expected and what was found, and give a hint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import shlex
import ssl
import subprocess
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from . import fs, profiles
from .errors import ConfigError
from .tls import client_context as tls_client_context
from .units import UnitDirError, named_for, unit_files

DEFAULT_FILE = "deploy.toml"
ENV_FILE = "DEPLOY_TOML"
#: When set and non-empty, overrides [app] version at build time.
ENV_VERSION = "DEPLOY_VERSION"


class Compression(StrEnum):
    ZSTD = "zstd"
    GZIP = "gzip"
    XZ = "xz"
    LZ4 = "lz4"
    LZO = "lzo"


@dataclass(frozen=True)
class AppConfig:
    name: str
    #: A literal version, or "git" for `git describe --tags --always --dirty` at build time.
    version: str


@dataclass(frozen=True)
class BuildConfig:
    #: Shell command lines run in order from the project root before the image is assembled.
    commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageConfig:
    # Each default is declared here only: load_config reads it from the field, resolving a
    # relative path against the directory of deploy.toml.
    #: Skeleton directory copied into the image root (None: no skeleton).
    tree: Path | None = None
    #: Directory whose unit files go to usr/lib/systemd/system/ in the image.
    units: Path = Path("units")
    #: Destination inside the image (relative, no leading slash) -> local source file.
    files: Mapping[str, Path] = field(default_factory=dict)
    compression: Compression = Compression.ZSTD
    #: mksquashfs's -Xcompression-level (None: the compressor's own default, 15 for zstd).
    compression_level: int | None = None
    #: Output directory for images, manifests and signatures.
    dist: Path = Path("dist")


@dataclass(frozen=True)
class SignConfig:
    #: Private SSH key that signs manifests (None: not configured).
    key: Path | None = None
    #: allowed_signers file that hosts trust (None: made from key + ".pub" and principal).
    allowed_signers: Path | None = None
    principal: str = "deploy"


@dataclass(frozen=True)
class HostConfig:
    name: str
    #: Host name, IP address or ~/.ssh/config alias (None for a sandbox host).
    address: str | None = None
    port: int | None = None
    user: str | None = None
    identity_file: Path | None = None
    #: This host is the local sandbox VM (`invoke sandbox.up`); address/port/user come from it.
    sandbox: bool = False
    #: Which sandbox VM: 1 is sandbox-1 (``sandbox = true``), N is sandbox-N (``sandbox = N``).
    sandbox_index: int = 1
    #: Labels that `--role` selects the host by (``roles = ["web", "eu"]``).
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeployConfig:
    keep_releases: int = 5
    #: Seconds after which a deploy lock counts as stale and may be broken with --break-lock.
    lock_ttl: int = 900
    #: The portable profile units are attached with (``portablectl attach --profile``):
    #: the tool's own ``pd-hardened``, or a profile on the host such as the stock ``default``.
    profile: str = profiles.DEFAULT
    #: Seconds a switched host waits for the deployer's sign of life before it puts the
    #: previous release back by itself (the dead-man switch).
    confirm_timeout: int = 60
    #: Overlapped switches: the new release starts beside the old one on the same sockets (a
    #: twin unit the build adds), ready before it shares them; then the old one drains.
    overlap: bool = False


#: A batch of the fleet's switch: a number of hosts, or a share of the fleet ("25%").
Batch = int | str


@dataclass(frozen=True)
class FleetConfig:
    """[fleet]: how a task acts on several hosts."""

    #: Hosts connected to, uploaded to or switched at the same time, at most.
    parallel: int = 8
    #: The switch's batches, in order: a canary host first, then the rest. The last batch
    #: takes whatever hosts are left.
    batches: tuple[Batch, ...] = (1, "100%")
    #: Seconds to wait after a batch passed verification, before the next one.
    pause: float = 0.0
    #: "stop": a failed batch is rolled back by itself, earlier batches keep the new release;
    #: "rollback-all": every host switched goes back to what it ran before.
    on_failure: str = "stop"
    #: Hosts that may be unreachable (or fail their upload) and be left out; reported.
    max_failures: int = 0


ON_FAILURE = ("stop", "rollback-all")


@dataclass(frozen=True)
class UploadConfig:
    #: Send only the chunks the host lacks (``chunks``, ``transfer``); false sends whole images.
    delta: bool = True


@dataclass(frozen=True)
class TlsConfig:
    """[verify.tls]: the health and version checks go over HTTPS and check the certificate."""

    #: Server name sent as SNI and Host; the certificate must be valid for it.
    name: str
    #: Port on the host (127.0.0.1) that serves HTTPS.
    port: int = 443
    #: Fewer days than this left before the certificate expires: a warning (verify passes).
    warn_days: int = 14
    #: PEM file of the CA certificates to trust instead of the system's store (None: the system's).
    ca_file: Path | None = None


@dataclass(frozen=True)
class VerifyConfig:
    #: Port on the host (127.0.0.1) that the health check reaches through the SSH connection
    #: (unused when ``tls`` is set: the checks then go to ``tls.port``).
    port: int = 80
    path: str = "/healthz"
    status: int = 200
    #: Path whose body must contain the new version (None: not checked).
    version_path: str | None = "/version"
    #: Seconds to wait for units to be active and the health check to pass.
    timeout: float = 60.0
    #: Seconds units must stay up (no restarts) after the health check passed.
    settle: float = 2.0
    #: [verify.tls] (None: plain HTTP on ``port``).
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class SecretConfig:
    """[secrets.NAME]: where a secret's value comes from on this machine, and who receives it.

    Exactly one of ``env``, ``file`` and ``command`` is set (the loader sees to it).
    """

    #: The systemd credential name (and the secret's name in messages).
    name: str
    #: Service unit files of the app that receive it.
    units: tuple[str, ...]
    #: Source: an environment variable of the deploying process.
    env: str | None = None
    #: Source: a file on this machine, readable by its owner only.
    file: Path | None = None
    #: Source: a shell command line (``sh -c``, from the project directory) whose stdout is the value.
    command: str | None = None
    #: Deliver as this environment variable (a root-only EnvironmentFile=), not a credential file.
    environment: str | None = None

    @property
    def source(self) -> str:
        """Where the value comes from, for messages: ``env X``, ``file PATH``, ``command `CMD```."""
        if self.env is not None:
            return f"env {self.env}"
        if self.file is not None:
            return f"file {_shown(self.file)}"
        if self.command is not None:
            line = f"`{self.command}`"
            return f"command {line if line.isprintable() else _quote(self.command)}"
        return "no source"


@dataclass(frozen=True)
class Config:
    #: The deploy.toml file (absolute); relative paths in it are resolved against its directory.
    path: Path
    app: AppConfig
    build: BuildConfig
    image: ImageConfig
    sign: SignConfig
    hosts: Mapping[str, HostConfig]
    deploy: DeployConfig = DeployConfig()
    fleet: FleetConfig = FleetConfig()
    upload: UploadConfig = UploadConfig()
    verify: VerifyConfig = VerifyConfig()
    #: [secrets.NAME] by name (empty: the app gets no secrets).
    secrets: Mapping[str, SecretConfig] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.path.parent


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The deploy.toml to read: the explicit one, else $DEPLOY_TOML, else ./deploy.toml."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV_FILE) or DEFAULT_FILE)


# --- defaults ---------------------------------------------------------------------------------
# Every default lives on its dataclass field (the key in deploy.toml is the field's name); the
# loader and the example lines below read it from there.

_ConfigClass = type[
    AppConfig
    | BuildConfig
    | ImageConfig
    | SignConfig
    | HostConfig
    | DeployConfig
    | FleetConfig
    | UploadConfig
    | VerifyConfig
    | TlsConfig
    | SecretConfig
]


def _default(cls: _ConfigClass, name: str) -> Any:
    """The default declared on the field ``name`` of a config dataclass."""
    for item in dataclasses.fields(cls):
        if item.name != name:
            continue
        if item.default_factory is not dataclasses.MISSING:
            return item.default_factory()
        if item.default is not dataclasses.MISSING:
            return item.default
        break
    raise LookupError(f"{cls.__name__}.{name} has no default")


def _example(cls: _ConfigClass, name: str) -> str:
    """``key = default`` as written in deploy.toml: 60.0 as 60, Path("dist") as "dist"."""
    value = _default(cls, name)
    if isinstance(value, float) and value.is_integer():
        return f"{name} = {int(value)}"
    if isinstance(value, int):
        return f"{name} = {value}"
    return f"{name} = {json.dumps(str(value))}"


# --- schema -----------------------------------------------------------------------------------
# Each known key with an example line; the examples double as hints after a type error.

_TLS_NAME_EXAMPLE = 'name = "scoreboard.example.com"'

_SECTIONS: dict[str, dict[str, str]] = {
    "app": {"name": 'name = "scoreboard"', "version": 'version = "1.4.2" (or "git")'},
    "build": {"commands": 'commands = ["make build"]'},
    "image": {
        "tree": 'tree = "image"',
        "units": _example(ImageConfig, "units"),
        "files": 'files = { "usr/bin/scoreboard" = "build/scoreboard" }',
        "compression": _example(ImageConfig, "compression"),
        "compression_level": "compression_level = 3",
        "dist": _example(ImageConfig, "dist"),
    },
    "sign": {
        "key": 'key = "~/.ssh/deploy_ed25519"',
        "allowed_signers": 'allowed_signers = "allowed_signers"',
        "principal": _example(SignConfig, "principal"),
    },
    "hosts": {},
    "deploy": {
        "keep_releases": _example(DeployConfig, "keep_releases"),
        "lock_ttl": _example(DeployConfig, "lock_ttl"),
        "profile": _example(DeployConfig, "profile"),
        "confirm_timeout": _example(DeployConfig, "confirm_timeout"),
        "overlap": "overlap = true",
    },
    "fleet": {
        "parallel": _example(FleetConfig, "parallel"),
        "batches": 'batches = [1, "100%"]',
        "pause": _example(FleetConfig, "pause"),
        "on_failure": _example(FleetConfig, "on_failure") + ' (or "rollback-all")',
        "max_failures": _example(FleetConfig, "max_failures"),
    },
    "upload": {"delta": "delta = true"},
    "verify": {
        "port": _example(VerifyConfig, "port"),
        "path": _example(VerifyConfig, "path"),
        "status": _example(VerifyConfig, "status"),
        "version_path": _example(VerifyConfig, "version_path") + ' (or "" to skip)',
        "timeout": _example(VerifyConfig, "timeout"),
        "settle": _example(VerifyConfig, "settle"),
        "tls": f"[verify.tls] with {_TLS_NAME_EXAMPLE}",
    },
    "secrets": {},
}
_TLS_KEYS: dict[str, str] = {
    "name": _TLS_NAME_EXAMPLE,
    "port": _example(TlsConfig, "port"),
    "warn_days": _example(TlsConfig, "warn_days"),
    "ca_file": 'ca_file = "tls/test-ca.pem"',
}
_HOST_KEYS: dict[str, str] = {
    "address": 'address = "203.0.113.10"',
    "port": "port = 22",
    "user": 'user = "deploy"',
    "identity_file": 'identity_file = "~/.ssh/id_ed25519"',
    "sandbox": "sandbox = true",
    "roles": 'roles = ["web"]',
}
_SECRET_KEYS: dict[str, str] = {
    "env": 'env = "SCOREBOARD_TOKEN"',
    "file": 'file = ".deploy/api-token"',
    "command": 'command = "pass show scoreboard/api-token"',
    "units": 'units = ["scoreboard.service"]',
    "environment": 'environment = "API_TOKEN"',
}
_SECRET_SOURCES = ("env", "file", "command")
_HOST_EXAMPLE = '[hosts.prod] with address = "203.0.113.10" (or sandbox = true for the local VM)'

_APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: A word on the ssh command line: printable ASCII without spaces.
_SSH_WORD = re.compile(r"[\x21-\x7e]+")
_URL_PATH = re.compile(r"/[\x21-\x7e]*")
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: A systemd credential name: it becomes a file name under $CREDENTIALS_DIRECTORY.
_SECRET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_GIT_DESCRIBE = ("describe", "--tags", "--always", "--dirty")

GitRunner = Callable[[list[str]], str]


# --- rendering values in messages -------------------------------------------------------------


def _quote(text: str) -> str:
    """A double-quoted string that stays on one line: non-printable characters are escaped."""
    quoted = json.dumps(text, ensure_ascii=False)
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in quoted
    )


def _key(key: str) -> str:
    """A key as it is written in TOML: bare when possible, else quoted."""
    return key if _BARE_KEY.fullmatch(key) else _quote(key)


def _shown(text: str | Path) -> str:
    """A path or name for a one-line message: as is when printable, else escaped and quoted."""
    s = str(text)
    return s if s.isprintable() else _quote(s)


def _type_name(value: object) -> str:
    # bool before int: TOML booleans are Python bools, which are ints.
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__  # datetime, date, time


def _render(value: object, budget: int = 40) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value if len(value) <= budget else value[:budget] + "...")
    if isinstance(value, list):
        if budget < 5:
            return "[...]"
        items = [_render(v, budget // 2) for v in value[:3]]
        return "[" + ", ".join(items) + (", ...]" if len(value) > 3 else "]")
    if isinstance(value, dict):
        return "{...}"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return repr(value)


def _found(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    return f"{_render(value)} ({_type_name(value)})"


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Doc:
    """The file being read: how it is named in messages and where its relative paths start."""

    file: str
    root: Path

    def error(self, where: str, text: str, hint: str) -> ConfigError:
        return ConfigError(f"{self.file}: {where}: {text}", hint=hint)

    def resolve(self, text: str) -> Path:
        path = Path(os.path.expanduser(text))
        return path if path.is_absolute() else self.root / path


def _reject_unknown(doc: _Doc, where: str, data: Mapping[str, object], valid: list[str]) -> None:
    for key in data:
        if key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=1)
        guess = f'did you mean "{close[0]}"?' if close else "valid keys are " + ", ".join(valid)
        raise doc.error(
            f"{where} {_key(key)}",
            f"unknown key, {guess}",
            hint=f"keys of {where}: {', '.join(valid)}; remove or rename this one",
        )


def _reject_unknown_tables(doc: _Doc, data: Mapping[str, object]) -> None:
    valid = list(_SECTIONS)
    shown = ", ".join(f"[{name}]" for name in valid)
    for key, value in data.items():
        if key in _SECTIONS:
            continue
        if not isinstance(value, dict):
            raise doc.error(
                _key(key),
                f"unknown top-level key, expected only the tables {shown}",
                hint="every key belongs in a table; is a [table] header missing above it?",
            )
        close = difflib.get_close_matches(key, valid, n=1)
        guess = f"did you mean [{close[0]}]?" if close else f"valid tables are {shown}"
        raise doc.error(
            f"[{_key(key)}]",
            f"unknown table, {guess}",
            hint=f"deploy.toml has the tables {shown}",
        )


class _Table:
    """One [section] being read: typed getters whose errors name the key path.

    A getter of a key that is absent returns the default of the field of ``cls`` with that name.
    """

    def __init__(
        self,
        doc: _Doc,
        where: str,
        data: Mapping[str, object],
        examples: Mapping[str, str],
        cls: _ConfigClass,
    ) -> None:
        self.doc = doc
        self.where = where
        self.data = data
        self.examples = examples
        self.cls = cls
        _reject_unknown(doc, where, data, list(examples))

    def value(self, key: str) -> object:
        """The value in the file, else the field's default."""
        return self.data[key] if key in self.data else _default(self.cls, key)

    def fail(self, key: str, text: str, hint: str | None = None) -> ConfigError:
        return self.fail_at(_key(key), text, hint or f"for example: {self.examples[key]}")

    def fail_at(self, subpath: str, text: str, hint: str | None = None) -> ConfigError:
        """An error at ``[table] subpath``, e.g. ``files."usr/bin/x"`` (already rendered)."""
        first = subpath.split(".", 1)[0]
        default = self.examples.get(first)
        return self.doc.error(
            f"{self.where} {subpath}",
            text,
            hint or (f"for example: {default}" if default else "see the README"),
        )

    def type_error(self, key: str, expected: str) -> ConfigError:
        return self.fail(key, f"expected {expected}, found {_found(self.data[key])}")

    def string(self, key: str) -> str | None:
        """The string in the file, or None when the key is absent (no default)."""
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self.type_error(key, "a string")
        return value

    def required_string(self, key: str) -> str:
        value = self.string(key)
        if value is None:
            raise self.fail(key, "required key is missing, expected a string")
        return value

    def path(self, key: str) -> Path | None:
        """The path in the file, else the field's default; relative ones are resolved."""
        text = self.string(key)
        if text is None:
            default = _default(self.cls, key)
            return None if default is None else self.doc.resolve(str(default))
        if not text or "\0" in text:
            raise self.type_error(key, "a file system path")
        return self.doc.resolve(text)

    def integer(self, key: str, low: int, high: int | None, expected: str) -> int:
        value = self.value(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            raise self.type_error(key, expected)
        return value

    def number(self, key: str, *, positive: bool) -> float:
        value = self.value(key)
        expected = "a number greater than 0" if positive else "a number of at least 0"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.type_error(key, expected)
        number = float(value)
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            raise self.type_error(key, expected)
        return number

    def boolean(self, key: str) -> bool:
        value = self.value(key)
        if not isinstance(value, bool):
            raise self.type_error(key, "a boolean (true or false)")
        return value


def _section(doc: _Doc, data: Mapping[str, object], name: str, cls: _ConfigClass) -> _Table:
    """An optional [name] table (empty when absent) whose defaults are those of ``cls``."""
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise doc.error(
            f"[{name}]",
            f"expected a table, found {_found(value)}",
            hint=f"write [{name}] on a line of its own, followed by its keys",
        )
    return _Table(doc, f"[{name}]", value, _SECTIONS[name], cls)


def _read_toml(doc: _Doc, path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            raw = file.read(CONFIG_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"{doc.file}: file not found",
            hint=f"create it (see the README), or set {ENV_FILE} to the path of your deploy.toml",
        ) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"{doc.file}: cannot read the file: {reason}",
            hint=f"check that it is a readable file, or set {ENV_FILE} to another path",
        ) from None
    if len(raw) > CONFIG_MAX_BYTES:
        raise ConfigError(
            f"{doc.file}: expected a TOML file of at most {CONFIG_MAX_BYTES // 1024} KiB, "
            "found a larger one",
            hint=f"point {ENV_FILE} (or ./deploy.toml) at your deploy.toml",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{doc.file}: expected UTF-8 text, found an invalid byte at offset {exc.start}",
            hint="TOML files are UTF-8; save the file with that encoding",
        ) from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(
            f"{doc.file}: expected a configuration file, found arrays or tables nested too deeply",
            hint="deploy.toml needs at most three levels of nesting",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{doc.file}: TOML syntax error: {exc}",
            hint="fix the syntax at that line and column (TOML reference: https://toml.io/en/v1.0.0)",
        ) from None


# --- values with rules of their own ----------------------------------------------------------


#: Characters a version may hold. Not "_" (portablectl splits NAME_VERSION at it), "/", "\\"
#: (GNU sha256sum escapes its output for it), "%" (systemd expands specifiers in RootImage=),
#: whitespace or anything a shell or a unit file would read specially.
_VERSION_CHARS = re.compile(r"[A-Za-z0-9.+~-]+")
#: Longest name and version: NAME_VERSION.manifest.json.sig must stay far below 255 bytes.
NAME_MAX = 64
VERSION_MAX = 128
#: A deploy.toml is a few KB; reading is bounded so that DEPLOY_TOML=/dev/zero is an error.
CONFIG_MAX_BYTES = 1 << 20


def version_problem(version: str) -> tuple[str, str] | None:
    """(what is wrong, hint) for a version that cannot be part of NAME_VERSION.raw, else None.

    The one rule for versions: config, $DEPLOY_VERSION, git describe and the build all use it.
    """
    if not version:
        return "is empty", 'set a version such as "1.4.2", or "git"'
    if "_" in version:
        return (
            'contains "_"',
            'the image is NAME_VERSION.raw and portablectl splits at the first "_"; use "-" or "."',
        )
    if len(version) > VERSION_MAX:
        return f"is longer than {VERSION_MAX} characters", "use a shorter version"
    if not _VERSION_CHARS.fullmatch(version):
        bad = next(c for c in version if not _VERSION_CHARS.fullmatch(c))
        return (
            f"contains {bad!r}",
            "the version is part of file names and unit settings on the host; "
            "use letters, digits, '.', '-', '+' and '~'",
        )
    return None


_VERSION_EXPECTED = "a version of letters, digits, '.', '-', '+' and '~'"


def app_name_problem(name: str) -> tuple[str, str] | None:
    """(what is wrong, hint) for a name that cannot be [app] name, else None (the one rule:
    deploy.toml and `invoke init --name` both use it)."""
    if _APP_NAME.fullmatch(name) and len(name) <= NAME_MAX:
        return None
    return (
        'expected lowercase letters, digits and "-" (starting with a letter or digit), '
        f"at most {NAME_MAX} characters, found {_found(name)}",
        'the image is NAME_VERSION.raw and portablectl splits at the first "_"; use e.g. "my-app"',
    )


def _load_app(doc: _Doc, data: Mapping[str, object]) -> AppConfig:
    if "app" not in data:
        raise doc.error(
            "[app]",
            "required table is missing, expected [app] with name and version",
            hint='add [app] with name = "scoreboard" and version = "1.4.2" (or "git")',
        )
    app = _section(doc, data, "app", AppConfig)
    name = app.required_string("name")
    name_problem = app_name_problem(name)
    if name_problem:
        raise app.fail("name", name_problem[0], hint=name_problem[1])
    version = app.required_string("version")
    problem = version_problem(version)
    if problem:
        raise app.fail(
            "version",
            f"expected {_VERSION_EXPECTED}, found {_found(version)} which {problem[0]}",
            hint=problem[1],
        )
    return AppConfig(name=name, version=version)


def _load_build(doc: _Doc, data: Mapping[str, object]) -> BuildConfig:
    build = _section(doc, data, "build", BuildConfig)
    value = build.value("commands")
    if not isinstance(value, list | tuple):  # a tuple only as the field's default
        raise build.type_error("commands", "an array of strings")
    for index, command in enumerate(value):
        if not isinstance(command, str) or not command.strip():
            raise build.fail(
                "commands",
                f"expected an array of non-empty strings, found {_found(command)} at index {index}",
            )
    return BuildConfig(commands=tuple(value))


def _normalise_destination(image: _Table, dest: str) -> str:
    """A clean relative POSIX path for a key of [image] files."""
    where = f"files.{_key(dest)}"
    if dest.startswith("/"):
        raise image.fail_at(
            where,
            f"expected a path relative to the image root, found {_found(dest)}",
            hint=f'drop the leading "/": write {_quote(dest.lstrip("/"))}',
        )
    parts = [part for part in dest.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise image.fail_at(
            where, f'expected a path inside the image, found {_found(dest)} with ".."'
        )
    if not parts or "\0" in dest:
        raise image.fail_at(where, f"expected a file path inside the image, found {_found(dest)}")
    if dest.endswith("/"):
        raise image.fail_at(
            where,
            f'expected a file path, found {_found(dest)} ending in "/"',
            hint="name the file itself, e.g. usr/bin/scoreboard",
        )
    return "/".join(parts)


def _load_files(image: _Table) -> dict[str, Path]:
    value = image.value("files")
    if not isinstance(value, dict):
        raise image.type_error("files", "a table of destination = source path")
    files: dict[str, Path] = {}
    written_as: dict[str, str] = {}
    for dest, source in value.items():
        where = f"files.{_key(dest)}"
        clean = _normalise_destination(image, dest)
        if clean in written_as:
            raise image.fail_at(
                where,
                f"expected each destination once, found {_found(written_as[clean])} and "
                f"{_found(dest)}, which both mean {_quote(clean)}",
                hint="keep one of the two entries",
            )
        if not isinstance(source, str) or not source or "\0" in source:
            raise image.fail_at(
                where,
                f"expected the path of a local file, found {_found(source)}",
                hint=f"for example: {_quote(clean)} = "
                f"{_quote('build/' + clean.rsplit('/', 1)[-1])}",
            )
        written_as[clean] = dest
        files[clean] = image.doc.resolve(source)
    for clean in files:
        parts = clean.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in files:
                raise image.fail_at(
                    f"files.{_key(written_as[clean])}",
                    f"expected {_quote(parent)} to be a directory, found it is a file "
                    f"(files.{_key(written_as[parent])})",
                    hint="a destination cannot be both a file and a directory; rename one",
                )
    return files


def _load_image(doc: _Doc, data: Mapping[str, object], app: str) -> ImageConfig:
    image = _section(doc, data, "image", ImageConfig)
    tree = image.path("tree")
    if tree is not None and not fs.is_dir(tree):
        raise image.fail(
            "tree",
            f"expected an existing directory, found {_found(image.data['tree'])}, "
            f"and {_shown(tree)} is not a directory",
            hint="create the directory, or remove tree to build without a skeleton",
        )
    files = _load_files(image)
    compression = image.string("compression")
    if compression is None:
        compression = _default(ImageConfig, "compression")
    elif compression not in {c.value for c in Compression}:
        raise image.fail(
            "compression",
            f"expected one of {', '.join(c.value for c in Compression)}, "
            f"found {_found(image.data['compression'])}",
        )
    level = _compression_level(image, Compression(compression))
    units, dist = image.path("units"), image.path("dist")
    assert units is not None and dist is not None  # both have a default
    try:
        unit_files(units, app)
    except UnitDirError as exc:
        raise image.fail("units", exc.message, hint=exc.hint) from None
    return ImageConfig(
        tree=tree,
        units=units,
        files=files,
        compression=Compression(compression),
        compression_level=level,
        dist=dist,
    )


#: The compressors whose level mksquashfs takes (-Xcompression-level), and its range.
LEVELS = {Compression.ZSTD: (1, 22), Compression.GZIP: (1, 9), Compression.LZO: (1, 9)}


def _compression_level(image: _Table, compression: Compression) -> int | None:
    if "compression_level" not in image.data:
        return None
    if compression not in LEVELS:
        takes = ", ".join(f"{c} ({low}-{high})" for c, (low, high) in LEVELS.items())
        raise image.fail(
            "compression_level",
            f"{compression} has no level in mksquashfs; only {takes} do",
            hint="remove compression_level, or choose one of those compressors",
        )
    low, high = LEVELS[compression]
    return image.integer(
        "compression_level", low, high, f"an integer from {low} to {high} for {compression}"
    )


def _load_sign(doc: _Doc, data: Mapping[str, object]) -> SignConfig:
    sign = _section(doc, data, "sign", SignConfig)
    key = sign.path("key")  # may not exist yet; `sign` checks it when it needs it
    allowed = sign.path("allowed_signers")
    if allowed is not None and not fs.is_file(allowed):
        raise sign.fail(
            "allowed_signers",
            f"expected an existing file, found {_found(sign.data['allowed_signers'])}, "
            f"and {_shown(allowed)} is not a file",
            hint="create it (one line: PRINCIPAL KEY), or remove allowed_signers to derive it "
            "from key + .pub",
        )
    principal = sign.string("principal")
    if principal is None:
        principal = _default(SignConfig, "principal")
    elif not principal or not _SSH_WORD.fullmatch(principal) or "," in principal:
        raise sign.fail(
            "principal",
            "expected a principal without whitespace or commas (printable ASCII), "
            f"found {_found(principal)}",
        )
    return SignConfig(key=key, allowed_signers=allowed, principal=principal)


def _load_host(doc: _Doc, name: str, value: object) -> HostConfig:
    where = f"[hosts.{_key(name)}]"
    if not _HOST_NAME.fullmatch(name):
        raise doc.error(
            where,
            f'expected a host name of letters, digits, "-" and "_", found {_found(name)}',
            hint="the name labels the host in commands and output, e.g. [hosts.prod]",
        )
    if not isinstance(value, dict):
        raise doc.error(
            where,
            f"expected a table, found {_found(value)}",
            hint=f'write [hosts.{name}] on a line of its own, then address = "..."',
        )
    host = _Table(doc, where, value, _HOST_KEYS, HostConfig)
    sandbox = value.get("sandbox", False)
    if isinstance(sandbox, bool):
        index = 1
    elif isinstance(sandbox, int) and 1 <= sandbox <= 16:
        sandbox, index = True, sandbox
    else:
        raise host.type_error("sandbox", "true, false, or the number N of sandbox-N (1 to 16)")
    if sandbox:
        for key in ("address", "port", "user", "identity_file"):
            if key in value:
                raise host.fail(
                    key,
                    f"expected no {key} on a sandbox host, found {_found(value[key])}",
                    hint="the sandbox VM provides address, port, user and key; remove the key "
                    "or set sandbox = false",
                )
        return HostConfig(name=name, sandbox=True, sandbox_index=index, roles=_roles(host))
    address = host.string("address")
    if address is None:
        raise host.fail(
            "address",
            "required key is missing, expected a host name, IP address or ssh alias",
            hint='add address = "203.0.113.10", or sandbox = true for the local VM',
        )
    if not _SSH_WORD.fullmatch(address) or address.startswith("-"):
        raise host.type_error("address", "a host name, IP address or ssh alias")
    user = host.string("user")
    if user is not None and (not _SSH_WORD.fullmatch(user) or user.startswith("-")):
        raise host.type_error("user", "a user name without whitespace")
    # Absent, ssh's own default or ~/.ssh/config decides: HostConfig.port stays None.
    port = host.integer("port", 1, 65535, "an integer from 1 to 65535") if "port" in value else None
    return HostConfig(
        name=name,
        address=address,
        port=port,
        user=user,
        identity_file=host.path("identity_file"),
        roles=_roles(host),
    )


def _roles(host: _Table) -> tuple[str, ...]:
    value = host.data.get("roles", [])
    if not isinstance(value, list) or not all(
        isinstance(r, str) and _HOST_NAME.fullmatch(r) for r in value
    ):
        raise host.type_error("roles", 'a list of names of letters, digits, "-" and "_"')
    return tuple(dict.fromkeys(value))


def _load_hosts(doc: _Doc, data: Mapping[str, object]) -> dict[str, HostConfig]:
    if "hosts" not in data:
        raise doc.error(
            "[hosts]",
            "required table is missing, expected at least one [hosts.NAME]",
            hint=f"add {_HOST_EXAMPLE}",
        )
    value = data["hosts"]
    if not isinstance(value, dict) or not value:
        raise doc.error(
            "[hosts]",
            f"expected at least one [hosts.NAME] table, found {_found(value)}",
            hint=f"add {_HOST_EXAMPLE}",
        )
    return {name: _load_host(doc, name, host) for name, host in value.items()}


def _load_deploy(doc: _Doc, data: Mapping[str, object]) -> DeployConfig:
    deploy = _section(doc, data, "deploy", DeployConfig)
    return DeployConfig(
        keep_releases=deploy.integer(
            "keep_releases",
            2,
            None,
            "an integer of at least 2 (the current and one to roll back to)",
        ),
        lock_ttl=deploy.integer("lock_ttl", 1, None, "a whole number of seconds above 0"),
        profile=_profile(deploy),
        confirm_timeout=deploy.integer(
            "confirm_timeout", 10, 3600, "a whole number of seconds from 10 to 3600"
        ),
        overlap=deploy.boolean("overlap")
        if "overlap" in deploy.data
        else _default(DeployConfig, "overlap"),
    )


def _load_fleet(doc: _Doc, data: Mapping[str, object]) -> FleetConfig:
    fleet = _section(doc, data, "fleet", FleetConfig)
    on_failure = fleet.string("on_failure")
    if on_failure is None:
        on_failure = _default(FleetConfig, "on_failure")
    elif on_failure not in ON_FAILURE:
        raise fleet.fail(
            "on_failure",
            f'expected "stop" or "rollback-all", found {_found(on_failure)}',
            hint='on_failure = "stop" keeps the batches that passed on the new release',
        )
    return FleetConfig(
        parallel=fleet.integer("parallel", 1, 64, "an integer from 1 to 64"),
        batches=_batches(fleet),
        pause=fleet.number("pause", positive=False),
        on_failure=on_failure,
        max_failures=fleet.integer("max_failures", 0, None, "an integer of at least 0"),
    )


_SHARE = re.compile(r"([1-9][0-9]?|100)%")


def _batches(fleet: _Table) -> tuple[Batch, ...]:
    value = fleet.data.get("batches")
    if value is None:
        return tuple(_default(FleetConfig, "batches"))
    expected = 'a list of host counts (at least 1) or shares ("25%"), e.g. [1, "100%"]'
    if not isinstance(value, list) or not value:
        raise fleet.type_error("batches", expected)
    for i, item in enumerate(value):
        ok = (isinstance(item, int) and not isinstance(item, bool) and item >= 1) or (
            isinstance(item, str) and _SHARE.fullmatch(item)
        )
        if not ok:
            raise fleet.fail_at(f"batches[{i}]", f"expected {expected}, found {_found(item)}")
    return tuple(value)


def _load_upload(doc: _Doc, data: Mapping[str, object]) -> UploadConfig:
    upload = _section(doc, data, "upload", UploadConfig)
    delta = upload.boolean("delta") if "delta" in upload.data else _default(UploadConfig, "delta")
    return UploadConfig(delta=bool(delta))


def _profile(table: _Table) -> str:
    name = table.string("profile")
    if name is None:
        return str(_default(table.cls, "profile"))
    if not _PROFILE_NAME.fullmatch(name):
        raise table.type_error(
            "profile",
            f'a portable profile name such as "{profiles.DEFAULT}" or "default" '
            "(letters, digits, - and _)",
        )
    return name


def _url_path(table: _Table, key: str) -> str:
    path = table.string(key)
    if path is None:
        return str(_default(table.cls, key))
    if not _URL_PATH.fullmatch(path):
        raise table.type_error(key, 'a URL path starting with "/", without spaces')
    return path


def dns_name_problem(name: str) -> tuple[str, str] | None:
    """(what is wrong, hint) for a name that is not a DNS host name TLS can check, else None."""
    shape = "the server's name alone, e.g. scoreboard.example.com"
    needs_name = "the certificate is checked against a DNS name: write the one it is for"
    if not name:
        return "is empty", f"write {shape}"
    if not name.isascii():
        return "is not ASCII", "write an internationalised name in its xn-- form (punycode)"
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return "is an IP address", needs_name
    if any(c in name for c in ":/@"):
        return "is not a name alone", f"write {shape}: no scheme, port (that is port =) or path"
    if name.endswith("."):
        return 'ends with "."', "drop the trailing dot"
    if "*" in name:
        return "is a wildcard", f"write the name the app answers to: {shape}"
    if len(name) > 253:
        return "is longer than 253 characters", "a DNS name has at most 253 characters"
    labels = name.split(".")
    bad = next((label for label in labels if not _DNS_LABEL.fullmatch(label)), None)
    if bad == "":
        return "has an empty label", 'a name has no leading dot and no ".." in it'
    if bad is not None:
        return (
            f"has the label {_quote(bad)}",
            'each dot-separated label is 1 to 63 letters, digits and "-", '
            'not starting or ending with "-"',
        )
    if labels[-1].isdigit():
        return "ends in an all-numeric label, like an IP address", needs_name
    return None


def _load_tls(verify: _Table) -> TlsConfig | None:
    value = verify.data.get("tls")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise verify.fail(
            "tls",
            f"expected a table, found {_found(value)}",
            hint=f"write [verify.tls] on a line of its own, followed by {_TLS_NAME_EXAMPLE}",
        )
    tls = _Table(verify.doc, "[verify.tls]", value, _TLS_KEYS, TlsConfig)
    if "name" not in value:
        raise tls.fail(
            "name",
            "required key is missing, expected the DNS name the certificate must be valid for",
        )
    name = tls.required_string("name")
    problem = dns_name_problem(name)
    if problem:
        raise tls.fail(
            "name",
            f"expected a DNS name, found {_found(name)} which {problem[0]}",
            hint=problem[1],
        )
    ca_file = tls.path("ca_file")
    if ca_file is not None:
        if not fs.is_file(ca_file):
            raise tls.fail(
                "ca_file",
                f"expected an existing file, found {_found(value['ca_file'])}, "
                f"and {_shown(ca_file)} is not a file",
                hint="point it at the PEM certificate of the CA that signs the app's certificate, "
                "or remove ca_file to trust the system's CAs",
            )
        try:
            tls_client_context(ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            raise tls.fail(
                "ca_file",
                f"expected PEM CA certificates, found {_found(value['ca_file'])}, "
                f"which Python's ssl cannot load ({_shown(str(reason))})",
                hint="it must hold one or more -----BEGIN CERTIFICATE----- blocks",
            ) from None
    return TlsConfig(
        name=name,
        port=tls.integer("port", 1, 65535, "an integer from 1 to 65535"),
        warn_days=tls.integer("warn_days", 0, None, "a whole number of days of at least 0"),
        ca_file=ca_file,
    )


def _load_verify(doc: _Doc, data: Mapping[str, object]) -> VerifyConfig:
    verify = _section(doc, data, "verify", VerifyConfig)
    port = verify.integer("port", 1, 65535, "an integer from 1 to 65535")
    path = _url_path(verify, "path")
    status = verify.integer("status", 100, 599, "an HTTP status from 100 to 599")
    version_path: str | None = None
    if verify.data.get("version_path") != "":
        version_path = _url_path(verify, "version_path")
    return VerifyConfig(
        port=port,
        path=path,
        status=status,
        version_path=version_path,
        timeout=verify.number("timeout", positive=True),
        settle=verify.number("settle", positive=False),
        tls=_load_tls(verify),
    )


def _env_name(table: _Table, key: str, meaning: str) -> str | None:
    name = table.string(key)
    if name is not None and not _ENV_NAME.fullmatch(name):
        raise table.fail(
            key,
            f'expected {meaning} (letters, digits and "_", not starting with a digit), '
            f"found {_found(name)}",
        )
    return name


def _secret_units(table: _Table, app: str) -> tuple[str, ...]:
    if "units" not in table.data:
        raise table.fail(
            "units",
            "required key is missing, expected an array of the service units that receive it",
        )
    value = table.data["units"]
    if not isinstance(value, list) or not value:
        raise table.type_error("units", "a non-empty array of service unit names")
    for index, unit in enumerate(value):
        if not isinstance(unit, str) or not unit.endswith(".service") or not named_for(unit, app):
            raise table.fail(
                "units",
                f'expected service units named "{app}.service", "{app}-*.service" or '
                f'"{app}@*.service", found {_found(unit)} at index {index}',
                hint="only the app's own services can receive a secret; name them as in the "
                "units directory",
            )
    if len(set(value)) != len(value):
        twice = next(unit for unit in value if value.count(unit) > 1)
        raise table.fail("units", f"expected each unit once, found {_quote(twice)} twice")
    return tuple(value)


def _load_secret(doc: _Doc, name: str, value: object, app: str) -> SecretConfig:
    where = f"[secrets.{_key(name)}]"
    if not _SECRET_NAME.fullmatch(name):
        raise doc.error(
            where,
            'expected a name of 1 to 64 letters, digits, "_", "." and "-", not starting with '
            f'"." or "-", found {_found(name)}',
            hint="the name is the systemd credential name, e.g. [secrets.api-token]",
        )
    if not isinstance(value, dict):
        raise doc.error(
            where,
            f"expected a table, found {_found(value)}",
            hint=f"write [secrets.{name}] on a line of its own, then a source "
            '(env, file or command) and units = ["..."]',
        )
    secret = _Table(doc, where, value, _SECRET_KEYS, SecretConfig)
    given = [key for key in _SECRET_SOURCES if key in value]
    if len(given) != 1:
        found = "none" if not given else " and ".join(given)
        raise doc.error(
            where,
            f"expected exactly one source (env, file or command), found {found}",
            hint=f"for example: {_SECRET_KEYS['file']}, or {_SECRET_KEYS['env']}, "
            f"or {_SECRET_KEYS['command']}",
        )
    command = secret.string("command")
    if command is not None and (not command.strip() or "\0" in command):
        raise secret.type_error("command", "a non-empty shell command line")
    return SecretConfig(
        name=name,
        units=_secret_units(secret, app),
        env=_env_name(secret, "env", "an environment variable name"),
        file=secret.path("file"),
        command=command,
        environment=_env_name(secret, "environment", "an environment variable name"),
    )


def _load_secrets(doc: _Doc, data: Mapping[str, object], app: str) -> dict[str, SecretConfig]:
    value = data.get("secrets", {})
    if not isinstance(value, dict):
        raise doc.error(
            "[secrets]",
            f"expected a table of [secrets.NAME] tables, found {_found(value)}",
            hint=f"write [secrets.api-token] on a line of its own, then {_SECRET_KEYS['file']} "
            f"and {_SECRET_KEYS['units']}",
        )
    secrets = {name: _load_secret(doc, name, item, app) for name, item in sorted(value.items())}
    # Two secrets may not give one unit the same environment variable.
    delivered: dict[tuple[str, str], str] = {}
    for secret in secrets.values():
        for unit in secret.units if secret.environment else ():
            assert secret.environment is not None
            other = delivered.setdefault((unit, secret.environment), secret.name)
            if other != secret.name:
                raise doc.error(
                    f"[secrets.{_key(secret.name)}] environment",
                    f"expected a variable no other secret gives {unit}, found "
                    f"{_quote(secret.environment)}, which [secrets.{_key(other)}] gives it too",
                    hint="give each secret its own variable name",
                )
    return secrets


# --- public API -------------------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read and validate deploy.toml; a ConfigError names file, key path, expected and found."""
    path = Path(path)
    doc = _Doc(file=_shown(path), root=path.absolute().parent)
    data = _read_toml(doc, path)
    _reject_unknown_tables(doc, data)
    app = _load_app(doc, data)
    return Config(
        path=path.absolute(),
        app=app,
        build=_load_build(doc, data),
        image=_load_image(doc, data, app.name),
        sign=_load_sign(doc, data),
        hosts=_load_hosts(doc, data),
        deploy=_load_deploy(doc, data),
        fleet=_load_fleet(doc, data),
        upload=_load_upload(doc, data),
        verify=_load_verify(doc, data),
        secrets=_load_secrets(doc, data, app.name),
    )


def check_sources(cfg: Config) -> None:
    """Every [image] files source exists and is a regular file (run after the build commands)."""
    for dest, source in cfg.image.files.items():
        if fs.is_file(source):
            continue
        state = "is not a regular file" if os.path.exists(source) else "does not exist"
        raise ConfigError(
            f"{_shown(cfg.path)}: [image] files.{_quote(dest)}: expected a regular file, "
            f"found {_shown(source)}, which {state}",
            hint="sources are usually made by the [build] commands; check that they ran and "
            "write this file, or fix the path",
        )


def _run_git(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


def resolve_version(cfg: Config, git: GitRunner | None = None) -> str:
    """The version to build: $DEPLOY_VERSION, else [app] version, with "git" meaning git describe.

    ``git`` runs an argv and returns its stdout, raising CalledProcessError on failure
    (default: subprocess).
    """
    override = os.environ.get(ENV_VERSION, "")
    if override and override != "git":
        problem = version_problem(override)
        if problem:
            raise ConfigError(
                f"environment variable {ENV_VERSION}: expected {_VERSION_EXPECTED}, "
                f"found {_found(override)} which {problem[0]}",
                hint=f"{problem[1]}; or unset {ENV_VERSION} to use [app] version",
            )
        return override
    version = override or cfg.app.version
    if version != "git":
        return version
    source = (
        f"environment variable {ENV_VERSION}" if override else f"{_shown(cfg.path)}: [app] version"
    )
    argv = ["git", "-C", str(cfg.root), *_GIT_DESCRIBE]
    fallback = f"set a literal version in [app] version or in {ENV_VERSION}"
    try:
        output = (git or _run_git)(argv)
    except subprocess.CalledProcessError as exc:
        stderr = exc.stderr or ""
        if isinstance(stderr, bytes):
            stderr = stderr.decode("utf-8", "replace")
        detail = str(stderr).strip().splitlines()
        reason = detail[-1] if detail else f"exit status {exc.returncode}"
        raise ConfigError(
            f'{source} = "git": `{_shown(shlex.join(argv))}` failed: {_shown(reason)}',
            hint=f"{_shown(cfg.root)} must be a git repository with at least one commit; "
            f"or {fallback}",
        ) from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(
            f'{source} = "git": could not run git: {_shown(str(exc))}',
            hint=f"install git, or {fallback}",
        ) from None
    described = re.sub(r"[\s/_]", "-", output.strip())
    problem = version_problem(described)
    if problem:
        raise ConfigError(
            f'{source} = "git": expected {_VERSION_EXPECTED} from git describe, '
            f"found {_found(described)} which {problem[0]}",
            hint=f"tag the commit with a plain version such as v1.4.2, or {fallback}",
        )
    return described
