"""Secrets on a host: encrypted with the host's own key (``systemd-creds``), one directory per
secret set, and the unit drop-ins that hand them to the units. Values only ever travel on a
command's standard input (``Command.stdin``), never in a command line."""

from __future__ import annotations

from collections.abc import Mapping

from ..command import Command, Secret, builder, sh_args

_ENCRYPT = (
    'umask 077; mkdir -p "$1" && systemd-creds encrypt --name="$2" - "$1/$2.cred.tmp" && '
    'mv -f "$1/$2.cred.tmp" "$1/$2.cred"'
)


@builder
def encrypt(directory: str, name: str, value: Secret) -> Command:
    """Encrypt VALUE (read from stdin) as credential NAME into DIRECTORY/NAME.cred, root-only.

    ``--name=NAME`` is embedded in the ciphertext: the file decrypts only as credential NAME.
    """
    return Command(sh_args(_ENCRYPT, directory, name).tokens, mutates=True, stdin=value)


@builder
def write_private(path: str, content: Secret) -> Command:
    """Write CONTENT (read from stdin) to PATH, mode 0600, atomically."""
    script = 'umask 077; cat > "$1.tmp" && mv -f "$1.tmp" "$1"'
    return Command(sh_args(script, path).tokens, mutates=True, stdin=content)


@builder
def seal_set(incoming: str, final: str, description: str) -> Command:
    """Write the set's description and move the finished set into place (atomic rename); an
    identical set already there wins and the new copy is dropped."""
    script = (
        'umask 077; printf "%s\\n" "$3" > "$1/set.json" && '
        'if [ -d "$2" ]; then rm -rf "$1"; else mv "$1" "$2"; fi'
    )
    return sh_args(script, incoming, final, description, mutates=True)


@builder
def new_salt(path: str, salt: str) -> Command:
    """Create the host's digest salt once (root-only); an existing one is kept."""
    script = 'umask 077; [ -s "$1" ] || printf "%s" "$2" > "$1"'
    return sh_args(script, path, salt, mutates=True)


@builder
def apply_dropins(wanted: Mapping[str, tuple[str, str | None]]) -> Command:
    """Write (text) or remove (None) each unit's secrets drop-in: unit -> (path, text)."""
    args: list[str] = []
    for path, text in wanted.values():
        args += [path, "" if text is None else text, "write" if text is not None else "remove"]
    script = (
        "while [ $# -gt 0 ]; do "
        'if [ "$3" = write ]; then mkdir -p "$(dirname "$1")" && '
        'printf "%s" "$2" > "$1.tmp" && chmod 0644 "$1.tmp" && mv -f "$1.tmp" "$1" || exit 1; '
        'else rm -f "$1"; fi; shift 3; done'
    )
    return sh_args(script, *args, mutates=True)


@builder
def remove_sets(*directories: str) -> Command:
    return Command(("rm", "-rf", "--", *directories), mutates=True)
