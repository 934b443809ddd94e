"""Secret values, read on the deploying machine from the sources [secrets.NAME] names.

Local only: nothing here touches a host. A value lives in a ``Secret`` (shown as ``***``) and
never in a message: errors say which source failed and why, not what it held.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from .command import Secret, mask_text
from .config import Config, SecretConfig
from .errors import DeployError

#: Largest value accepted, in bytes (systemd takes more; a token or a key is far smaller).
MAX_BYTES = 64 * 1024
#: Seconds a source command may run (a password manager may ask for a passphrase first).
COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True)
class SecretValue:
    """One resolved secret: its value, who receives it, and a digest that can be shown."""

    name: str
    value: Secret
    units: tuple[str, ...]
    #: Delivered as this environment variable (None: as a credential file).
    environment: str | None
    #: hmac-sha256(salt, NAME \\0 VALUE): compares releases without revealing the value.
    digest: str


class SecretSourceError(DeployError):
    """A secret's source gave no usable value; the message never holds the value."""


def digest(name: str, value: str, salt: bytes) -> str:
    """The keyed digest of a secret: equal values under one salt give equal digests.

    Keyed so that a digest seen on a host or in output cannot be checked against guesses
    without the salt.
    """
    return hmac.new(salt, f"{name}\0{value}".encode(), hashlib.sha256).hexdigest()


def resolve(cfg: Config, salt: bytes, *, timeout: float = COMMAND_TIMEOUT) -> list[SecretValue]:
    """Read every secret of CFG, in name order; a SecretSourceError at the first that fails."""
    values = []
    for name in sorted(cfg.secrets):
        secret = cfg.secrets[name]
        value = read_source(cfg, secret, timeout=timeout)
        values.append(
            SecretValue(
                name=name,
                value=Secret(value),
                units=secret.units,
                environment=secret.environment,
                digest=digest(name, value, salt),
            )
        )
    return values


def check_sources(cfg: Config, *, timeout: float = COMMAND_TIMEOUT) -> None:
    """Every source gives a value now: the "missing source" failure before any host is touched."""
    resolve(cfg, b"check", timeout=timeout)


def problem(cfg: Config, secret: SecretConfig, *, timeout: float = COMMAND_TIMEOUT) -> str | None:
    """Why SECRET's source gives no value right now (one line with its hint, without the
    "secret NAME: " that starts the error), or None."""
    try:
        read_source(cfg, secret, timeout=timeout)
    except SecretSourceError as exc:
        return str(exc).removeprefix(f"secret {secret.name}: ")
    return None


def mask(text: str, values: Iterable[SecretValue]) -> str:
    """TEXT with every secret value (and every line of a multi-line one) shown as ``***``."""
    return mask_text(text, (v.value.value for v in values))


# --- reading one source ----------------------------------------------------------------------


def read_source(cfg: Config, secret: SecretConfig, *, timeout: float = COMMAND_TIMEOUT) -> str:
    """The value SECRET's source gives now, checked (UTF-8, no NUL, not empty, at most 64 KiB)."""
    if secret.env is not None:
        return _from_env(secret, secret.env)
    if secret.file is not None:
        return _from_file(secret, secret.file)
    if secret.command is not None:
        return _from_command(cfg, secret, secret.command, timeout)
    raise SecretSourceError(
        f"secret {secret.name}: no source", hint=_change(secret, "env, file or command")
    )


def _change(secret: SecretConfig, key: str) -> str:
    return f"[secrets.{secret.name}] {key}"


def _fail(secret: SecretConfig, text: str, hint: str) -> SecretSourceError:
    return SecretSourceError(f"secret {secret.name}: {text}", hint=hint)


def _checked(secret: SecretConfig, what: str, raw: bytes | str, key: str) -> str:
    """RAW as the value: decoded, and refused (without showing it) when it cannot be one."""
    hint = f"fix what {what} holds, or change {_change(secret, key)}"
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    if not data:
        return ""
    if len(data) > MAX_BYTES:
        raise _fail(secret, f"{what} gives more than {MAX_BYTES // 1024} KiB", hint)
    if b"\0" in data:
        raise _fail(secret, f"{what} gives a value with a NUL byte", hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(
            secret, f"{what} gives a value that is not UTF-8 (invalid byte at {exc.start})", hint
        ) from None


def _from_env(secret: SecretConfig, variable: str) -> str:
    raw = os.environ.get(variable)
    hint = f"export it, or change {_change(secret, 'env')}"
    if raw is None:
        raise _fail(secret, f"environment variable {variable} is not set", hint)
    value = _checked(secret, f"environment variable {variable}", raw, "env")
    if not value:
        raise _fail(secret, f"environment variable {variable} is empty", hint)
    return value


def _from_file(secret: SecretConfig, path: os.PathLike[str]) -> str:
    shown = os.fspath(path)
    change = _change(secret, "file")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise _fail(
            secret,
            f"file {shown} does not exist",
            f"write the value to it (chmod 600), or change {change}",
        ) from None
    except OSError as exc:
        raise _fail(
            secret,
            f"cannot read file {shown}: {exc.strerror}",
            f"check the path and its permissions, or change {change}",
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise _fail(secret, f"{shown} is not a regular file", f"point {change} at a file")
    if info.st_mode & 0o077:
        raise _fail(
            secret,
            f"file {shown} is accessible to others (mode {stat.S_IMODE(info.st_mode):04o})",
            f"chmod 600 {shown}: a secret file is readable by its owner only",
        )
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_BYTES + 2)  # the newline dropped, one byte too many is enough
    except OSError as exc:
        raise _fail(
            secret,
            f"cannot read file {shown}: {exc.strerror}",
            f"check its permissions, or change {change}",
        ) from None
    value = _checked(secret, f"file {shown}", _one_newline_less(raw), "file")
    if not value:
        raise _fail(secret, f"file {shown} is empty", f"write the value to it, or change {change}")
    return value


def _from_command(cfg: Config, secret: SecretConfig, command: str, timeout: float) -> str:
    what = secret.source
    change = _change(secret, "command")
    try:
        # stdin is not the terminal's: a tool that asks for a passphrase does so on /dev/tty
        # (pinentry, op), and one that would wait on stdin fails at once instead of hanging.
        done = subprocess.run(
            ["sh", "-c", command],
            cwd=cfg.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _fail(
            secret,
            f"{what} did not finish within {timeout:g}s",
            f"run it by hand to see what it waits for, or change {change}",
        ) from None
    except OSError as exc:
        raise _fail(
            secret,
            f"cannot run {what}: {exc.strerror}",
            f"check that sh exists, or change {change}",
        ) from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = f": {_one_line(lines[0])}" if lines else ""
        raise _fail(
            secret,
            f"{what} failed (exit {done.returncode}){reason}",
            f"run it by hand to see why, or change {change}",
        )
    value = _checked(secret, what, _one_newline_less(done.stdout), "command")
    if not value:
        raise _fail(
            secret, f"{what} printed nothing", f"make it print the value, or change {change}"
        )
    return value


def _one_newline_less(raw: bytes) -> bytes:
    """RAW without one trailing newline (``pass`` and editors add one); all else is the value."""
    return raw[:-1] if raw.endswith(b"\n") else raw


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)[:200]
