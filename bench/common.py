"""Shared by the benchmarks: a copy of the reference app aimed at a sandbox VM of the bench's own."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from portable_deploy.sandbox import VM, Sandbox  # noqa: E402


@dataclass
class Bench:
    root: Path
    vm: VM
    env: dict[str, str]
    #: Every VM of the bench (``bench_project(vms=N)``); ``vm`` is the first.
    vms: list[VM] = field(default_factory=list)

    def invoke(
        self, *args: str, version: str | None = None, check: bool = True, **extra: str
    ) -> float:
        """Run `invoke ARGS` in the project (EXTRA in its environment); returns its wall time."""
        env = dict(self.env, **extra)
        if version:
            env["DEPLOY_VERSION"] = version
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        took = time.monotonic() - start
        if check and result.returncode != 0:
            raise SystemExit(f"invoke {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return took

    def ssh(self, script: str) -> str:
        result = subprocess.run(
            self.vm.ssh_argv([script], batch=True), capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise SystemExit(f"ssh {script!r} failed: {result.stderr}")
        return result.stdout


@contextlib.contextmanager
def bench_project(prefix: str, vms: int = 1) -> Iterator[Bench]:
    """A temp copy of the reference app, its own signing key, and its own sandbox VM(s), stopped
    after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp) / "app"
        root.mkdir()
        for name in ("app", "units", "image"):
            shutil.copytree(REPO / name, root / name)
        for name in ("tasks.py", "deploy.toml"):
            shutil.copy(REPO / name, root / name)
        (root / ".deploy").mkdir()
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                str(root / ".deploy/signing_key"),
            ],
            check=True,
        )
        state = Path(tmp) / "sandbox"
        box = Sandbox(state_dir=state)
        env = dict(os.environ)
        env["PORTABLE_DEPLOY_SANDBOX_DIR"] = str(state)
        env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("DEPLOY_TOML", None)
        try:
            up = box.up(vms, progress=lambda line: print(f"  {line}", flush=True))
            yield Bench(root, up[0], env, up)
        finally:
            box.down()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
