"""The fault suite's machinery, shared by tests/faults and bench/faults.py: a load of numbered
writes and version reads, a deploy or rollback stopped at a step boundary (a failpoint), the
fault done there (SIGKILL of the deployer, its SSH connection cut on the host, a full disk, a
hard reboot, Litestream killed), and what is checked afterwards.

Everything aims at the sandbox VM through its ports on 127.0.0.1; every loop here is bounded in
count and time.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import IO

from portable_deploy import failpoints
from portable_deploy.commands import deadman, trust
from portable_deploy.commands.layout import Layout
from portable_deploy.sandbox import mux
from tests.project import LAYOUT, STATE, Project, stopped

#: The fault project's dead-man switch: the shortest the config allows, so that the cases where
#: the deployer dies after the switch heal in seconds.
CONFIRM_TIMEOUT = 10
#: How long a case may take to heal before it counts as not healed.
HEAL_DEADLINE = CONFIRM_TIMEOUT + 150
PRINCIPAL = "deploy"


# -- load: numbered rows written, the version read -----------------------------------------------


@dataclass
class LoadReport:
    acked: list[str]  # the rows the app acknowledged (HTTP 200), in order
    write_failures: int
    versions: set[str]  # every version a read answered
    longest_gap: float  # the longest time without a successful read, in seconds
    reads: int


class Load:
    """A writer inserting numbered rows (each acknowledged row is remembered) and a reader of
    /version, on fresh connections, until stopped; bounded to MAX_SECONDS and MAX_ROWS."""

    MAX_SECONDS = 900.0
    MAX_ROWS = 50_000
    #: (the writer's pause between rows, the reader's between reads). The bench writes as fast
    #: as it measures and reads 20 times a second (its figure is the longest gap between
    #: answers). The suite checks what was answered, not how long it took: each request costs
    #: the TCG guest about 18 ms of CPU that the deploy needs, so it writes 5 rows and reads 4
    #: times a second (each row is an fsync).
    BENCH_PACE, SUITE_PACE = (0.02, 0.05), (0.2, 0.25)

    def __init__(self, port: int, prefix: str, pace: tuple[float, float] = BENCH_PACE) -> None:
        self.port, self.prefix = port, prefix
        self.write_pause, self.read_pause = pace
        self._stop = threading.Event()
        self._acked: list[str] = []
        self._write_failures = 0
        self._answers: list[tuple[float, str | None]] = []
        self._threads = [
            threading.Thread(target=self._write, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]

    def __enter__(self) -> Load:
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadReport:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        ok = [t for t, v in self._answers if v is not None]
        marks = [self._started, *ok, self._answers[-1][0] if self._answers else self._started]
        gap = max((b - a for a, b in pairwise(marks)), default=0.0)
        return LoadReport(
            list(self._acked),
            self._write_failures,
            {v for _, v in self._answers if v is not None},
            gap,
            len(self._answers),
        )

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() - self._started < self.MAX_SECONDS

    def _request(self, method: str, path: str, body: str | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"} if body else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def _write(self) -> None:
        n = 0
        while self._running() and n < self.MAX_ROWS:
            n += 1
            row = f"{self.prefix}-{n:06d}"
            try:
                status, _ = self._request(
                    "POST", "/api/scores", json.dumps({"player": row, "points": 1})
                )
            except OSError:
                status = 0
            if status == 200:
                self._acked.append(row)
            else:
                self._write_failures += 1
                time.sleep(0.05)
            time.sleep(self.write_pause)

    def _read(self) -> None:
        while self._running():
            try:
                status, body = self._request("GET", "/version")
                version = body.strip() if status == 200 else None
            except OSError:
                version = None
            self._answers.append((time.monotonic(), version))
            time.sleep(self.read_pause)


# -- the cases -----------------------------------------------------------------------------------

#: Faults: SIGKILL of the local invoke; the deploy's SSH connection cut on the host; the host's
#: disk filled; the VM rebooted hard; Litestream killed; none (the release itself is the fault).
SIGKILL, CUT, DISK_FULL, REBOOT, KILL_LITESTREAM, NONE = (
    "sigkill",
    "cut-ssh",
    "disk-full",
    "reboot",
    "kill-litestream",
    "none",
)
#: Not a failpoint of the tool's: the case stops at "reattached", holds a slow request in the
#: app, lets the restarts begin and does its fault while the app's restart job is running.
RESTARTING = "restarting"
#: How long the RESTARTING cases' request keeps the app's restart (its drain) going: long enough
#: to see the request held and let the restarts begin (a few SSH round trips on a loaded
#: machine) with the restart job still there to be seen; under the app's 10 s drain limit.
SLOW_MS = 7000


@dataclass(frozen=True)
class Case:
    operation: str  # "deploy" or "rollback"
    where: str | None  # a failpoint name, RESTARTING, or None (no stop)
    fault: str
    broken: str = "0"  # SCOREBOARD_BROKEN of the new release

    @property
    def name(self) -> str:
        where = f"@{self.where}" if self.where else ""
        broken = {"0": "", "1": " (failing health)", "start": " (exits at start)"}.get(
            self.broken, " (crash loop)"
        )
        return f"{self.operation}: {self.fault}{where}{broken}"

    @property
    def id(self) -> str:
        return self.name.replace(": ", "-").replace(" (", "-").replace(")", "").replace(" ", "-")

    @property
    def after_switch(self) -> bool:
        """Did the fault hit the deployer after the switch (so the host heals by itself)?"""
        return self.where in ("reattached", RESTARTING, "verifying", "rolling-back")


BOUNDARIES = ("upload", "uploaded", "checked", "reattached", RESTARTING, "verifying")

CASES: tuple[Case, ...] = (
    *(Case("deploy", where, fault) for where in BOUNDARIES for fault in (SIGKILL, CUT)),
    *(Case("deploy", "rolling-back", fault, broken="1") for fault in (SIGKILL, CUT)),
    *(
        Case("rollback", where, fault)
        for where in ("checked", "reattached", RESTARTING, "verifying")
        for fault in (SIGKILL, CUT)
    ),
    Case("deploy", "upload", DISK_FULL),
    Case("deploy", "reattached", REBOOT),
    Case("deploy", None, NONE, broken="start"),
    Case("deploy", None, NONE, broken="later"),
    Case("deploy", "reattached", KILL_LITESTREAM),
)


@dataclass
class Outcome:
    case: Case
    old: str
    new: str
    exit_code: int
    stdout: str
    stderr: str
    load: LoadReport
    heal_seconds: float  # from the fault to a healed host
    live: str | None  # after healing
    lost: list[str] = field(default_factory=list)  # acknowledged rows missing at the end
    problems: list[str] = field(default_factory=list)  # what a check found wrong
    next_deploy: int = -1  # exit code of the next plain deploy
    phases: dict[str, float] = field(default_factory=dict)  # seconds each part of the case took
    lock_held: bool = False  # after healing, before the next deploy
    staged: list[str] = field(default_factory=list)  # files left in staging, likewise

    @property
    def manual_steps(self) -> int:
        """What a user would have had to do by hand: only a next deploy that failed counts."""
        return 0 if self.next_deploy == 0 else 1


# -- on the VM -----------------------------------------------------------------------------------


def ssh(project: Project, script: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(
        project.vm.ssh_argv([script], batch=True),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"ssh {script!r}: {result.returncode} {result.stderr}")
    return result.stdout


#: Kill every SSH session on the VM but the one running this (the deployer's connection).
CUT_SSH = (
    'p=$$; mine=""; while [ "$p" -gt 1 ]; do mine="$mine $p"; '
    "p=$(cut -d' ' -f4 /proc/$p/stat); done; "
    "for s in $(pgrep -f '^sshd: root@'); do "
    'case " $mine " in *" $s "*) ;; *) kill -9 "$s";; esac; done'
)
FILL = "/var/tmp/portable-deploy-faults-fill"
#: All free space but 512 KiB: room for the lock and the manifest, not for the delta stream
#: (an app-only change sends a few MB).
FILL_DISK = (
    f"fallocate -l $(( $(stat -f -c '%f * %S' /) - 64 * 1024 * 1024 )) {FILL} && "
    f"{{ dd if=/dev/zero of={FILL}.top bs=1M 2>/dev/null || true; }} && truncate -s -512K {FILL}.top"
)


def _wait(what: str, condition: Callable[[], bool], timeout: float, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def _host_flag(project: Project) -> bool:
    return ssh(project, f"test -e {failpoints.HOST_FLAG} && echo yes || true").strip() == "yes"


def _release_flag(project: Project, first: str = "") -> None:
    ssh(project, f"{first + '; ' if first else ''}rm -f {failpoints.HOST_FLAG}")


def slow_request(project: Project, ms: int) -> threading.Thread:
    """A request the app holds for MS milliseconds: its restart waits for it (drain)."""

    def hold() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", project.vm.http_port, timeout=60)
        try:
            conn.request("GET", f"/debug/sleep?ms={ms}")
            conn.getresponse().read()
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def _app_holds_a_request(project: Project) -> bool:
    """A connection to port 80 that the app has accepted (one still in the socket's queue
    belongs to no process yet) and still holds 0.5 s later: the slow request, not the load's
    short ones."""
    out = ssh(
        project,
        "for i in 1 2; do ss -Htnp state established '( sport = :80 )' | grep scoreboard "
        "| awk '{print $4}'; echo ---; sleep 0.5; done",
    )
    first, second, _ = (out + "---\n---").split("---", 2)
    return bool(set(first.split()) & set(second.split()))


def _release_into_restart_job(project: Project, timeout: int = 60) -> None:
    """Let the paused reattach go on and return as soon as the app's restart job runs. One SSH
    command does both, so the watch is on before the restarts begin, and it looks on the VM
    itself every 50 ms (an SSH round trip per look misses a short job on a loaded machine).
    The watch is bounded by time, not by a count of looks: each look is a systemctl call,
    slow on a loaded TCG VM."""
    found = ssh(
        project,
        f"rm -f {failpoints.HOST_FLAG}; timeout {timeout} sh -c 'until systemctl list-jobs "
        "--no-legend --no-pager 2>/dev/null | grep -q scoreboard.service; do sleep 0.05; done' "
        "&& echo RUNNING; true",
        timeout=timeout + 30,
    )
    if "RUNNING" not in found:
        raise AssertionError(f"timed out after {timeout}s waiting for the app's restart job")


def _wait_ssh(project: Project, timeout: float) -> None:
    """Wait until the VM answers SSH again and has finished booting."""

    def up() -> bool:
        try:
            return (
                subprocess.run(
                    project.vm.ssh_argv(["systemctl is-system-running --wait"], batch=True),
                    capture_output=True,
                    timeout=120,
                    check=False,
                ).returncode
                != 255  # ssh's own failure; degraded or running is booted
            )
        except subprocess.TimeoutExpired:
            return False

    _wait("the VM to answer SSH again", up, timeout, every=2)


# -- one case ------------------------------------------------------------------------------------


#: The fault project's verify: a release that fails its health check is judged in 10 s, not 60.
VERIFY_TIMEOUT = 10


def prepare(project: Project) -> None:
    """The fault project: a short confirm timeout and verify timeout, two kept releases (the
    checks read every kept image), the app's debug route on
    (the slow request of the RESTARTING cases), and two releases deployed (one to roll back to)."""
    toml = project.root / "deploy.toml"
    text = toml.read_text().replace("keep_releases = 5", "keep_releases = 2")
    text = text.replace("[deploy]\n", f"[deploy]\nconfirm_timeout = {CONFIRM_TIMEOUT}\n")
    toml.write_text(text.replace("timeout = 60", f"timeout = {VERIFY_TIMEOUT}"))
    ssh(project, "printf 'SCOREBOARD_DEBUG=1\\n' > /etc/default/scoreboard")
    for version in ("fa", "fb"):
        result = project.deploy(version)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def run_case(
    project: Project, case: Case, new: str, pace: tuple[float, float] = Load.BENCH_PACE
) -> Outcome:
    """From what is live now (with a rollback target), run CASE under load (its writer and
    reader at PACE, see ``Load``): deploy NEW (or roll back), stopped at the case's boundary for
    its fault; wait until the host has healed, check it, then deploy once more, plainly (NEW, or
    a good NEW + "n" after a broken one)."""
    state = project.state()
    assert state.live is not None and state.previous is not None, state
    old = state.live
    if case.operation == "rollback":
        args, target, env = ["rollback"], state.previous, {}
    else:
        args = ["deploy", *(["--no-build"] if project.built(new) else [])]
        target, env = new, {"DEPLOY_VERSION": new, "SCOREBOARD_BROKEN": case.broken}
    if case.where is not None:
        env[failpoints.ENV] = "reattached" if case.where == RESTARTING else case.where
    marks = [time.monotonic()]
    with Load(project.vm.http_port, f"{case.id}-{new}", pace) as load:
        time.sleep(0.5)  # some rows before the deploy
        proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", *args],
            cwd=project.root,
            env=dict(project.env, PYTHONUNBUFFERED="1", **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out: dict[str, str] = {}

        def drain(name: str, stream: IO[str]) -> None:
            out[name] = stream.read()

        readers = [
            threading.Thread(target=drain, args=(name, stream), daemon=True)
            for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))
            if stream is not None
        ]
        for r in readers:
            r.start()
        try:
            faulted = _fault(project, case, proc)
            marks.append(time.monotonic())
            proc.wait(timeout=420)
        finally:  # never leave a deployer behind, whatever failed
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for r in readers:
            r.join(timeout=10)
        marks.append(time.monotonic())
        healed = wait_healed(project, (old, target))
        marks.append(time.monotonic())
        time.sleep(0.5)  # rows after healing
        report = load.stop()
    stdout, stderr = out.get("stdout", ""), out.get("stderr", "")
    outcome = Outcome(
        case,
        old,
        target,
        proc.returncode,
        stdout,
        stderr,
        report,
        healed - faulted,
        project.state().live,
    )
    check(project, outcome)
    marks.append(time.monotonic())
    after = new if case.broken == "0" else f"{new}n"
    result = project.deploy(after, *(["--no-build"] if project.built(after) else []))
    outcome.next_deploy = result.returncode
    if result.returncode != 0:
        outcome.problems.append(f"the next plain deploy failed: {result.stderr.strip()[-300:]}")
    elif project.state().live != after:
        outcome.problems.append(f"the next plain deploy did not make {after} live")
    marks.append(time.monotonic())
    names = ("to the fault", "deployer's end", "heal", "checks", "next deploy")
    outcome.phases = {n: round(b - a, 1) for n, (a, b) in zip(names, pairwise(marks), strict=True)}
    return outcome


def _fault(project: Project, case: Case, proc: subprocess.Popen[str]) -> float:
    """Wait for the case's boundary, do its fault there; the time it was done."""
    if case.where is None:
        return time.monotonic()
    on_host = case.where in failpoints.ON_HOST or case.where == RESTARTING

    def reached() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"invoke ended before {case.where}: {proc.returncode}")
        return _host_flag(project) if on_host else stopped(proc.pid)

    _wait(f"the deployer to reach {case.where}", reached, 300, every=0.3 if on_host else 0.05)
    if case.where == RESTARTING:
        slow_request(project, SLOW_MS)
        # The app must hold it before the restarts begin, or the restart has nothing to drain
        # and is over before anyone sees its job (a loaded machine delays the request).
        _wait("the app to hold the slow request", lambda: _app_holds_a_request(project), 30, 0.2)
        _release_into_restart_job(project)
    at = time.monotonic()
    if case.fault == SIGKILL:
        os.kill(proc.pid, signal.SIGKILL)
        if case.where != RESTARTING and on_host:
            _release_flag(project)
    elif case.fault == CUT:
        if on_host and case.where != RESTARTING:
            _release_flag(project, first=CUT_SSH)
        else:
            ssh(project, CUT_SSH)
            if not on_host:
                os.kill(proc.pid, signal.SIGCONT)
    elif case.fault == DISK_FULL:
        ssh(project, FILL_DISK)
        os.kill(proc.pid, signal.SIGCONT)
        try:
            proc.wait(timeout=300)
        finally:
            ssh(project, f"rm -f {FILL} {FILL}.top")
    elif case.fault == REBOOT:
        hard_reboot(project)
        _wait_ssh(project, 300)
        # The deployer waits on a connection whose peer rebooted (its reattach would time out
        # after minutes); it has nothing left to do that the host has not done.
        wait_healed(project, ())
        proc.kill()
    elif case.fault == KILL_LITESTREAM:
        _release_flag(project, first="systemctl kill -s KILL scoreboard-litestream.service")
    return at


def hard_reboot(project: Project) -> None:
    """Reset the VM from inside, with no sync (a power cut, as far as the guest can tell), and
    wait until it has booted again (with a new shared connection, if one ran)."""
    with contextlib.suppress(subprocess.TimeoutExpired):  # the connection dies with the kernel
        subprocess.run(
            project.vm.ssh_argv(["echo b > /proc/sysrq-trigger"], batch=True),
            capture_output=True,
            timeout=10,
            check=False,
        )
    shared = mux.stop(project.vm)  # its connection died with the kernel
    time.sleep(5)
    _wait_ssh(project, 300)
    if shared:
        mux.share(project.vm)


def _healed(project: Project) -> str | None:
    """The version the app answers if the host has healed (no switch armed or firing, no
    failpoint paused, one release attached, the app answering), else None. A lock left by a
    deployer killed before its switch may stay: the next deploy clears it."""
    text = ssh(
        project,
        f"test -e {LAYOUT.heartbeat} && echo armed; "
        f"test -e {failpoints.HOST_FLAG} && echo paused; "
        f"systemctl -q is-active {deadman.unit(LAYOUT)}.service && echo firing; "
        # The attached release, as the tool reads it: the units' RootImage= (portablectl list
        # shows an image a sidecar still runs from as "running" too).
        "grep -rhs '^RootImage=/var/lib/portables/scoreboard_' /etc/systemd/system.attached/ "
        "| sort -u | wc -l",
        timeout=30,
        check=False,
    )
    words = text.split()
    if not words or words[-1] != "1" or len(words) > 1:
        return None
    status, body = project.get("/version")
    return body.strip() if status == 200 else None


def wait_healed(project: Project, versions: tuple[str, ...]) -> float:
    """Wait until the host has healed (and answers one of VERSIONS, if given); the time."""

    def healed() -> bool:
        try:
            answer = _healed(project)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return answer is not None and (not versions or answer in versions)

    try:
        _wait("the host to heal", healed, HEAL_DEADLINE, every=1)
    except AssertionError as e:
        raise AssertionError(f"{e}; on the host:\n{_heal_report(project)}") from None
    return time.monotonic()


def _heal_report(project: Project) -> str:
    """What the host shows when it did not heal: the probe's findings, jobs, the dead-man
    switch's units, the state dir, the audit log's tail, the app's version."""
    unit = deadman.unit(LAYOUT)
    try:
        out = ssh(
            project,
            f"echo '# probe'; test -e {LAYOUT.heartbeat} && echo armed; "
            f"test -e {failpoints.HOST_FLAG} && echo paused; "
            "grep -rhs '^RootImage=' /etc/systemd/system.attached/ | sort | uniq -c; "
            "echo '# jobs'; systemctl list-jobs --no-pager; "
            f"echo '# switch'; systemctl status --no-pager -n 20 {unit}.service {unit}.timer; "
            f"echo '# state'; ls -la {LAYOUT.state_dir}; "
            f"echo '# audit'; tail -n 3 {LAYOUT.audit_log}; "
            "echo '# units'; systemctl --no-pager list-units 'scoreboard*'; "
            "echo '# version'; curl -s -m 5 http://127.0.0.1/version || true",
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(no report: {e})"
    return out[-6000:]


def check(project: Project, outcome: Outcome) -> None:
    """What must hold after any fault: the old or the new release answered, never another; no
    acknowledged row is lost; exactly one release attached (checked by healing); every image
    under a release name matches its signed sha256; the audit names what happened."""
    problems = outcome.problems
    strange = outcome.load.versions - {outcome.old, outcome.new}
    if strange:
        problems.append(f"answered as {sorted(strange)}, neither {outcome.old} nor {outcome.new}")
    if outcome.live not in (outcome.old, outcome.new):
        problems.append(f"{outcome.live} is live, neither {outcome.old} nor {outcome.new}")
    left = ssh(project, f"test -e {LAYOUT.lock} && echo LOCKED; ls -A {LAYOUT.incoming_dir}")
    outcome.lock_held = "LOCKED" in left.split()
    outcome.staged = [name for name in left.split() if name != "LOCKED"]
    status, body = project.get("/api/scores")
    present = {row["player"] for row in json.loads(body)} if status == 200 else set()
    outcome.lost = [row for row in outcome.load.acked if row not in present]
    if outcome.lost:
        problems.append(f"{len(outcome.lost)} acknowledged rows lost, first {outcome.lost[0]}")
    if not outcome.load.acked:
        problems.append("the writer got no row acknowledged")
    problems.extend(image_problems(project))


#: For each image under a release name: its manifest's signature, then its sha256 against the
#: signed manifest (the tool's own two checks), in one round trip; prints the images that fail.
def _image_checks() -> str:
    layout = Layout("scoreboard")
    signature = trust.verify_signature(
        layout.manifest("$r"), layout.signature("$r"), PRINCIPAL, layout.allowed_signers
    ).render(reveal=True)
    matches = trust.image_matches_manifest(layout.image("$r"), layout.manifest("$r"), "$r").render(
        reveal=True
    )
    # The builders quote paths with "$r" in them as literals; let the loop's shell expand it.
    signature, matches = (re.sub(r"'([^']*\$r[^']*)'", r'"\1"', c) for c in (signature, matches))
    return (
        'cd /var/lib/portables && for i in scoreboard_*.raw; do [ -e "$i" ] || continue; '
        "r=${i%.raw}; "
        f'{{ {signature} && {matches}; }} >/dev/null 2>&1 || echo "$i"; done'
    )


def image_problems(project: Project) -> list[str]:
    """Every image under a release name matches its signed sha256 (and its signature holds)."""
    bad = ssh(project, _image_checks()).split()
    return [f"{image} does not match its signed manifest" for image in bad]


@contextmanager
def no_fault_left(project: Project) -> Iterator[None]:
    """Whatever a case leaves behind (a fill file, a failpoint flag) goes, even on failure."""
    try:
        yield
    finally:
        ssh(project, f"rm -f {FILL} {FILL}.top {failpoints.HOST_FLAG}", check=False)


def audit_tail(project: Project, n: int = 3) -> list[dict[str, str]]:
    text = ssh(project, f"tail -n {n} {STATE}/audit.jsonl 2>/dev/null || true")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def shown(outcome: Outcome) -> str:
    """The deployer's output in one line per stream, for a failure message."""
    return f"exit {outcome.exit_code}; stdout: {shlex.quote(outcome.stdout[-1500:])}; stderr: {shlex.quote(outcome.stderr[-1500:])}"
