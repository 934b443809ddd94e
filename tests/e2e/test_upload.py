"""Delta uploads on the real sandbox VM: what crosses the wire for a first deploy, an app-only
change and no change; an upload killed half way resumes; a damaged kept image is caught by the
host's sha256 check and repaired by sending the whole image, never attached.

Each test reads what the deploy says it sent ("delta: X of Y to send", "sent X in ...") and
checks the result on the host (the image under its release name matches its signed manifest)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portable_deploy.chunks import RESEND
from portable_deploy.config import load_config
from portable_deploy.sandbox import VM
from tests.project import LAYOUT, STATE, Project, make_project, ok, stopped

pytestmark = pytest.mark.e2e

UNITS = {"KB": 1e3, "MB": 1e6, "B": 1}


def _bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def said(output: str) -> str:
    """OUTPUT on one line: rich wraps long lines at 80 columns when not on a terminal."""
    return " ".join(output.split())


def planned(output: str) -> tuple[float, float]:
    """(bytes to send, image size) from "delta: X of Y to send"."""
    output = said(output)
    m = re.search(r"delta: ([\d.]+ [KM]?B) of ([\d.]+ [KM]?B) to send", output)
    assert m, output
    return _bytes(m.group(1)), _bytes(m.group(2))


def sent(output: str) -> float:
    output = said(output)
    m = re.search(r"sent ([\d.]+ [KM]?B) in", output)
    assert m, output
    return _bytes(m.group(1))


@pytest.fixture(scope="module")
def project(sandbox_vm: VM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    p = make_project(sandbox_vm, tmp_path_factory.mktemp("upload"))
    p.reset()
    yield p
    p.reset()


def _image_matches_its_manifest(project: Project, version: str) -> None:
    release = f"scoreboard_{version}"
    out = project.ssh(
        f"sha256sum {LAYOUT.image(release)} | cut -d' ' -f1; cat {LAYOUT.manifest(release)}"
    )
    digest, manifest = out.split("\n", 1)
    assert f'"image_sha256": "{digest}"' in manifest


def test_the_first_deploy_sends_about_the_whole_image(project: Project) -> None:
    if project.state().live is not None:
        project.reset()
    result = project.deploy("up1")
    ok(result)
    to_send, size = planned(result.stdout)
    assert to_send >= 0.97 * size
    # The index rides along: 12 bytes a chunk of about 10 KB, well under 0.5 % of the image
    # (figures are printed to 0.1 MB).
    assert sent(result.stdout) <= size * 1.005 + 100_000
    assert project.ssh(f"test -s {LAYOUT.index('scoreboard_up1')} && echo yes").strip() == "yes"
    _image_matches_its_manifest(project, "up1")


def test_an_app_only_change_sends_about_the_changed_binary(project: Project) -> None:
    project.bring_to("up1")
    result = project.deploy("up2")
    ok(result)
    to_send, size = planned(result.stdout)
    assert "reused" in result.stdout and "from scoreboard_up1" in said(result.stdout)
    # The app binary, compressed as the image compresses it, plus some chunks around it and
    # the squashfs tables that name it.
    binary = _compressed_size(project.root / "build" / "scoreboard", project.root)
    assert to_send <= binary + 256 * 1024, (to_send, binary)
    assert to_send < 0.5 * size
    _image_matches_its_manifest(project, "up2")
    assert project.get("/version") == (200, "up2\n")


def test_an_unchanged_release_sends_nothing(project: Project) -> None:
    project.bring_to("up2", previous="up1")
    ok(project.invoke("rollback"))  # up1 live; up2 is kept on the host
    result = project.deploy("up2", "--no-build")
    ok(result)
    assert "scoreboard_up2.raw already on sandbox (same sha256): not sent again" in said(
        result.stdout
    )
    assert "delta:" not in result.stdout


def test_an_upload_killed_half_way_resumes(project: Project) -> None:
    """SIGKILL of the deployer half way through the stream; the next deploy of the same release
    sends only the rest (and at most one chunk again)."""
    project.bring_to("up2")
    proc = project.start_deploy("up3", "upload")
    try:
        deadline = time.monotonic() + 300
        while not stopped(proc.pid):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the deploy never reached half of its upload"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        first = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    to_send, _ = planned(first)
    arrived = int(project.ssh(f"cat {STATE}/partial/scoreboard_up3.*.delta | wc -c").strip() or "0")
    assert arrived > 0.3 * to_send, (arrived, to_send)
    result = project.deploy("up3", "--no-build")
    ok(result)
    assert "resuming after" in result.stdout
    assert planned(result.stdout)[0] == to_send  # the same plan
    # What is left, plus at most one chunk (FastCDC's largest) sent again.
    assert sent(result.stdout) <= (to_send + 50_000) - arrived + RESEND + 1000
    assert project.ssh(f"ls {STATE}/partial").strip() == ""  # used up
    _image_matches_its_manifest(project, "up3")
    assert project.get("/version") == (200, "up3\n")


def test_a_damaged_kept_image_is_caught_and_the_whole_image_sent(project: Project) -> None:
    """The kept image a delta copies from is damaged on the host: the assembled image fails the
    host's sha256 check and never gets the name; the deploy says so, sends the whole image and
    goes live; the damaged release stops serving deltas, and a rollback to it is refused."""
    project.bring_to("up3", previous="up2")
    # Only up2 can serve this delta (as after an upgrade from a version without indexes), and
    # a stretch of its image that up4 shares is damaged.
    project.ssh(
        f"rm -f {LAYOUT.index('scoreboard_up3')} {LAYOUT.index('scoreboard_up1')}; "
        f"printf 'damaged by the test' | dd of={LAYOUT.image('scoreboard_up2')} bs=1 "
        "seek=8000000 conv=notrunc status=none"
    )
    result = project.deploy("up4")
    ok(result)
    assert "kept image scoreboard_up2 is damaged; sending the whole image instead" in said(
        result.stdout
    )
    _image_matches_its_manifest(project, "up4")
    assert project.get("/version") == (200, "up4\n")
    assert project.ssh(f"ls {STATE}/incoming").strip() == ""
    assert "No such file" in project.ssh(f"ls {LAYOUT.index('scoreboard_up2')} 2>&1 || true")
    refused = project.invoke("rollback", "--to", "up2")
    assert refused.returncode == 1
    assert "does not match the signed manifest" in said(refused.stdout + refused.stderr)
    assert project.get("/version") == (200, "up4\n")


def _compressed_size(binary: Path, scratch: Path) -> int:
    """BINARY's size in a squashfs image of its own, packed as the project packs images."""
    from portable_deploy.image import mksquashfs_argv

    tree = scratch / "one-binary"
    tree.mkdir(exist_ok=True)
    (tree / binary.name).write_bytes(binary.read_bytes())
    out = scratch / "one-binary.raw"
    out.unlink(missing_ok=True)
    argv = mksquashfs_argv(
        tree, out, "zstd", load_config(scratch / "deploy.toml").image.compression_level
    )
    subprocess.run(argv, check=True, capture_output=True)
    return out.stat().st_size
