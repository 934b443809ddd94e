"""`invoke init` in a new app's repo, then `invoke build` and `invoke deploy` to the sandbox VM,
with nothing changed by hand but the app itself: a small static Go server that serves the socket
systemd passes it.

The module leaves the VM as it found it for the other e2e modules: the app detached and its
images, state and trust root removed, so port 80 is free again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from portable_deploy import facts
from portable_deploy.sandbox import VM
from tests.project import Project

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
APP = "hello"
#: The whole app: it serves the first socket systemd passes (LISTEN_FDS) and drains on SIGTERM.
MAIN_GO = """\
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

var version = "dev"

func main() {
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || n < 1 {
		fmt.Fprintln(os.Stderr, "no socket passed by systemd ($LISTEN_FDS): start hello-http.socket")
		os.Exit(1)
	}
	l, err := net.FileListener(os.NewFile(3, "http"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\\n", version)
	})}
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM)
		<-stop
		srv.Shutdown(context.Background())
	}()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
"""
BUILD = (
    'CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$APP_VERSION" '
    "-o build/hello ."
)
#: The exposure targets of the reference app's units (README "Hardening"), for init's units.
TARGETS = {f"{APP}.service": 1.0, f"{APP}-litestream.service": 2.0, f"{APP}-restore.service": 2.0}
#: Takes the app off the VM: what no other e2e module knows about.
RESET = (
    "for i in $(portablectl list --no-legend | awk '{print $1}'); do "
    f"case $i in {APP}_*) portablectl detach --now $i >/dev/null 2>&1 || true;; esac; done; "
    f"rm -rf /var/lib/portables/{APP}_* /var/lib/portable-deploy/{APP} /etc/portable-deploy/{APP} "
    f"/var/lib/private/{APP} /var/lib/private/{APP}-replica; systemctl reset-failed"
)


@dataclass
class Repo:
    root: Path
    vm: VM
    env: dict[str, str]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
        )

    def invoke(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "invoke", *args)

    def ssh(self, script: str) -> str:
        result = subprocess.run(
            self.vm.ssh_argv([script], batch=True), capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def repo(sandbox_vm: VM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    """An empty git repo holding only the Go app, aimed (by env) at the session's sandbox VM;
    port 80 freed of the reference app first."""
    root = tmp_path_factory.mktemp("apps") / APP
    root.mkdir()
    (root / "main.go").write_text(MAIN_GO)
    (root / "go.mod").write_text("module hello\n\ngo 1.19\n")
    env = dict(os.environ)
    env["PORTABLE_DEPLOY_SANDBOX_DIR"] = str(sandbox_vm.key.parent.parent)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    for name in ("DEPLOY_TOML", "DEPLOY_VERSION"):
        env.pop(name, None)
    r = Repo(root, sandbox_vm, env)
    ok(r.run("git", "init", "-q"))
    Project(root, sandbox_vm, env).reset()  # the reference app off port 80
    r.ssh(RESET)
    yield r
    r.ssh(RESET)
    assert APP not in r.ssh("portablectl list --no-legend; ls /var/lib/portables")


def _commit(repo: Repo) -> None:
    ok(repo.run("git", "add", "-A"))
    ok(repo.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"))


def test_init_build_deploy_serves_the_app(repo: Repo) -> None:
    """init (no terminal, with Litestream), a commit, build and deploy: the app answers on the
    VM's port 80 through its socket next to Litestream, every unit within the reference app's
    exposure targets, and the dry run names the port systemd holds."""
    said = ok(
        repo.run(sys.executable, "-m", "portable_deploy", "init", "--build", BUILD, "--litestream")
    )
    assert "made the signing key .deploy/signing_key" in said
    _commit(repo)
    built = ok(repo.invoke("build"))
    assert " ! " not in built  # no warning: the socket holds the port verify checks
    version = ok(repo.run("git", "describe", "--tags", "--always", "--dirty")).strip()
    deployed = ok(repo.invoke("deploy"))
    assert f"{APP}_{version} is live on sandbox" in deployed
    with urllib.request.urlopen(f"http://127.0.0.1:{repo.vm.http_port}/", timeout=30) as r:
        assert (r.status, r.read().decode()) == (200, f"hello {version}\n")
    units = f"{APP}-http.socket {APP}.service {APP}-litestream.service"
    assert repo.ssh(f"systemctl is-active {units}").split() == ["active"] * 3
    for unit, target in TARGETS.items():
        out = repo.ssh(f"systemd-analyze security --no-pager {unit} | tail -n1")
        score = facts.exposure(out)
        assert score is not None and score <= target, (unit, out)
    dry = ok(repo.invoke("deploy", "--dry-run", "--no-build"))
    assert f"ports held by systemd: 80 ({APP}-http.socket)" in dry


def test_init_again_refuses_to_overwrite(repo: Repo) -> None:
    """In a repo already set up, init lists the files it would overwrite and changes none."""
    if not (repo.root / "deploy.toml").exists():
        ok(
            repo.run(
                sys.executable, "-m", "portable_deploy", "init", "--build", BUILD, "--litestream"
            )
        )
    before = (repo.root / "deploy.toml").read_text()
    result = repo.invoke("init", "--build", BUILD, "--litestream")
    assert result.returncode == 1
    assert "init would overwrite " in result.stderr
    assert "deploy.toml, image/etc/litestream.yml, image/usr/lib/os-release, tasks.py" in (
        result.stderr
    )
    assert (repo.root / "deploy.toml").read_text() == before
