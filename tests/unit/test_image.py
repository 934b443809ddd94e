from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from portable_deploy.config import Config
from portable_deploy.errors import DeployError
from portable_deploy.image import (
    assemble_tree,
    build,
    mksquashfs_argv,
    pack,
    run_build_commands,
    tree_hashes,
    unit_mount_points,
)
from portable_deploy.manifest import Manifest, changed_paths

Listing = Callable[[Path], dict[str, Any]]


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test changed it."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _with_files(cfg: Config, **changes: Path) -> Config:
    files = {**cfg.image.files, **{k.replace("__", "/"): v for k, v in changes.items()}}
    return dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, files=files))


# --- build -------------------------------------------------------------------------------------


def test_build_writes_image_and_manifest_named_after_the_release(demo_project: Config) -> None:
    """build() leaves dist/NAME_VERSION.raw and dist/NAME_VERSION.manifest.json, nothing else."""
    artifact = build(demo_project, "1.0")
    dist = demo_project.image.dist
    assert artifact.image == dist / "demo_1.0.raw"
    assert artifact.manifest_path == dist / "demo_1.0.manifest.json"
    assert sorted(p.name for p in dist.iterdir()) == ["demo_1.0.manifest.json", "demo_1.0.raw"]
    assert Manifest.from_json(artifact.manifest_path.read_text(), "m") == artifact.manifest


def test_the_manifest_records_the_compression_level_the_image_was_packed_at(
    demo_project: Config,
) -> None:
    """[image] compression_level is a build input: the manifest names it beside the compressor."""
    cfg = dataclasses.replace(
        demo_project, image=dataclasses.replace(demo_project.image, compression_level=3)
    )
    assert build(cfg, "1.0").manifest.compression_level == 3
    assert build(demo_project, "1.1").manifest.compression_level is None


def test_image_holds_units_files_and_portable_mount_points(
    demo_project: Config, squashfs_listing: Listing
) -> None:
    """The image has the units, files, skeleton, os-release, empty etc files and mount points."""
    image = build(demo_project, "1.0").image
    listing = squashfs_listing(image)
    for path in ("usr/lib/systemd/system/demo.service", "usr/lib/systemd/system/demo-http.socket"):
        assert listing[path].mode == "-rw-r--r--"
    assert sorted(p for p in listing if p.startswith("usr/lib/systemd/system/")) == [
        "usr/lib/systemd/system/demo-http.socket",
        "usr/lib/systemd/system/demo.service",
    ]
    assert listing["usr/bin/demo"].mode == "-rwxr-xr-x"
    assert listing["usr/share/demo/data.txt"].mode == "-rw-r--r--"
    assert listing["usr/share/demo/run.sh"].mode == "-rwxr-xr-x"
    assert listing["etc/demo-link.conf"].target == "demo.conf"
    assert listing["usr/lib/os-release"].size > 0
    assert listing["etc/resolv.conf"].size == 0
    assert listing["etc/machine-id"].size == 0
    for d in ("proc", "sys", "dev", "run", "tmp", "var/tmp"):
        assert listing[d].mode.startswith("d"), d
    for d in ("var/lib/demo", "var/lib/demo-replica", "var/cache/demo", "var/log/demo", "etc/demo"):
        assert listing[d].mode == "drwxr-xr-x", d
    assert listing[""].mode == "drwxr-xr-x"
    assert {e.owner for e in listing.values()} == {"root/root"}
    assert {e.time for e in listing.values()} == {"1970-01-01 00:00"}
    # The superblock's mkfs_time (a little-endian u32 at offset 8) is pinned too.
    assert image.read_bytes()[8:12] == b"\0\0\0\0"


def _overlapping(cfg: Config) -> Config:
    return dataclasses.replace(cfg, deploy=dataclasses.replace(cfg.deploy, overlap=True))


def test_overlap_adds_a_twin_of_the_socket_activated_service(
    demo_project: Config, squashfs_listing: Listing
) -> None:
    """[deploy] overlap: the image holds demo-overlap.service, the twin of the service the
    socket starts, and the manifest knows it as that service's twin."""
    artifact = build(_overlapping(demo_project), "1.0")
    listing = squashfs_listing(artifact.image)
    assert listing["usr/lib/systemd/system/demo-overlap.service"].mode == "-rw-r--r--"
    info = artifact.manifest.unit_info["demo-overlap.service"]
    assert (info["kind"], info["overlap_of"]) == ("overlap", "demo.service")
    assert "overlap_of" not in artifact.manifest.unit_info["demo.service"]


def test_overlap_needs_a_socket_activated_service(demo_project: Config) -> None:
    (demo_project.image.units / "demo-http.socket").unlink()
    with pytest.raises(
        DeployError, match=r"overlap = true, but no service .* started by a \.socket"
    ):
        build(_overlapping(demo_project), "1.0")


def test_overlap_refuses_a_unit_with_the_twins_name(demo_project: Config) -> None:
    (demo_project.image.units / "demo-overlap.service").write_text("[Service]\nExecStart=/x\n")
    with pytest.raises(DeployError, match=r"already hold demo-overlap\.service"):
        build(_overlapping(demo_project), "1.0")


def test_manifest_files_match_the_extracted_image(demo_project: Config, tmp_path: Path) -> None:
    """Every file and symlink hash in the manifest is what unsquashfs extracts, and the binary runs."""
    artifact = build(demo_project, "1.0")
    out = tmp_path / "extracted"
    subprocess.run(
        ["unsquashfs", "-no-xattrs", "-d", str(out), str(artifact.image)],
        check=True,
        capture_output=True,
    )
    assert dict(artifact.manifest.files) == tree_hashes(out)
    assert artifact.manifest.units == ("demo-http.socket", "demo.service")
    assert artifact.manifest.unit_info["demo-http.socket"]["activates"] == "demo.service"
    run = subprocess.run([str(out / "usr/bin/demo")], capture_output=True, text=True, check=True)
    assert run.stdout == "v1\n"


def test_os_release_defaults_to_the_app_name(demo_project: Config, tmp_path: Path) -> None:
    """Without an os-release in the skeleton, usr/lib/os-release names the app."""
    assemble_tree(demo_project, tmp_path / "root")
    assert (tmp_path / "root/usr/lib/os-release").read_text() == (
        "ID=portable\nNAME=demo\nPORTABLE_PRETTY_NAME=demo\n"
    )


def test_skeleton_os_release_is_kept(demo_project: Config, tmp_path: Path) -> None:
    """An etc/os-release in the skeleton is used as is, and none is added in usr/lib."""
    assert demo_project.image.tree is not None
    (demo_project.image.tree / "etc/os-release").write_text("ID=debian\n")
    assemble_tree(demo_project, tmp_path / "root")
    assert (tmp_path / "root/etc/os-release").read_text() == "ID=debian\n"
    assert not (tmp_path / "root/usr/lib/os-release").exists()


def test_assembly_normalises_modes_whatever_the_umask(
    demo_project: Config, tmp_path: Path, umask: None
) -> None:
    """Directories become 0755, files 0755 or 0644 by their exec bit, under umask 077 too."""
    assert demo_project.image.tree is not None
    (demo_project.image.tree / "etc/demo.conf").chmod(0o600)
    (demo_project.image.tree / "etc").chmod(0o700)
    os.umask(0o077)
    root = tmp_path / "root"
    warnings = assemble_tree(demo_project, root)
    tree = demo_project.image.tree
    assert warnings == [
        "2 file(s) readable only by their owner here are readable by every user of the host "
        f"in the image ({tree / 'etc/demo.conf'}, {tree / 'usr/share/demo/run.sh'}): "
        "keep secrets out of images"
    ]
    modes = {
        p.relative_to(root).as_posix(): p.lstat().st_mode & 0o7777
        for p in [root, *root.rglob("*")]
        if not p.is_symlink()
    }
    assert modes["etc"] == 0o755
    assert modes["etc/demo.conf"] == 0o644
    assert modes["usr/share/demo/run.sh"] == 0o755
    assert modes["tmp"] == modes["var/tmp"] == 0o1777
    assert set(modes.values()) <= {0o755, 0o644, 0o1777}


def test_two_builds_in_different_places_are_bit_identical(
    tmp_path: Path,
    make_project: Callable[..., Config],
    monkeypatch: pytest.MonkeyPatch,
    umask: None,
) -> None:
    """Same inputs in other directories, umasks, mtimes and modes give the same image sha256."""
    one = build(make_project(tmp_path / "a"), "1.0")

    os.umask(0o077)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    second = tmp_path / "somewhere" / "else" / "b"
    cfg = make_project(second)
    (second / "build/data.txt").chmod(0o600)
    for path in second.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000), follow_symlinks=False)
    two = build(cfg, "1.0")

    assert one.manifest.image_sha256 == two.manifest.image_sha256
    assert one.image.read_bytes() == two.image.read_bytes()
    assert one.manifest_path.read_text() == two.manifest_path.read_text()


def test_changed_binary_changes_image_and_only_its_hash(
    demo_project: Config, static_binary: Callable[[str], Path]
) -> None:
    """A new binary changes the image sha256 and exactly one manifest entry: the binary's."""
    v1 = build(demo_project, "1.0")
    cfg = _with_files(demo_project, usr__bin__demo=static_binary("v2"))
    v2 = build(cfg, "1.1")
    assert v1.manifest.image_sha256 != v2.manifest.image_sha256
    assert changed_paths(v1.manifest, v2.manifest) == {"usr/bin/demo"}


def test_rebuild_drops_a_stale_signature(demo_project: Config) -> None:
    """Rebuilding a version removes the old manifest's .sig, which can no longer match."""
    artifact = build(demo_project, "1.0")
    sig = artifact.manifest_path.with_name(artifact.manifest_path.name + ".sig")
    sig.write_text("old signature\n")
    build(demo_project, "1.0")
    assert not sig.exists()


@pytest.mark.parametrize("version", ["", "1_0", "1/0", "1 0", "1.0\n"])
def test_version_must_fit_in_the_image_name(demo_project: Config, version: str) -> None:
    """Versions with "_", "/", whitespace or nothing at all are refused before anything runs."""
    with pytest.raises(DeployError, match="cannot be part of the image name"):
        build(demo_project, version)
    assert not demo_project.image.dist.exists()


def test_missing_file_source_names_the_config_key(demo_project: Config) -> None:
    """A missing [image] files source fails with the key that names it."""
    cfg = _with_files(demo_project, usr__bin__tool=demo_project.root / "build/nope")
    with pytest.raises(DeployError, match=r'\[image\] files\."usr/bin/tool": source .*nope'):
        build(cfg, "1.0", run_commands=False)


@pytest.mark.parametrize("dest", ["/usr/bin/x", "../x", "usr//x", "usr/./x"])
def test_file_destination_must_be_a_plain_relative_path(
    demo_project: Config, tmp_path: Path, dest: str
) -> None:
    """[image] files keys that are absolute, climb out or are not normalised are refused."""
    cfg = dataclasses.replace(
        demo_project,
        image=dataclasses.replace(
            demo_project.image, files={dest: demo_project.root / "build/demo"}
        ),
    )
    with pytest.raises(DeployError, match="plain relative path"):
        assemble_tree(cfg, tmp_path / "root")


def test_drop_in_directories_in_units_are_refused(demo_project: Config, tmp_path: Path) -> None:
    """A UNIT.d directory in units/ is an error: portablectl would not attach it."""
    (demo_project.image.units / "demo.service.d").mkdir()
    with pytest.raises(DeployError, match=r"found demo\.service\.d, a directory: portablectl"):
        assemble_tree(demo_project, tmp_path / "root")


def test_units_without_the_image_prefix_are_refused(demo_project: Config, tmp_path: Path) -> None:
    """A unit portablectl would not attach (name lacks the app prefix) is an error."""
    (demo_project.image.units / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(DeployError, match=r"found other\.service in"):
        assemble_tree(demo_project, tmp_path / "root")


def test_readme_in_units_is_refused_as_when_loading_the_config(
    demo_project: Config, tmp_path: Path
) -> None:
    """A README in units/ stops the build with the message load_config gives, not a skip."""
    (demo_project.image.units / "README.md").write_text("notes\n")
    with pytest.raises(DeployError) as info:
        assemble_tree(demo_project, tmp_path / "root")
    assert info.value.message == (
        f"[image] units: expected only unit files (.service .socket .target .timer .path) in "
        f"{demo_project.image.units}, found README.md, which is not a unit file"
    )
    assert info.value.hint is not None and "move notes elsewhere" in info.value.hint


# --- pack --------------------------------------------------------------------------------------


def test_pack_uses_reproducible_flags(tmp_path: Path) -> None:
    """The mksquashfs command pins times, owners, xattrs, root mode, block size and compressor."""
    argv = mksquashfs_argv(tmp_path / "t", tmp_path / "o.raw", "gzip")
    line = " ".join(argv)
    for flag in ("-noappend", "-all-root", "-no-xattrs", "-mkfs-time 0", "-all-time 0"):
        assert flag in line
    assert "-root-mode 755" in line and "-b 128K" in line and "-comp gzip" in line


def test_pack_passes_the_compression_level_only_when_set(tmp_path: Path) -> None:
    """[image] compression_level becomes -Xcompression-level; unset, mksquashfs's default."""
    assert "-Xcompression-level" not in mksquashfs_argv(tmp_path / "t", tmp_path / "o", "zstd")
    line = " ".join(mksquashfs_argv(tmp_path / "t", tmp_path / "o", "zstd", 3))
    assert "-comp zstd -Xcompression-level 3 " in line


def test_a_compression_level_changes_the_image_and_packs_reproducibly(tmp_path: Path) -> None:
    """mksquashfs takes the level: a compressible file packs smaller at zstd 19 than at 1, and
    the same level gives the same bytes twice."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(
        b"".join(b"line %d of a log-like file\n" % (i % 977) for i in range(40_000))
    )
    sizes = {}
    for level in (1, 19, 19):
        out = tmp_path / f"o{level}.raw"
        pack(tree, out, "zstd", level)
        data = out.read_bytes()
        assert sizes.setdefault(level, data) == data
    assert len(sizes[19]) < len(sizes[1])


def test_pack_makes_everything_root_owned(tmp_path: Path, squashfs_listing: Listing) -> None:
    """Files owned by another user are root:root in the image."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x\n")
    if os.geteuid() == 0:
        os.chown(tree / "f", 1234, 1234)
    pack(tree, tmp_path / "o.raw", "gzip")
    assert squashfs_listing(tmp_path / "o.raw")["f"].owner == "root/root"


def test_pack_failure_shows_the_command_and_leaves_nothing(tmp_path: Path) -> None:
    """A failed mksquashfs names the pasteable command line and leaves no partial image."""
    out = tmp_path / "dist" / "x.raw"
    with pytest.raises(DeployError) as info:
        pack(tmp_path / "missing", out, "zstd")
    assert "mksquashfs failed (exit 1): mksquashfs " in info.value.message
    assert str(tmp_path / "missing") in info.value.message
    assert list(out.parent.iterdir()) == []


# --- build commands ----------------------------------------------------------------------------


def test_build_commands_get_app_env_and_run_in_the_root(demo_project: Config) -> None:
    """Commands run with sh -c in the project root with APP_NAME, APP_VERSION and DEPLOY_ROOT."""
    cfg = dataclasses.replace(
        demo_project,
        build=dataclasses.replace(
            demo_project.build,
            commands=('echo "$APP_NAME $APP_VERSION $DEPLOY_ROOT" > env.txt', "cat env.txt"),
        ),
    )
    lines: list[str] = []
    run_build_commands(cfg, "2.0", output=lines.append)
    expected = f"demo 2.0 {demo_project.root}"
    assert (demo_project.root / "env.txt").read_text() == expected + "\n"
    assert lines == [expected]


def test_failing_build_command_reports_command_and_output_tail(demo_project: Config) -> None:
    """A failing command raises with its exit code, its text and the last lines of its output."""
    failing = "for i in $(seq 1 40); do echo line $i; done; echo boom >&2; exit 3"
    cfg = dataclasses.replace(
        demo_project,
        build=dataclasses.replace(demo_project.build, commands=("true", failing, "touch ran")),
    )
    with pytest.raises(DeployError) as info:
        build(cfg, "1.0")
    message = info.value.message
    assert message.startswith(f"build command failed (exit 3): {failing}\n")
    assert "line 40" in message and "boom" in message
    assert "line 5\n" not in message
    assert info.value.hint
    assert not (demo_project.root / "ran").exists()
    assert not demo_project.image.dist.exists()


# --- git ---------------------------------------------------------------------------------------


def test_manifest_records_git_commit_and_dirty_state(demo_project: Config) -> None:
    """The manifest holds HEAD and whether tracked sources changed; dist/ does not count."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = demo_project.root

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    clean = build(demo_project, "1.0").manifest
    assert (clean.git_commit, clean.git_dirty) == (git("rev-parse", "HEAD"), False)
    assert git("status", "--porcelain") == "?? dist/"
    assert build(demo_project, "1.0").manifest.git_dirty is False
    (root / "units/demo.service").write_text("[Service]\nExecStart=/usr/bin/demo\n")
    assert build(demo_project, "1.1").manifest.git_dirty is True


def test_outside_git_the_manifest_has_no_commit(demo_project: Config) -> None:
    """A project that is not a git work tree records commit None and dirty False."""
    manifest = build(demo_project, "1.0").manifest
    assert (manifest.git_commit, manifest.git_dirty) == (None, False)


# --- unit_mount_points -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        pytest.param("[Service]\nStateDirectory=a b\n", ["var/lib/a", "var/lib/b"], id="list"),
        pytest.param(
            "[Service]\nStateDirectory=a\nStateDirectory=b\n", ["var/lib/a", "var/lib/b"], id="adds"
        ),
        pytest.param(
            "[Service]\nStateDirectory=a\nStateDirectory=\nStateDirectory=b\n",
            ["var/lib/b"],
            id="empty-resets",
        ),
        pytest.param("[Service]\nStateDirectory=a:b c\n", ["var/lib/a", "var/lib/c"], id="a:b"),
        pytest.param(
            "[Service]\nStateDirectory=s\nCacheDirectory=c\nLogsDirectory=l\n"
            "ConfigurationDirectory=e\n",
            ["var/lib/s", "var/cache/c", "var/log/l", "etc/e"],
            id="all-kinds",
        ),
        pytest.param("[Service]\nStateDirectory=app/sub\n", ["var/lib/app/sub"], id="nested"),
        pytest.param(
            "[Service]\nStateDirectory=a \\\n  b\n# StateDirectory=x\n; StateDirectory=y\n",
            ["var/lib/a", "var/lib/b"],
            id="continuation-and-comments",
        ),
        pytest.param(
            "[Unit]\nStateDirectory=u\n[Install]\nStateDirectory=i\n", [], id="other-sections"
        ),
        pytest.param("[Service]\nStateDirectory=a a\n", ["var/lib/a"], id="duplicates"),
        pytest.param("[Service]\nStateDirectory=100%%\n", ["var/lib/100%"], id="percent"),
    ],
)
def test_unit_mount_points(unit: str, expected: list[str]) -> None:
    """State/Cache/Logs/ConfigurationDirectory= become image directories, systemd-style."""
    assert unit_mount_points(unit) == expected


def test_unit_mount_points_resolve_name_specifiers() -> None:
    """%N, %n and %p resolve from the unit name; a template's %p is its prefix."""
    assert unit_mount_points("[Service]\nStateDirectory=%N\n", "demo.service") == ["var/lib/demo"]
    assert unit_mount_points("[Service]\nCacheDirectory=%p\n", "demo@.service") == [
        "var/cache/demo"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [("%i", "specifier %i"), ("/abs", "not a relative"), ("../up", "not a relative")],
)
def test_unit_mount_points_refuse_what_the_build_cannot_create(value: str, message: str) -> None:
    """Instance specifiers, absolute and climbing paths are errors that name the unit."""
    with pytest.raises(DeployError, match=f"demo@.service: .*{message}"):
        unit_mount_points(f"[Service]\nStateDirectory={value}\n", "demo@.service")


def test_a_symlinked_unit_in_the_tree_is_refused(demo_project: Config, tmp_path: Path) -> None:
    """A unit file in [image] tree that is a symlink (here, absolute) would be read on the build
    machine; it is refused with a hint instead."""
    assert demo_project.image.tree is not None
    unit_dir = demo_project.image.tree / "usr/lib/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "demo-extra.service").symlink_to("/etc/passwd")
    with pytest.raises(DeployError, match=r"demo-extra.service is a symlink"):
        assemble_tree(demo_project, tmp_path / "root")


def test_bind_mount_points_are_the_destinations() -> None:
    """BindPaths=/BindReadOnlyPaths= words give DEST (or SOURCE), without '-' and options."""
    from portable_deploy.image import bind_mount_points

    text = (
        "[Service]\nBindReadOnlyPaths=-/etc/ssl/certs\nBindPaths=/srv/a:/data:rbind /run/x\n"
        "BindPaths=\n[Install]\nBindPaths=/ignored\n"
    )
    assert bind_mount_points(text, "a.service") == ["etc/ssl/certs", "data", "run/x"]


def test_a_relative_bind_mount_point_is_refused() -> None:
    """A bind destination that is not absolute is a clear build error."""
    from portable_deploy.image import bind_mount_points

    with pytest.raises(DeployError, match="not an absolute path"):
        bind_mount_points("[Service]\nBindPaths=/a:data\n", "a.service")
