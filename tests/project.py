"""The reference app copied to a temp dir with its own signing key, deployed with `invoke` to a
sandbox VM: what the e2e modules share."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from portable_deploy import facts, failpoints, profiles
from portable_deploy.commands.layout import STATE_ROOT, Layout
from portable_deploy.commands.state import SECTION, host_state
from portable_deploy.sandbox import VM

REPO = Path(__file__).resolve().parents[1]
STATE = "/var/lib/portable-deploy/scoreboard"
LAYOUT = Layout("scoreboard")


@dataclass(frozen=True)
class HostState:
    live: str | None  # a version ("e2e2"), not a release name
    previous: str | None
    set_up: bool


@dataclass
class Project:
    """A copy of the reference app repo, deployed with `invoke` to the session's sandbox VM."""

    root: Path
    vm: VM
    env: dict[str, str]

    def invoke(
        self, *args: str, version: str | None = None, toml: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        run_env = dict(self.env, **env)
        if version:
            run_env["DEPLOY_VERSION"] = version
        if toml:
            run_env["DEPLOY_TOML"] = str(toml)
        return subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=self.root,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def deploy(self, version: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        result = self.invoke("deploy", *args, version=version, **env)
        return result

    def start_deploy(self, version: str, failpoint: str) -> subprocess.Popen[str]:
        """Build and sign VERSION, then start its deploy with FAILPOINT armed, not waited for
        (stderr into stdout, both piped): the test meets it at the failpoint."""
        ok(self.invoke("build", version=version))
        ok(self.invoke("sign", version=version))
        return subprocess.Popen(
            [sys.executable, "-m", "invoke", "deploy", "--no-build"],
            cwd=self.root,
            env=dict(self.env, DEPLOY_VERSION=version, **{failpoints.ENV: failpoint}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def built(self, version: str) -> bool:
        dist = self.root / "dist"
        return all(
            (dist / f"scoreboard_{version}{ext}").exists()
            for ext in (".raw", ".manifest.json", ".manifest.json.sig")
        )

    def deploy_built(self, version: str) -> subprocess.CompletedProcess[str]:
        """Deploy VERSION, building it only if this project has not built it yet."""
        return self.deploy(version, *(["--no-build"] if self.built(version) else []))

    def state(self) -> HostState:
        """The live release and rollback target, read and parsed as the tool itself does."""
        out = self.ssh(
            host_state(LAYOUT, LAYOUT.allowed_signers, STATE_ROOT, profiles.DEFAULT).render(
                reveal=True
            )
        )
        sections = facts.state_sections(out, SECTION)
        info = facts.host_info(sections.get("info", ""))
        live = facts.live_release(sections.get("attached", ""), LAYOUT.app)
        previous = facts.previous_release(facts.audit_log(sections.get("audit", "")), live)

        def version(release: str | None) -> str | None:
            return release.removeprefix("scoreboard_") if release else None

        return HostState(version(live), version(previous), info.set_up and info.trusted)

    def bring_to(self, live: str, previous: str | None = None) -> None:
        """Make LIVE the live release (after PREVIOUS, the rollback target), if it is not.

        A release still on the host is made live with `rollback --to` (no build, no upload);
        any other is deployed.
        """
        state = self.state()
        if state.live == live and previous in (None, state.previous):
            return
        if previous is not None:
            self.bring_to(previous)
        on_host = self.ssh(
            f"test -f {LAYOUT.image('scoreboard_' + live)} && "
            f"test -f {LAYOUT.manifest('scoreboard_' + live)} && echo yes || true"
        )
        if on_host.strip() == "yes":
            ok(self.invoke("rollback", "--to", live))
        else:
            ok(self.deploy_built(live))

    def bring_to_any(self, other_than: str = "", with_previous: bool = False) -> HostState:
        """Make sure some release other than OTHER_THAN is live (with a rollback target)."""
        state = self.state()
        if state.live in (None, other_than) or (with_previous and state.previous is None):
            if other_than == "e2e2":
                self.bring_to("e2e1", previous="e2e2")
            else:
                self.bring_to("e2e2", previous="e2e1" if with_previous else None)
            state = self.state()
        return state

    def reset(self) -> None:
        """Take the app and portable-deploy's own state off the host: a never-deployed VM."""
        self.ssh(_RESET)

    def ssh(self, script: str) -> str:
        result = subprocess.run(
            self.vm.ssh_argv([script], batch=True), capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def get(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{self.vm.http_port}{path}"
            with urllib.request.urlopen(url, timeout=30) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def add_points(self, player: str, points: int) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.vm.http_port}/api/scores",
            data=json.dumps({"player": player, "points": points}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200

    def scores(self) -> dict[str, int]:
        status, body = self.get("/api/scores")
        assert status == 200, body
        return {row["player"]: row["points"] for row in json.loads(body)}

    def unit(self, unit: str, prop: str) -> str:
        return self.ssh(f"systemctl show -p {prop} --value {unit}").strip()

    def snapshot(self) -> str:
        """Everything a deploy could change on the host, as text."""
        return self.ssh(
            "find /var/lib/portables -type f -printf '%p %s %T@\\n' | sort; "
            "find /etc/systemd/system.attached -type f | sort | xargs sha256sum; "
            f"find {STATE} -type f ! -name audit.jsonl | sort; "
            "systemctl show -p ActiveEnterTimestampMonotonic,MainPID "
            "scoreboard.service scoreboard-http.socket scoreboard-litestream.service"
        )


#: The suite's zstd level: it builds about 150 images, and zstd packs one in 0.2 s of CPU at
#: level 3 but in 4 s at the default 15, CPU that the TCG VMs beside it need more. The images
#: are 14 % bigger. The benches keep the reference app's level.
FAST_PACK = 3


def make_project(vm: VM, root: Path, pack_level: int | None = FAST_PACK) -> Project:
    """The reference app copied to ROOT with its own signing key, aimed at VM; its images packed
    at PACK_LEVEL ([image] compression_level; None: the reference app's own)."""
    for name in ("app", "units", "image"):
        shutil.copytree(REPO / name, root / name)
    for name in ("tasks.py", "deploy.toml"):
        shutil.copy(REPO / name, root / name)
    if pack_level is not None:
        toml = root / "deploy.toml"
        level = f"[image]\ncompression_level = {pack_level}\n"
        toml.write_text(toml.read_text().replace("[image]\n", level, 1))
    (root / ".deploy").mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / ".deploy/signing_key")],
        check=True,
    )
    env = dict(os.environ)
    env["PORTABLE_DEPLOY_SANDBOX_DIR"] = str(vm.key.parent.parent)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DEPLOY_TOML", None)
    return Project(root, vm, env)


_RESET = (
    "for i in $(portablectl list --no-legend | awk '{print $1}'); do "
    "case $i in scoreboard_*) portablectl detach --now $i >/dev/null 2>&1 || true;; esac; done; "
    "rm -rf /var/lib/portables/scoreboard_* /var/lib/portable-deploy /etc/portable-deploy "
    "/var/lib/private/scoreboard /var/lib/private/scoreboard-replica; "
    "systemctl reset-failed"
)


def stopped(pid: int) -> bool:
    """PID is stopped (state T): a failpoint stopped the deployer there with SIGSTOP."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
