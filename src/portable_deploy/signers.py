"""The trust root's text: the keys of an ``allowed_signers`` file, and rotating them (pure).

A host trusts a release when its manifest is signed by a key on a line of the app's
allowed_signers file. Rotation (``host.setup --add-key`` / ``--remove-key``) never writes a file
without a key: the new key is added while the old one is still there, and the last key is never
removed. Keys are compared by their type and blob, never by principal or comment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DeployError

#: An allowed_signers line: principals, optional options (quoted values may hold spaces), the
#: key type, its base64 blob, an optional comment.
_TOKEN = re.compile(r'(?:[^\s"]|"[^"]*")+')
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_KEY_TYPE = re.compile(r"(?:sk-)?(?:ssh|ecdsa)-[A-Za-z0-9@.-]+")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


@dataclass(frozen=True)
class Key:
    """A public key: its type (``ssh-ed25519``) and base64 blob."""

    type: str
    blob: str

    @property
    def fingerprint(self) -> str:
        """As ``ssh-keygen -l`` prints it: ``SHA256:`` and unpadded base64 of the blob's hash."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _key(key_type: str, blob: str) -> Key | None:
    """KEY_TYPE and BLOB if BLOB is base64 of a key that names KEY_TYPE (its first field)."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    size = int.from_bytes(raw[:4], "big")
    return Key(key_type, blob) if raw[4 : 4 + size] == key_type.encode() else None


def key_of(line: str) -> Key | None:
    """The key on an allowed_signers LINE (None for a blank line or a comment)."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    tokens = _TOKEN.findall(line)
    # tokens[0] is the principals; the key type comes after them and any options. The blob is
    # not parsed: a line the host has is compared as it is, whatever ssh-keygen makes of it.
    for i in range(1, len(tokens) - 1):
        if _KEY_TYPE.fullmatch(tokens[i]) and _BASE64.fullmatch(tokens[i + 1]):
            return Key(tokens[i], tokens[i + 1])
    return None


def keys(text: str) -> list[Key]:
    """Every key of an allowed_signers text, in file order."""
    return [k for k in map(key_of, text.splitlines()) if k is not None]


def line(principal: str, namespace: str, key: Key) -> str:
    """The line that trusts KEY for PRINCIPAL, for signatures in NAMESPACE only."""
    return f'{principal} namespaces="{namespace}" {key.type} {key.blob}'


def public_key(path: Path, flag: str) -> Key:
    """The key of a public key file PATH (or, for a private key, of PATH.pub next to it)."""
    candidates = [path] if path.name.endswith(".pub") else [path, Path(f"{path}.pub")]
    for candidate in candidates:
        try:
            fields = candidate.read_text().split()
        except (OSError, UnicodeDecodeError):
            continue
        key = _key(fields[0], fields[1]) if len(fields) >= 2 else None
        if key is not None:
            return key
    raise DeployError(
        f"{flag} {path}: not an SSH public key file (nor a private key with its .pub next to it)",
        hint="give the .pub file, e.g. one made with `ssh-keygen -t ed25519 -N '' -f KEY`",
    )


def fingerprint(ref: str, flag: str) -> str:
    """What ``--remove-key`` names: a fingerprint (``SHA256:...``) or a key file's key."""
    if _FINGERPRINT.fullmatch(ref):
        return ref
    path = Path(ref).expanduser()
    if not path.exists():
        raise DeployError(
            f"{flag} {ref}: neither a key fingerprint nor a file",
            hint="give the key's .pub file or its fingerprint as `ssh-keygen -lf KEY.pub` "
            "prints it (SHA256:...)",
        )
    return public_key(path, flag).fingerprint


@dataclass(frozen=True)
class Change:
    """What host.setup makes a host trust."""

    #: The whole file for a host that has none (what deploy.toml's [sign] says).
    base: str
    #: Lines appended when the host does not trust their key yet: deploy.toml's, then --add-key's.
    lines: tuple[str, ...] = ()
    #: Fingerprints of keys whose lines are dropped (--remove-key).
    remove: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Rotation:
    """A host's allowed_signers text before and after a ``Change``."""

    before: str
    after: str
    added: tuple[Key, ...]
    removed: tuple[Key, ...]
    #: Fingerprints asked to be removed that the host did not trust.
    absent: tuple[str, ...]


def rotate(current: str, change: Change) -> Rotation:
    """CURRENT with CHANGE applied: missing lines appended (a key the host trusts for another
    principal, or with other options, too), removed keys' lines dropped, every other line
    (comments, other principals' keys) kept as it is.

    A host with no file (or an empty one) starts from ``change.base``.
    """
    start = current if current.strip() else change.base
    kept: list[str] = []
    removed: list[Key] = []
    for text in start.splitlines():
        key = key_of(text)
        if key is not None and key.fingerprint in change.remove:
            removed.append(key)
        else:
            kept.append(text)
    # A configured line is there when the same line is (principal, options and key): the same
    # key trusted for another principal would still refuse this one's signatures.
    present = {" ".join(t.split()) for t in kept}
    added: list[Key] = []
    for text in change.lines:
        key = key_of(text)
        line = " ".join(text.split())
        if key is None or line in present or key.fingerprint in change.remove:
            continue
        kept.append(text)
        present.add(line)
        added.append(key)
    # Untouched lines stay byte for byte (a file without a final newline included).
    after = start if not (added or removed) else "".join(f"{t}\n" for t in kept)
    gone = {k.fingerprint for k in removed}
    absent = tuple(sorted(f for f in change.remove if f not in gone))
    return Rotation(current, after, tuple(added), tuple(removed), absent)
