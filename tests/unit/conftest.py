"""Fixtures for the image, manifest and signing tests: a static test binary and a demo project.

Everything is a fixture (factories where a test needs parameters), so nothing imports this file.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from portable_deploy.config import (
    AppConfig,
    BuildConfig,
    Compression,
    Config,
    ImageConfig,
    SignConfig,
)

APP = "demo"

SERVICE = """\
[Unit]
Description=Demo app

[Service]
ExecStart=/usr/bin/demo
StateDirectory=demo demo-replica
CacheDirectory=demo
LogsDirectory=demo
ConfigurationDirectory=demo
"""

SOCKET = """\
[Socket]
ListenStream=80
Service=demo.service
"""

C_SOURCE = """\
#include <stdio.h>
int main(void) { puts(MESSAGE); return 0; }
"""

StaticBinary = Callable[[str], Path]


@pytest.fixture(scope="session")
def static_binary(tmp_path_factory: pytest.TempPathFactory) -> StaticBinary:
    """A factory of small static executables that print a message; compiled once per message."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    workdir = tmp_path_factory.mktemp("cc")
    source = workdir / "demo.c"
    source.write_text(C_SOURCE)
    cache: dict[str, Path] = {}

    def compile_one(message: str) -> Path:
        if message not in cache:
            out = workdir / f"demo-{len(cache)}"
            define = f'-DMESSAGE="{message}"'
            subprocess.run(
                ["gcc", "-static", "-O2", define, "-o", str(out), str(source)],
                check=True,
                capture_output=True,
            )
            cache[message] = out
        return cache[message]

    return compile_one


def _write_project(root: Path, binary: Path) -> None:
    """A project on disk: skeleton tree, units, a data file and the binary as a build output."""
    (root / "image/etc").mkdir(parents=True)
    (root / "image/etc/demo.conf").write_text("color = blue\n")
    (root / "image/etc/demo-link.conf").symlink_to("demo.conf")
    (root / "image/usr/share/demo").mkdir(parents=True)
    (root / "image/usr/share/demo/run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "image/usr/share/demo/run.sh").chmod(0o700)
    (root / "units").mkdir()
    (root / "units/demo.service").write_text(SERVICE)
    (root / "units/demo-http.socket").write_text(SOCKET)
    (root / "build").mkdir()
    shutil.copyfile(binary, root / "build/demo")
    (root / "build/demo").chmod(0o755)
    (root / "build/data.txt").write_text("some data\n")


def _make_config(
    root: Path,
    *,
    version: str = "1.0",
    commands: tuple[str, ...] = (),
    compression: Compression = Compression.ZSTD,
    key: Path | None = None,
    allowed_signers: Path | None = None,
) -> Config:
    """A Config for the project at ``root``, built directly (no deploy.toml)."""
    return Config(
        path=root / "deploy.toml",
        app=AppConfig(name=APP, version=version),
        build=BuildConfig(commands=commands),
        image=ImageConfig(
            tree=root / "image",
            units=root / "units",
            files={
                "usr/bin/demo": root / "build/demo",
                "usr/share/demo/data.txt": root / "build/data.txt",
            },
            compression=compression,
            dist=root / "dist",
        ),
        sign=SignConfig(key=key, allowed_signers=allowed_signers, principal="deploy"),
        hosts={},
    )


MakeProject = Callable[..., Config]


@pytest.fixture
def make_project(static_binary: StaticBinary) -> MakeProject:
    """Factory: write the demo project under ``root`` (binary printing ``message``); its Config."""

    def make(root: Path, message: str = "v1", **config: Any) -> Config:
        root.mkdir(parents=True, exist_ok=True)
        _write_project(root, static_binary(message))
        return _make_config(root, **config)

    return make


@pytest.fixture
def demo_project(tmp_path: Path, make_project: MakeProject) -> Config:
    """The demo project in a fresh directory, with a static binary that prints "v1"."""
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session")
def squashfs_listing() -> Callable[[Path], dict[str, Entry]]:
    """The function that lists an image with `unsquashfs -lls`."""
    return _unsquashfs_listing


@dataclass(frozen=True)
class Entry:
    """One line of `unsquashfs -lls`."""

    mode: str
    owner: str
    size: int
    time: str
    target: str | None


def _unsquashfs_listing(image: Path) -> dict[str, Entry]:
    """Image path (relative, "" for the root) -> what `unsquashfs -lls` says about it."""
    out = subprocess.run(
        ["unsquashfs", "-lls", "-d", "", str(image)], check=True, capture_output=True, text=True
    ).stdout
    listing: dict[str, Entry] = {}
    for line in out.splitlines():
        # "drwxr-xr-x root/root 24 1970-01-01 00:00 /usr/lib" (the root has no name)
        fields = line.split(None, 5)
        if len(fields) < 5 or fields[0][0] not in "-dlbcps":
            continue
        rest = fields[5] if len(fields) == 6 else ""
        path, _, target = rest.partition(" -> ")
        listing[path.lstrip("/")] = Entry(
            mode=fields[0],
            owner=fields[1],
            size=int(fields[2]),
            time=f"{fields[3]} {fields[4]}",
            target=target or None,
        )
    return listing
