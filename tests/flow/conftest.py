"""A recording fake host: answers commands from a script of regex responders, logs their order."""

from __future__ import annotations

import hashlib
import re
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from portable_deploy import profiles, tls
from portable_deploy.command import Command, Op, Token
from portable_deploy.commands import trust
from portable_deploy.commands.layout import Layout
from portable_deploy.commands.state import SECTION
from portable_deploy.config import (
    AppConfig,
    BuildConfig,
    Config,
    HostConfig,
    ImageConfig,
    SignConfig,
    VerifyConfig,
)
from portable_deploy.facts import AuditRecord, audit_log
from portable_deploy.host import Host, Readable, Result, Target
from portable_deploy.image import Artifact
from portable_deploy.manifest import Manifest
from portable_deploy.release import Signed
from portable_deploy.units import parse_unit

Responder = Result | Callable[[str], Result]
AUDIT_LOG = Layout("scoreboard").audit_log

UNITS = {
    "scoreboard.service": "[Service]\nExecStart=/usr/bin/scoreboard\n",
    "scoreboard-http.socket": "[Socket]\nListenStream=80\nService=scoreboard.service\n",
    "scoreboard-litestream.service": (
        "[Service]\nExecStart=/usr/bin/litestream replicate -config /etc/litestream.yml\n"
    ),
    "scoreboard-restore.service": "[Service]\nType=oneshot\nExecStart=/usr/bin/litestream restore\n",
}


def manifest(
    version: str,
    *,
    app: str = "a",
    litestream: str = "b",
    socket: str = "5",
    units: dict[str, str] = UNITS,
) -> Manifest:
    files = {
        "usr/bin/scoreboard": "sha256:" + app * 64,
        "usr/bin/litestream": "sha256:" + litestream * 64,
        "etc/litestream.yml": "sha256:" + "c" * 64,
    }
    for name in units:
        files[f"usr/lib/systemd/system/{name}"] = "sha256:" + (
            socket * 64 if name.endswith(".socket") else "d" * 64
        )
    digest = hashlib.sha256(_image_text(version, app, litestream, socket, units)).hexdigest()
    return Manifest(
        name="scoreboard",
        version=version,
        image_sha256=digest,
        image_size=1000,
        compression="zstd",
        git_commit=None,
        git_dirty=False,
        files=files,
        units=tuple(units),
        unit_info={n: parse_unit(n, t).to_dict() for n, t in units.items()},
    )


def _image_text(
    version: str, app: str, litestream: str, socket: str, units: dict[str, str]
) -> bytes:
    return f"image of {version}{app}{litestream}{socket}{sorted(units)}".encode()


def image_bytes(m: Manifest) -> bytes:
    """The bytes of M's image in dist/: their sha256 is the manifest's, as after a build."""
    files = m.files
    app = files["usr/bin/scoreboard"].removeprefix("sha256:")[0]
    litestream = files["usr/bin/litestream"].removeprefix("sha256:")[0]
    socket = next(
        (h.removeprefix("sha256:")[0] for n, h in files.items() if n.endswith(".socket")), "5"
    )
    units = {u: "" for u in m.units}
    return _image_text(m.version, app, litestream, socket, units)


def signed(m: Manifest) -> Signed:
    """A release in a temp dist/: the image file is real (upload hashes what it sends)."""
    dist = Path(tempfile.mkdtemp(prefix="flow-dist-"))
    image = dist / m.image_name
    image.write_bytes(image_bytes(m))
    return Signed(Artifact(image, dist / m.manifest_name, m), dist / f"{m.manifest_name}.sig")


def arrived(m: Manifest) -> Callable[[str], Result]:
    """Responder for the staged image: sha256sum prints the hash of what was sent."""
    digest = hashlib.sha256(image_bytes(m)).hexdigest()
    return lambda line: Result(f"{digest}  /x\n" if "sha256sum" in line else "/x\n", "", 0)


def config(tmp_path: Path) -> Config:
    return Config(
        path=tmp_path / "deploy.toml",
        app=AppConfig("scoreboard", "1"),
        build=BuildConfig(),
        image=ImageConfig(tree=None, units=tmp_path / "units"),
        sign=SignConfig(),
        hosts={"fake": HostConfig("fake", address="fake")},
        verify=VerifyConfig(settle=0, timeout=2),
    )


#: The digest of the tool's own profile, as a host that deployed with it reports it.
HARDENED = profiles.digest(profiles.text(profiles.DEFAULT))


@dataclass(eq=False)
class FakeHost(Host):
    """A ``host.Host`` whose transport is a script: the real ``run``/``put`` (dry run, echo, check)
    on top of responders, with every command that reached the transport in ``log``.

    Commands a dry run skips never reach the transport; they are logged as ``(dry-run) LINE``
    from what ``Host`` echoes.
    """

    responders: list[tuple[str, Responder]] = field(default_factory=list)
    name: str = "fake"
    dry_run: bool = False
    health: int = 200
    version: str = ""
    log: list[str] = field(default_factory=list)
    #: What the one-round-trip state read reports.
    info: str = ""
    live: str | None = None
    manifests: dict[str, Manifest] = field(default_factory=dict)
    audit: str = ""
    #: (builder source, result or exception, times left or None for always, regex or ""):
    #: commands made by that builder (whose line matches) get that result, or raise it.
    failures: list[tuple[str, Result | BaseException, list[int] | None, str]] = field(
        default_factory=list
    )
    #: Raised by the next image upload (SFTP) when set: a full disk hits the big file.
    put_error: BaseException | None = None
    #: Digests of the profile the live units were attached with, and of the host's copy of the
    #: configured one (None: absent). By default both are the tool's own profile, as installed.
    attached_profile: str | None = HARDENED
    host_profile: str | None = HARDENED
    #: Secrets on the host: the digest salt, the sets kept, each unit's secrets drop-in.
    secrets_salt: str | None = None
    secret_sets: set[str] = field(default_factory=set)
    secret_dropins: dict[str, str] = field(default_factory=dict)
    #: HTTPS: the certificate the app presents, and why TLS refuses it (None: it verifies).
    certificate: tls.Certificate | None = None
    tls_failure: tls.Failure | None = None
    tls_detail: str = ""
    #: HTTPS answers given first, one per request, before the steady state above.
    handshakes: list[tls.Answer] = field(default_factory=list)
    #: What SFTP reads find (``Host.get``), and what streamed uploads wrote, by remote path.
    files: dict[str, bytes] = field(default_factory=dict)
    streams: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(Target(self.name, "fake"), echo=self._shown, dry_run=self.dry_run)

    def state(self, line: str) -> Result:
        m = self.manifests.get(self.live or "")
        out = (
            f"{SECTION}info\n{self.info}"
            f"{SECTION}attached\n"
            + (f"RootImage=/var/lib/portables/{self.live}.raw\n" * 4 if self.live else "")
            + f"{SECTION}live-manifest\n"
            + (m.to_json() if m else "")
            + f"{SECTION}audit\n{self.audit}"
            + f"{SECTION}profile-attached\n"
            + (f"{self.attached_profile}\n" if self.live and self.attached_profile else "")
            + f"{SECTION}profile\n"
            + (f"{self.host_profile}\n" if self.host_profile else "")
            + f"{SECTION}secrets-salt\n"
            + (f"{self.secrets_salt}\n" if self.secrets_salt else "")
            + f"{SECTION}secret-sets\n"
            + "".join(f"{i}\n" for i in sorted(self.secret_sets))
            + f"{SECTION}secrets-dropins\n"
            + "".join(f"=== {u}\n{t}" for u, t in sorted(self.secret_dropins.items()))
        )
        return Result(out, "", 0)

    def on(self, pattern: str, response: Responder) -> None:
        """Answer commands whose rendered line matches PATTERN (the newest responder wins)."""
        self.responders.insert(0, (pattern, response))

    def fail(
        self,
        builder: Callable[..., Command],
        result: Result | BaseException,
        times: int | None = None,
        matching: str = "",
    ) -> None:
        """Answer every command made by BUILDER (``trust.verify_signature``) with RESULT, or raise
        it as the transport would (``paramiko.SSHException``); only TIMES times if given, only
        for lines that MATCHING (a regex) finds something in if given."""
        source = builder.source  # type: ignore[attr-defined]
        self.failures.insert(0, (source, result, None if times is None else [times], matching))

    def _shown(self, name: str, line: str, skipped: bool) -> None:
        if skipped:
            self.log.append("(dry-run) " + line)

    def _execute(self, command: Command, timeout: float | None) -> Result:
        line = self._logged(command)
        for source, failure, left, matching in self.failures:
            if source not in command.sources or (matching and not re.search(matching, line)):
                continue
            if left is None or left[0] > 0:
                if left is not None:
                    left[0] -= 1
                if isinstance(failure, BaseException):
                    raise failure
                return failure
        if SECTION in line:
            return self.state(line)
        if '"$7" = show' in line and shlex.split(line)[-2] == "show":
            return self._checked(line)
        return self._respond(line)

    def _respond(self, line: str) -> Result:
        for pattern, response in self.responders:
            if re.search(pattern, line):
                return response(line) if callable(response) else response
        return Result("", "", 0)

    def _checked(self, line: str) -> Result:
        """``trust.check_release(show=True)``: the manifest as ``cat`` of it answers (a
        responder, else ``manifests``), then the checks, passed."""
        release = shlex.split(line)[-1]
        path = f"/var/lib/portable-deploy/scoreboard/releases/{release}.manifest.json"
        text = self._respond(f"cat {path}").stdout
        if not text.strip() and release in self.manifests:
            text = self.manifests[release].to_json()
        if not text.strip():
            return Result("", f"cat: {path}: No such file or directory", trust.NO_MANIFEST)
        return Result(f"{text}\n{trust.CHECKED}\n{'0' * 64}\n", "", 0)

    def _logged(self, command: Command) -> str:
        """Log COMMAND; the dead-man switch's parts that ride on it (``deadman.*``) are logged as
        their own entries first (``deadman.arm``), so the rest reads exactly as it would without
        them. Returns the line the responders and ``fail(matching=)`` see: the rest (the
        switch's script names the previous release, which is not what the command does now)."""
        if not any(src.startswith("deadman.") for src in command.sources):
            line = command.render()
            self.log.append(line)
            return line
        rest, kinds = _without_deadman(command.tokens)
        self.log.extend(f"deadman.{kind}" for kind in kinds)
        line = rest.render() if rest is not None else ""
        if rest is not None:
            self.log.append(line)
        return line

    def _put(self, local: Path, remote: str, progress: Callable[[int, int], None] | None) -> None:
        self.log.append(f"put {remote}")
        if self.put_error is not None and remote.endswith(".raw"):
            error, self.put_error = self.put_error, None
            raise error

    def _put_stream(
        self,
        stream: Readable,
        size: int,
        remote: str,
        start: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.log.append(f"put {remote}" + (f" from {start}" if start else ""))
        if self.put_error is not None and remote.endswith((".raw", ".delta")):
            error, self.put_error = self.put_error, None
            raise error
        stream.seek(start)
        self.streams[remote] = stream.read(size - start)

    def _get(self, remote: str) -> bytes:
        self.log.append(f"get {remote}")
        return self.files.get(remote, b"")

    def _http_get(self, port: int, path: str, timeout: float) -> tuple[int, str]:
        self.log.append(f"GET :{port}{path}")
        return (self.health, "ok") if path == "/healthz" else (200, self.version)

    def _https_get(
        self, port: int, path: str, name: str, ca_file: Path | None, timeout: float
    ) -> tls.Answer:
        self.log.append(f"GET https://{name}:{port}{path}")
        if self.handshakes:
            return self.handshakes.pop(0)
        if self.tls_failure is not None:
            return tls.Answer(
                certificate=self.certificate, failure=self.tls_failure, detail=self.tls_detail
            )
        status, body = (self.health, "ok") if path == "/healthz" else (200, self.version)
        return tls.Answer(status, body, self.certificate)

    def audit_lines(self) -> list[str]:
        """The commands that appended to the audit log, in order."""
        return [line for line in self.log if _audit_record(line) is not None]

    def audited(self) -> list[AuditRecord]:
        """The records appended to the audit log, in order."""
        return audit_log("\n".join(str(_audit_record(line)) for line in self.audit_lines()))

    def verbs(self) -> list[str]:
        """The log with long shell snippets shortened to what they do, without the dead-man
        switch's heartbeats (they ride on verify's calls; ``log`` has them)."""
        return [_verb(line) for line in self.log if line != "deadman.heartbeat"]


def _audit_record(line: str) -> str | None:
    """The record that LINE (a files.append_log of the audit log) appends, else None."""
    if AUDIT_LOG not in line or line.startswith("(dry-run)"):
        return None
    words = shlex.split(line)
    return words[5] if words[:2] == ["sh", "-c"] and words[4:5] == [AUDIT_LOG] else None


#: How the dead-man switch's parts are told apart in a rendered command.
_DEADMAN_MARKS = (
    ("arm", "systemd-run --quiet --unit="),
    ("hold", 'exit 3; fi; [ ! -e "$1" ]'),
    ("disarm", "the dead-man switch has fired"),
    ("heartbeat", "deadman.heartbeat"),
)


def _top_level_parts(tokens: tuple[Token, ...]) -> list[tuple[Token, ...]]:
    parts: list[list[Token]] = [[]]
    depth = 0
    for t in tokens:
        if isinstance(t, Op) and t.text == "{":
            depth += 1
        elif isinstance(t, Op) and t.text == "}":
            depth -= 1
        elif depth == 0 and isinstance(t, Op) and t.text == "&&":
            parts.append([])
            continue
        parts[-1].append(t)
    return [tuple(p) for p in parts]


def _without_deadman(tokens: tuple[Token, ...]) -> tuple[Command | None, list[str]]:
    """The command without its ``deadman.*`` parts (rebuilt with ``then``, so it renders as it
    was built), and the kinds of the parts taken out, in order."""
    kept: list[Command] = []
    kinds: list[str] = []
    for part in _top_level_parts(tokens):
        grouped = len(part) >= 3 and part[0] == Op("{") and part[-2:] == (Op(";"), Op("}"))
        if grouped:
            inner, found = _without_deadman(part[1:-2])
            kinds += found
            if inner is not None:
                kept.append(inner)
            continue
        # An audit line's message may quote a whole command, and the lock's acquire carries
        # deadman.finish inside: neither is a part of the switch.
        text = Command(part).render()
        kind = (
            None
            if 'ln "$tmp"' in text or _audit_record(text) is not None
            else next((k for k, mark in _DEADMAN_MARKS if mark in text), None)
        )
        if kind:
            kinds.append(kind)
        else:
            kept.append(Command(part))
    result: Command | None = None
    for c in kept:
        result = c if result is None else result.then(c)
    return result, kinds


def _verb(line: str) -> str:
    # A delta stream is named by its recipe's id: "put .../partial/scoreboard_2.delta".
    line = re.sub(r"(/partial/[^/ ]+)\.[0-9a-f]{16}\.delta", r"\1.delta", line)
    for needle, name in (
        ('ln "$tmp"', "lock.acquire"),
        ('mv "$1" "$moved"', "lock.release"),
        ("### portable-deploy:", "state"),
        ("systemctl --version", "host_info"),
        ("head -c", "delta.assemble"),
        ('"$7" = show', "check-release"),
        ("ssh-keygen -Y verify", "verify-signature"),
        ("image_sha256", "verify-image-hash"),
        ('sha256sum "$1" || true', "sha256"),
        ('echo "image ', "inventory"),
        ('[ "${f##*/}" != "$2" ]', "delta.prepare"),
        ('cat "$1" || true', "cat"),
        ("for f in $2", "listing"),
        ('for p in "$@"', "exists"),
        ("systemctl show", "systemctl show"),
        ("system.attached", "attached-images"),
        ("loop/backing_file", "images-in-use"),
        ("{ { sync /var/lib/portable-deploy/", "install"),
    ):
        if needle in line:
            return ("(dry-run) " if line.startswith("(dry-run)") else "") + name
    return line


HOST_INFO = Result(
    "systemd=252\nportablectl=/usr/bin/portablectl\nssh_keygen=/usr/bin/ssh-keygen\n"
    "trust=yes\nstate=yes\nuser=root\n",
    "",
    0,
)


def active_units(line: str) -> Result:
    blocks = []
    for unit in re.findall(r"(scoreboard[\w-]*\.(?:service|socket))", line):
        blocks.append(
            f"Id={unit}\nLoadState=loaded\nActiveState=active\nSubState=running\nResult=success\n"
            "NRestarts=0\nMainPID=42\nActiveEnterTimestampMonotonic=1\nActiveEnterTimestamp=x\n"
        )
    return Result("\n".join(blocks), "", 0)


class FakeClock:
    """``time`` for the verify polling: ``sleep`` advances ``monotonic`` instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Verify polls as often as with the real clock, without the wall-clock wait (mutation runs)."""
    clock = FakeClock()
    monkeypatch.setattr("portable_deploy.verify.time", clock)
    return clock


@pytest.fixture
def live_v1() -> FakeHost:
    """A host where scoreboard_1 is live and scoreboard_2 is not there yet."""
    host = FakeHost(info=HOST_INFO.stdout, live="scoreboard_1")
    v1 = manifest("1")
    host.manifests = {"scoreboard_1": v1}
    host.audit = (
        '{"at":"t1","event":"deploy","live":"scoreboard_1","release":"scoreboard_1",'
        '"result":"ok","user":"u","origin":"o"}\n'
    )
    host.on(r"systemctl show", active_units)
    host.on(r"releases/scoreboard_1\.manifest\.json$", Result(v1.to_json(), "", 0))
    host.on(r"incoming/scoreboard_2\.raw$", arrived(manifest("2", app="e")))
    host.on(r"for f in", Result("scoreboard_1.raw\nscoreboard_2.raw\n", "", 0))
    return host
