"""Local build: run the build commands, assemble the image tree, pack it, write the manifest.

The same inputs give the same image bytes, wherever the project lives and whatever the umask:
the tree is assembled with normalised modes, and mksquashfs is told to ignore owners, times
and xattrs (see ``MKSQUASHFS_FLAGS``).
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .config import Compression, Config, version_problem
from .errors import DeployError
from .localenv import tool_env
from .manifest import Manifest
from .units import (
    ATTACHABLE_SUFFIXES,
    UNIT_DIR,
    UnitDirError,
    directives,
    is_attachable,
    overlap_name,
    overlap_twin,
    overlapped_services,
    parse_unit,
    self_bound_warning,
    unit_files,
)

Output = Callable[[str], None]

#: Mount points systemd needs in a read-only portable image.
REQUIRED_DIRS = ("proc", "sys", "dev", "run", "tmp", "var/tmp")
#: Files that portabled bind-mounts over: they must exist, empty.
REQUIRED_EMPTY_FILES = ("etc/resolv.conf", "etc/machine-id")

#: [Service] settings whose directories systemd mounts into the unit's namespace.
EXEC_DIRECTORIES = {
    "StateDirectory": "var/lib",
    "CacheDirectory": "var/cache",
    "LogsDirectory": "var/log",
    "ConfigurationDirectory": "etc",
}
_EXEC_SECTIONS = frozenset({"Service", "Socket", "Mount", "Swap"})

#: Fixed block size: the default, spelled out so a future default cannot change the bytes.
BLOCK_SIZE = "128K"
#: Flags that make mksquashfs output depend only on the tree's names, contents, modes and
#: symlink targets. Thread count does not matter (4.5.1 is -reproducible by default; measured
#: identical output with -processors 1 and 2), so none is forced.
MKSQUASHFS_FLAGS = (
    "-noappend",
    "-all-root",
    "-no-xattrs",
    "-mkfs-time",
    "0",
    "-all-time",
    "0",
    "-root-mode",
    "755",
    "-b",
    BLOCK_SIZE,
)

_DIR_MODE = 0o755
_TMP_MODE = 0o1777
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Artifact:
    """A built release in dist/: the image, its manifest file, and the manifest's content."""

    image: Path
    manifest_path: Path
    manifest: Manifest
    #: What the user should know about the build (a private file made world-readable).
    warnings: tuple[str, ...] = ()


def build(
    cfg: Config, version: str, *, run_commands: bool = True, output: Output | None = None
) -> Artifact:
    """Build commands -> tree -> dist/NAME_VERSION.raw -> dist/NAME_VERSION.manifest.json."""
    name = cfg.app.name
    problem = version_problem(version)
    if problem:
        raise DeployError(
            f"version {version!r} cannot be part of the image name {name}_VERSION.raw: "
            f"it {problem[0]}",
            problem[1],
        )
    # Record the source state before build commands add outputs of their own.
    commit, dirty = git_state(cfg.root, exclude=cfg.image.dist)
    if run_commands:
        run_build_commands(cfg, version, output)

    dist = cfg.image.dist
    dist.mkdir(parents=True, exist_ok=True)
    image = dist / f"{name}_{version}.raw"
    with tempfile.TemporaryDirectory(prefix=f"portable-deploy-{name}-") as tmp:
        tree = Path(tmp) / "root"
        warnings = assemble_tree(cfg, tree)
        pack(tree, image, cfg.image.compression, cfg.image.compression_level)
        files = tree_hashes(tree)
        units = attached_units(tree, name)
        infos = {
            unit: parse_unit(unit, (tree / UNIT_DIR / unit).read_text(errors="replace"))
            for unit in units
        }
        unit_info = {unit: info.to_dict() for unit, info in infos.items()}
    tls = cfg.verify.tls
    self_bound = self_bound_warning(infos, tls.port if tls is not None else cfg.verify.port)
    if self_bound is not None:
        warnings.append(self_bound)

    sha, size = file_sha256(image)
    manifest = Manifest(
        name=name,
        version=version,
        image_sha256=sha,
        image_size=size,
        compression=str(cfg.image.compression),
        compression_level=cfg.image.compression_level,
        git_commit=commit,
        git_dirty=dirty,
        files=files,
        units=units,
        unit_info=unit_info,
    )
    manifest_path = dist / manifest.manifest_name
    # A signature of an earlier build of this version no longer matches: drop it.
    manifest_path.with_name(manifest_path.name + ".sig").unlink(missing_ok=True)
    _write_atomic(manifest_path, manifest.to_json().encode())
    return Artifact(image, manifest_path, manifest, tuple(warnings))


def run_build_commands(cfg: Config, version: str, output: Output | None = None) -> None:
    """Run each ``[build] commands`` line with ``sh -c`` in the project root; stop at a failure."""
    env = tool_env(APP_NAME=cfg.app.name, APP_VERSION=version, DEPLOY_ROOT=str(cfg.root))
    for command in cfg.build.commands:
        tail: collections.deque[str] = collections.deque(maxlen=20)
        try:
            proc = subprocess.Popen(
                ["sh", "-c", command],
                cwd=cfg.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as e:
            raise DeployError(f"cannot run build command {command!r}: {e}") from None
        assert proc.stdout is not None
        with proc:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                tail.append(line)
                if output is not None:
                    output(line)
        if proc.returncode != 0:
            status = (
                f"killed by signal {-proc.returncode}"
                if proc.returncode < 0
                else f"exit {proc.returncode}"
            )
            shown = "\n".join(tail) if tail else "(no output)"
            raise DeployError(
                f"build command failed ({status}): {command}\n"
                f"last {len(tail)} lines of its output:\n{shown}",
                f"run it by hand in {cfg.root} to see everything, then fix it "
                "or the [build] commands in deploy.toml",
            )


def assemble_tree(cfg: Config, dest: Path) -> list[str]:
    """Lay out the image root in ``dest``: skeleton, units, [image] files, portable essentials.

    Returns warnings: files private on this machine that every user of the host can read in
    the image (images in /var/lib/portables are world-readable).
    """
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, _DIR_MODE)
    private: list[Path] = []

    if cfg.image.tree is not None:
        if not cfg.image.tree.is_dir():
            raise DeployError(
                f"[image] tree: {cfg.image.tree} is not a directory",
                "create it, or remove the key to build without a skeleton",
            )
        _copy_tree(cfg.image.tree, dest, private)

    unit_dir = _mkdirs(dest, UNIT_DIR)
    linked = sorted(p.name for p in unit_dir.iterdir() if p.is_symlink())
    if linked:
        # A symlink would be read on this machine (its target here), not in the image.
        raise DeployError(
            f"[image] tree: {UNIT_DIR}/{linked[0]} is a symlink; unit files must be files",
            "put unit files in [image] units (they are copied into the image as files)",
        )
    for unit in _unit_sources(cfg):
        _copy_entry(unit, unit_dir / unit.name, private, follow=True)
    if cfg.deploy.overlap:
        _add_overlap_twins(unit_dir, cfg.app.name)

    for target, source in sorted(cfg.image.files.items()):
        key = f'[image] files."{target}"'
        rel = _image_path(target, key)
        if not source.exists():
            raise DeployError(
                f"{key}: source {source} not found",
                "the [build] commands should make it (invoke build runs them); or fix the path",
            )
        out = dest / rel
        if out.is_dir() and not out.is_symlink() and not source.is_dir():
            raise DeployError(f"{key}: {rel} is a directory in the image tree")
        _mkdirs(dest, str(rel.parent))
        # An entry names a build output; a symlinked output still means its content.
        _copy_entry(source, out, private, follow=True)

    _add_portable_essentials(dest, cfg.app.name)
    for unit in _packed_units(dest):
        text = unit.read_text(errors="replace")
        for mount_point in unit_mount_points(text, unit.name):
            _mkdirs(dest, mount_point)
        for point in bind_mount_points(text, unit.name):
            # A file bind needs a file here: the tree provides it; a missing point is a directory.
            if not (dest / point).exists() and not (dest / point).is_symlink():
                _mkdirs(dest, point)
    if not private:
        return []
    shown = ", ".join(str(p) for p in private[:3]) + (", ..." if len(private) > 3 else "")
    return [
        f"{len(private)} file(s) readable only by their owner here are readable by every user "
        f"of the host in the image ({shown}): keep secrets out of images"
    ]


def _add_overlap_twins(unit_dir: Path, app: str) -> None:
    """[deploy] overlap: a twin unit next to each socket-activated service (units.overlap_twin)."""
    texts = {p.name: p.read_text(errors="replace") for p in sorted(unit_dir.iterdir())}
    infos = {name: parse_unit(name, text) for name, text in texts.items()}
    services = overlapped_services(infos)
    if not services:
        raise DeployError(
            "[deploy] overlap = true, but no service of the image is started by a .socket: an "
            "overlapped switch runs the new release beside the old one on the sockets systemd holds",
            f"add a {app}-http.socket with Service={app}.service, or set overlap = false",
        )
    for service in services:
        twin = overlap_name(service)
        if twin in texts:
            raise DeployError(
                f"[deploy] overlap = true: the units already hold {twin}, the name of "
                f"{service}'s overlap twin, which the build writes",
                f"rename {twin}, or set overlap = false",
            )
        path = unit_dir / twin
        path.write_text(overlap_twin(service, texts[service]))
        os.chmod(path, 0o644)


def unit_mount_points(unit_text: str, unit_name: str | None = None) -> list[str]:
    """Image directories a unit's State/Cache/Logs/ConfigurationDirectory= settings mount onto.

    systemd semantics: values are space-separated lists, settings accumulate, an empty
    assignment resets the list, and in ``A:B`` only ``A`` is a directory (``B`` is a symlink).
    With ``unit_name``, the specifiers %n %N %p are resolved; %i and friends cannot be.
    """
    source = unit_name or "unit"
    specifiers = _specifiers(unit_name)
    lists: dict[str, list[str]] = {key: [] for key in EXEC_DIRECTORIES}
    for section, key, value in directives(unit_text):
        if section not in _EXEC_SECTIONS or key not in lists:
            continue
        if not value:
            lists[key].clear()
            continue
        words = _words(value, key, source)
        for word in words:
            name = _resolve(word.partition(":")[0], specifiers, f"{source}: {key}={word}")
            lists[key].append(_directory_name(name, key, source))

    points: list[str] = []
    for key, base in EXEC_DIRECTORIES.items():
        for name in lists[key]:
            point = f"{base}/{name}"
            if point not in points:
                points.append(point)
    return points


#: [Service] settings that bind host paths into the unit's (read-only) root.
BIND_SETTINGS = frozenset({"BindPaths", "BindReadOnlyPaths"})


def bind_mount_points(unit_text: str, unit_name: str | None = None) -> list[str]:
    """Image paths that a unit's BindPaths=/BindReadOnlyPaths= mount host paths onto.

    A read-only image cannot grow a mount point at run time, so the build makes each one. Each
    word is ``[-]SOURCE[:DEST[:OPTIONS]]``; the mount point is DEST, or SOURCE when there is none.
    """
    source = unit_name or "unit"
    specifiers = _specifiers(unit_name)
    points: list[str] = []
    for section, key, value in directives(unit_text):
        if section not in _EXEC_SECTIONS or key not in BIND_SETTINGS or not value:
            continue
        words = _words(value, key, source)
        for word in words:
            parts = word.lstrip("-+").split(":")
            dest = parts[1] if len(parts) > 1 and parts[1] else parts[0]
            path = PurePosixPath(_resolve(dest, specifiers, f"{source}: {key}={word}"))
            if not path.is_absolute() or ".." in path.parts:
                raise DeployError(
                    f"{source}: {key}={word}: the mount point {path} is not an absolute path",
                    f"write it like {key}=/etc/ssl/certs",
                )
            point = path.relative_to("/").as_posix()
            if point not in (".", *points):
                points.append(point)
    return points


def pack(tree: Path, out: Path, compression: Compression | str, level: int | None = None) -> None:
    """mksquashfs ``tree`` into ``out`` reproducibly; ``out`` appears only when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    argv = mksquashfs_argv(tree, tmp, compression, level)
    # mksquashfs refuses SOURCE_DATE_EPOCH next to -mkfs-time/-all-time, which pin times anyway.
    env = tool_env({k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"})
    try:
        try:
            proc = subprocess.run(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
            )
        except FileNotFoundError:
            raise DeployError(
                "mksquashfs not found", "install it: apt-get install squashfs-tools"
            ) from None
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.decode(errors="replace").splitlines()[-20:])
            raise DeployError(
                f"mksquashfs failed (exit {proc.returncode}): {shlex.join(argv)}\n{tail}",
                "run the command above by hand to see the whole story",
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def mksquashfs_argv(
    tree: Path, out: Path, compression: Compression | str, level: int | None = None
) -> list[str]:
    """The exact mksquashfs command line ``pack`` runs (LEVEL: ``-Xcompression-level``)."""
    return [
        "mksquashfs",
        str(tree),
        str(out),
        *MKSQUASHFS_FLAGS,
        "-comp",
        str(compression),
        *(["-Xcompression-level", str(level)] if level is not None else []),
        "-quiet",
        "-no-progress",
    ]


def tree_hashes(tree: Path) -> dict[str, str]:
    """Every file and symlink under ``tree``: relative POSIX path -> "sha256:.." / "symlink:.."."""
    hashes: dict[str, str] = {}
    for path in _walk(tree):
        rel = path.relative_to(tree).as_posix()
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            hashes[rel] = f"symlink:{os.readlink(path)}"
        elif stat.S_ISREG(mode):
            hashes[rel] = f"sha256:{file_sha256(path)[0]}"
        elif not stat.S_ISDIR(mode):
            raise DeployError(f"{path}: only files, directories and symlinks can go in an image")
    return hashes


def attached_units(tree: Path, name: str) -> tuple[str, ...]:
    """Unit files in the image that ``portablectl attach NAME_VERSION`` copies to the host."""
    unit_dir = tree / UNIT_DIR
    if not unit_dir.is_dir():
        return ()
    return tuple(
        sorted(
            p.name
            for p in unit_dir.iterdir()
            if is_attachable(p.name, name) and (p.is_symlink() or p.is_file())
        )
    )


def git_state(root: Path, exclude: Path | None = None) -> tuple[str | None, bool]:
    """(commit, dirty) of the git work tree at ``root``; (None, False) outside a repository."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None, False
    if head.returncode != 0:
        return None, False
    pathspec = [":/"]
    if exclude is not None and exclude.is_relative_to(root) and exclude != root:
        pathspec.append(f":(exclude){exclude.relative_to(root).as_posix()}")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", *pathspec],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    return head.stdout.strip(), status.returncode != 0 or bool(status.stdout.strip())


# --- tree assembly -----------------------------------------------------------------------------


def _unit_sources(cfg: Config) -> list[Path]:
    # load_config checked this directory already; the same rule runs again because it may
    # have changed since (a build command, or a Config made without deploy.toml).
    try:
        return unit_files(cfg.image.units, cfg.app.name)
    except UnitDirError as e:
        raise DeployError(f"[image] units: {e.message}", e.hint) from None


def _image_path(target: str, key: str) -> PurePosixPath:
    rel = PurePosixPath(target)
    if target != rel.as_posix() or rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DeployError(
            f"{key}: {target!r} is not a plain relative path inside the image",
            'write it like "usr/bin/app" (no leading /, no .., no //)',
        )
    return rel


def _copy_tree(src: Path, dest: Path, private: list[Path]) -> None:
    for child in sorted(src.iterdir()):
        _copy_entry(child, dest / child.name, private, follow=False)


def _copy_entry(src: Path, dst: Path, private: list[Path], *, follow: bool) -> None:
    """Copy ``src`` (a directory with all it holds) with normalised modes, no owners or times.

    ``follow`` resolves ``src`` itself if it is a symlink; symlinks below it are kept as symlinks.
    """
    st = src.stat() if follow else src.lstat()
    is_dir = stat.S_ISDIR(st.st_mode)
    if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
        dst.unlink()
    elif dst.is_dir() and not is_dir:
        raise DeployError(f"{src}: would replace the directory {dst.name} in the image tree")
    if is_dir:
        dst.mkdir(exist_ok=True)
        os.chmod(dst, _DIR_MODE)
        _copy_tree(src, dst, private)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o755 if st.st_mode & 0o111 else 0o644)
        if not st.st_mode & 0o044:  # readable by its owner only
            private.append(src)
    else:
        raise DeployError(f"{src}: only files, directories and symlinks can go in an image")


def _add_portable_essentials(dest: Path, app_name: str) -> None:
    if not any(_lexists(dest / p) for p in ("usr/lib/os-release", "etc/os-release")):
        os_release = _mkdirs(dest, "usr/lib") / "os-release"
        os_release.write_text(f"ID=portable\nNAME={app_name}\nPORTABLE_PRETTY_NAME={app_name}\n")
        os.chmod(os_release, 0o644)
    for rel in REQUIRED_EMPTY_FILES:
        path = dest / rel
        if not _lexists(path):
            _mkdirs(dest, str(PurePosixPath(rel).parent))
            path.touch()
            os.chmod(path, 0o644)
    for rel in REQUIRED_DIRS:
        _mkdirs(dest, rel, mode=_TMP_MODE if rel in ("tmp", "var/tmp") else _DIR_MODE)


def _packed_units(dest: Path) -> list[Path]:
    unit_dir = dest / UNIT_DIR
    return [
        p
        for p in sorted(unit_dir.iterdir())
        if not p.is_symlink() and p.is_file() and p.name.endswith(ATTACHABLE_SUFFIXES)
    ]


def _mkdirs(root: Path, rel: str, mode: int = _DIR_MODE) -> Path:
    """mkdir -p inside ``root`` with fixed modes, independent of the umask."""
    path = root
    parts = PurePosixPath(rel).parts
    for i, part in enumerate(parts):
        path = path / part
        if path.is_symlink():
            raise DeployError(f"{path.relative_to(root)}: is a symlink where a directory is needed")
        if _lexists(path) and not path.is_dir():
            raise DeployError(f"{path.relative_to(root)}: is a file where a directory is needed")
        if not path.is_dir():
            path.mkdir()
            os.chmod(path, mode if i == len(parts) - 1 else _DIR_MODE)
        elif i == len(parts) - 1 and mode != _DIR_MODE:
            os.chmod(path, mode)
    return path


def _lexists(path: Path) -> bool:
    return path.is_symlink() or path.exists()


def _walk(top: Path) -> Iterable[Path]:
    """Every entry below ``top`` in sorted order, not following symlinks."""
    for entry in sorted(os.scandir(top), key=lambda e: e.name):
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)


# --- unit settings -----------------------------------------------------------------------------


def _words(value: str, key: str, source: str) -> list[str]:
    """A unit setting's space-separated, shell-quoted words."""
    try:
        return shlex.split(value)
    except ValueError as e:
        raise DeployError(f"{source}: cannot parse {key}={value}: {e}") from None


def _specifiers(unit_name: str | None) -> dict[str, str]:
    known = {"%": "%"}
    if unit_name is None or "." not in unit_name:
        return known
    stem = unit_name.rsplit(".", 1)[0]
    if "@" in stem:
        # A template: the instance, and so the full name, is only known at run time.
        return {**known, "p": stem.split("@", 1)[0]}
    return {**known, "n": unit_name, "N": stem, "p": stem}


def _resolve(word: str, specifiers: dict[str, str], where: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1) not in specifiers:
            raise DeployError(
                f"{where}: specifier %{m.group(1)} cannot be resolved when the image is built",
                "spell the directory name out in the unit",
            )
        return specifiers[m.group(1)]

    return re.sub(r"%(.?)", one, word)


def _directory_name(word: str, key: str, source: str) -> str:
    rel = PurePosixPath(word)
    if not word or rel.is_absolute() or ".." in rel.parts or rel.as_posix() == ".":
        raise DeployError(
            f"{source}: {key}={word} is not a relative directory name",
            f"write it like {key}=myapp (systemd puts it under /{EXEC_DIRECTORIES[key]}/)",
        )
    return rel.as_posix()


# --- files -------------------------------------------------------------------------------------


def file_sha256(path: Path) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
