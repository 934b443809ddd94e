"""The adoption contract: a repo with only tasks.py, deploy.toml, units/ and a binary can run
`invoke build sign` and gets a reproducible image with a verifiable signature."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import StaticBinary

SRC = Path(__file__).resolve().parents[2] / "src"

TOML = """\
[app]
name = "demo"
version = "1.0"

[image]
units = "units"

[image.files]
"usr/bin/demo" = "demo-bin"

[sign]
key = "signing_key"

[hosts.prod]
address = "vps.invalid"
"""


def _repo(root: Path, binary: Path) -> None:
    root.mkdir()
    (root / "tasks.py").write_text("from portable_deploy.tasks import ns  # noqa: F401\n")
    (root / "deploy.toml").write_text(TOML)
    (root / "units").mkdir()
    (root / "units/demo.service").write_text(
        "[Service]\nExecStart=/usr/bin/demo\nStateDirectory=demo\n"
    )
    shutil.copy(binary, root / "demo-bin")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "signing_key")], check=True
    )


def _invoke(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHONPATH=str(SRC), **env)
    full.pop("DEPLOY_TOML", None)
    full.pop("DEPLOY_VERSION", None)
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=root, env=full, capture_output=True, text=True
    )


def test_minimal_repo_builds_reproducibly_and_signs(
    tmp_path: Path, static_binary: StaticBinary
) -> None:
    """Two minimal repos in different places give the same image; its signature verifies."""
    digests = []
    for name in ("one", "two"):
        root = tmp_path / name
        _repo(root, static_binary("hello"))
        result = _invoke(root, "build", "sign")
        assert result.returncode == 0, result.stdout + result.stderr
        image = root / "dist/demo_1.0.raw"
        digests.append(hashlib.sha256(image.read_bytes()).hexdigest())
        manifest = root / "dist/demo_1.0.manifest.json"
        allowed = root / "allowed_signers"
        pub = (root / "signing_key.pub").read_text().split()
        allowed.write_text(f'deploy namespaces="portable-deploy" {pub[0]} {pub[1]}\n')
        with manifest.open("rb") as stdin:
            check = subprocess.run(
                ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "deploy",
                 "-n", "portable-deploy", "-s", f"{manifest}.sig"],
                stdin=stdin, capture_output=True, text=True,
            )  # fmt: skip
        assert check.returncode == 0, check.stderr
        assert digests[-1] in manifest.read_text()
    assert digests[0] == digests[1]


def test_bad_config_is_one_line_exit_1_without_traceback(
    tmp_path: Path, static_binary: StaticBinary
) -> None:
    """A typo in deploy.toml gives one error line with a hint and exit code 1."""
    root = tmp_path / "repo"
    _repo(root, static_binary("hello"))
    (root / "deploy.toml").write_text(TOML.replace("[sign]", "[sign]\nkeyy = 1"))
    result = _invoke(root, "build")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "keyy" in lines[0] and "hint" in lines[0]


def test_sign_without_key_says_how_to_make_one(tmp_path: Path, static_binary: StaticBinary) -> None:
    """`invoke sign` with no key configured names the ssh-keygen command."""
    root = tmp_path / "repo"
    _repo(root, static_binary("hello"))
    (root / "signing_key").unlink()
    assert _invoke(root, "build").returncode == 0
    result = _invoke(root, "sign")
    assert result.returncode == 1
    assert "ssh-keygen -t ed25519" in result.stderr


@pytest.mark.parametrize("task", ["deploy", "rollback", "releases", "status", "logs", "host.setup"])
def test_unknown_host_changes_nothing(
    tmp_path: Path, static_binary: StaticBinary, task: str
) -> None:
    """--host with a name not in deploy.toml is refused before anything connects."""
    root = tmp_path / "repo"
    _repo(root, static_binary("hello"))
    result = _invoke(root, task, "--host", "nope")
    assert result.returncode == 1
    assert "no host named nope" in result.stderr and "prod" in result.stderr


def test_a_local_file_error_is_one_line_exit_1(tmp_path: Path, static_binary: StaticBinary) -> None:
    """dist/ that cannot be made (a file is in the way) gives one error line naming the path."""
    root = tmp_path / "repo"
    _repo(root, static_binary("hello"))
    (root / "dist").write_text("not a directory")
    result = _invoke(root, "build")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith("error: ") and str(root / "dist") in line and "hint:" in line
