"""Overlapped switches on the real sandbox VM: the reference app deploys with `[deploy] overlap
= true` (its deploy.toml) and Type=notify, so a deploy starts the new release in
scoreboard-overlap.service beside the old process on the same sockets, restarts the app while
the twin serves, then stops the twin.

Each test leaves the VM healthy with no twin running, as the other e2e modules expect.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from portable_deploy import failpoints
from portable_deploy.sandbox import VM
from tests.project import Project, make_project, ok

pytestmark = pytest.mark.e2e

TWIN = "scoreboard-overlap.service"
APP = "scoreboard.service"


@pytest.fixture(scope="module")
def project(sandbox_vm: VM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    p = make_project(sandbox_vm, tmp_path_factory.mktemp("overlap"))
    p.reset()
    yield p
    p.ssh(f"rm -f {failpoints.HOST_FLAG}")
    p.reset()


@dataclass
class Readers:
    """CLIENTS threads reading /version on fresh connections until stopped (bounded to 600 s
    and 20,000 requests each): every answer's version, and every failure."""

    port: int
    clients: int = 4
    versions: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)
        ]

    def __enter__(self) -> Readers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _run(self) -> None:
        started = time.monotonic()
        for _ in range(20_000):
            if self._stop.is_set() or time.monotonic() - started > 600:
                return
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("GET", "/version")
                response = conn.getresponse()
                body = response.read().decode().strip()
                answer = body if response.status == 200 else f"HTTP {response.status}"
            except OSError as e:
                answer = f"{type(e).__name__}: {e}"
            finally:
                conn.close()
            with self._lock:
                self.requests += 1
                if answer.startswith(("HTTP ", "Connection", "Remote", "Timeout", "OSError")):
                    self.failures.append(answer)
                else:
                    self.versions[answer] = self.versions.get(answer, 0) + 1
            time.sleep(0.02)


def _untouched(project: Project) -> dict[str, str]:
    """What an app-only switch must not change: Litestream's process, the sockets' start."""
    return {
        "litestream": project.unit("scoreboard-litestream.service", "MainPID"),
        "http": project.unit("scoreboard-http.socket", "ActiveEnterTimestampMonotonic"),
        "https": project.unit("scoreboard-https.socket", "ActiveEnterTimestampMonotonic"),
    }


def _twin_state(project: Project) -> str:
    return project.unit(TWIN, "ActiveState")


def test_dry_run_shows_the_overlap_plan(project: Project) -> None:
    """deploy --dry-run says the app restarts overlapped: its twin from the new release first."""
    project.bring_to("ov1")
    result = project.invoke("deploy", "--dry-run", version="ov2")
    ok(result)
    out = " ".join(result.stdout.split())
    assert (
        f"overlap {APP}: app service: image changed; overlapped by {TWIN}: start {TWIN} from "
        "scoreboard_ov2 beside the old process"
    ) in out, result.stdout
    assert f"restart {APP} while {TWIN} serves, then stop {TWIN}" in out


def test_an_overlapped_deploy_answers_every_request_and_leaves_no_twin(project: Project) -> None:
    """Under 4 clients, an overlapped deploy fails no request; the answers are the old release's
    and then the new one's; afterwards the app runs the new release and the twin is stopped."""
    project.bring_to("ov1")
    kept = _untouched(project)
    with Readers(project.vm.http_port) as readers:
        time.sleep(1)
        ok(project.deploy_built("ov2"))
        time.sleep(1)
    assert readers.failures == [], readers.failures[:5]
    assert set(readers.versions) == {"ov1", "ov2"}, readers.versions
    assert project.get("/version") == (200, "ov2\n")
    assert _twin_state(project) == "inactive"
    assert project.unit(APP, "ActiveState") == "active"
    assert _untouched(project) == kept  # Litestream kept running, the sockets were never restarted


def test_a_release_that_fails_health_takes_no_request_and_is_rolled_back(project: Project) -> None:
    """A release whose health check fails exits before it serves (Type=notify self-check): its
    twin's start fails, so the old release never stopped serving; not one request is answered by
    the broken release or fails; the deploy is rolled back in one line and audited."""
    project.bring_to("ov2", previous="ov1")
    with Readers(project.vm.http_port) as readers:
        time.sleep(1)
        result = project.deploy("ov3", SCOREBOARD_BROKEN="1")
        time.sleep(1)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "scoreboard_ov3 failed to start" in result.stderr
    assert "rolled back, scoreboard_ov2 is live" in result.stderr
    assert readers.failures == [], readers.failures[:5]
    assert set(readers.versions) == {"ov2"}, readers.versions
    assert project.get("/version") == (200, "ov2\n")
    assert _twin_state(project) == "inactive"
    status = json.loads(project.invoke("status", "--json").stdout)[0]
    assert status["healthy"] is True, status["problems"]


def test_status_shows_both_instances_during_a_switch(project: Project) -> None:
    """Paused on the host while the app and its twin both serve, status lists the twin active
    beside the app, each with its own process; the deploy then ends with the twin stopped."""
    project.bring_to("ov1")
    deploy = project.start_deploy("ov4", "overlapping")
    try:
        deadline = time.monotonic() + 300
        while project.ssh(f"test -e {failpoints.HOST_FLAG} && echo y || true").strip() != "y":
            assert deploy.poll() is None, deploy.communicate()
            assert time.monotonic() < deadline, "the deploy never reached the overlap"
            time.sleep(0.3)
        status = json.loads(project.invoke("status", "--json").stdout)[0]
        units = {u["name"]: u for u in status["units"]}
        assert units[TWIN]["active_state"] == "active" and units[TWIN]["overlap_twin"] is True
        assert units[APP]["active_state"] == "active"
        assert units[TWIN]["main_pid"] != units[APP]["main_pid"]
        versions = {project.get("/version")[1].strip() for _ in range(30)}
        assert versions <= {"ov1", "ov4"} and versions, versions
        project.ssh(f"rm -f {failpoints.HOST_FLAG}")
        out = deploy.communicate(timeout=300)[0]
        assert deploy.returncode == 0, out[-4000:]
    finally:
        if deploy.poll() is None:
            project.ssh(f"rm -f {failpoints.HOST_FLAG}")
            deploy.kill()
            deploy.wait()
    assert project.get("/version") == (200, "ov4\n")
    assert _twin_state(project) == "inactive"


def test_overlap_turned_off_and_on_again(project: Project) -> None:
    """A release built with overlap = false after an overlapped one: the twin (inactive, and
    gone from the release) is stopped before the swap and the app restarts plainly; turned on
    again, the next release restarts overlapped."""
    project.bring_to("ov1")
    plain = project.root / "deploy-plain.toml"
    text = (project.root / "deploy.toml").read_text()
    plain.write_text(text.replace("overlap = true", "overlap = false"))
    result = project.invoke("deploy", version="ov5", toml=plain)
    ok(result)
    assert f"stop {TWIN}: removed from the release" in result.stdout
    assert project.unit(TWIN, "LoadState") == "not-found"
    assert project.get("/version") == (200, "ov5\n")
    result = project.invoke("deploy", version="ov6")
    ok(result)
    assert f"overlap {APP}" in result.stdout
    assert project.get("/version") == (200, "ov6\n")
    assert project.unit(TWIN, "LoadState") == "loaded" and _twin_state(project) == "inactive"
