"""`invoke init`, the pure half: the answers, and the files they make, as {path: text}.

The files are the reference app's set-up with the app's name in it: a commented deploy.toml, a
two-line tasks.py, units/ (one .socket per port, the service, Litestream and its restore), an
image/ skeleton and the .gitignore lines. Nothing here touches the disk but ``conflicts``, which
only looks; the init task writes, and makes the signing key (``sign.generate_key``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import app_name_problem, dns_name_problem
from .errors import DeployError

#: Where the files go, relative to the app's repo.
DEPLOY_TOML = "deploy.toml"
TASKS_PY = "tasks.py"
GITIGNORE = ".gitignore"
SIGNING_KEY = ".deploy/signing_key"
#: Lines .gitignore must hold: the build's outputs and the signing key's directory.
GITIGNORE_LINES = ("/dist/", "/build/", "/.deploy/")
#: The socket's name (FileDescriptorName=, and NAME-SOCKET.socket) for well-known ports.
PORT_NAMES = {80: "http", 443: "https"}
_PORT_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_SSH_WORD = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class Port:
    """A port systemd holds for the app: ``NAME-SOCKET.socket`` with ``ListenStream=NUMBER``."""

    number: int
    #: FileDescriptorName= (what the app sees in $LISTEN_FDNAMES) and the socket unit's suffix.
    name: str

    def __str__(self) -> str:
        return f"{self.number}/{self.name}"


@dataclass(frozen=True)
class Answers:
    """What `invoke init` asks (or takes as flags)."""

    name: str
    #: The app's binary in the repo, after the build command ran (None: no binary, an error).
    binary: str | None
    #: A shell command line that builds ``binary`` (None: the binary is made elsewhere).
    build: str | None = None
    ports: tuple[Port, ...] = (Port(80, "http"),)
    litestream: bool = False
    #: The public DNS name the app gets its certificate for (None: no TLS).
    domain: str | None = None
    #: The ACME account's contact address (TLS only; optional).
    email: str | None = None
    #: An SSH host (name, address or ~/.ssh/config alias); None: the local sandbox VM.
    host: str | None = None

    @property
    def tls(self) -> bool:
        return self.domain is not None


def parse_port(spec: str) -> Port:
    """``80/http``, ``443`` or ``8080/api`` -> Port; a bad spec is a DeployError naming --port."""
    number_text, _, name = spec.strip().partition("/")
    example = "write it like --port 80/http or --port 443 (NUMBER[/NAME])"
    if not number_text.isdigit() or not 1 <= int(number_text) <= 65535:
        raise DeployError(
            f"--port {spec}: expected a port number from 1 to 65535, found {number_text!r}", example
        )
    number = int(number_text)
    name = name or PORT_NAMES.get(number, f"port{number}")
    if not _PORT_NAME.fullmatch(name):
        raise DeployError(
            f'--port {spec}: expected a socket name of lowercase letters, digits and "-" '
            f"(starting with a letter, at most 32), found {name!r}",
            "the name becomes FileDescriptorName= and the unit NAME-SOCKET.socket; " + example,
        )
    return Port(number, name)


def with_tls_ports(ports: Iterable[Port]) -> tuple[Port, ...]:
    """PORTS plus 80/http (ACME's http-01 and the redirect) and 443/https when missing."""
    out = list(ports)
    for number, name in ((80, "http"), (443, "https")):
        if all(p.number != number for p in out):
            out.append(Port(number, name))
    return tuple(out)


def check(answers: Answers) -> None:
    """A DeployError naming the flag for the first answer init cannot use."""
    problem = app_name_problem(answers.name)
    if problem:
        raise DeployError(f"--name {answers.name}: {problem[0]}", problem[1])
    if not answers.binary:
        raise DeployError(
            "no binary: init needs the app's binary (--binary PATH) or the command that "
            "builds it (--build CMD)",
            'pass --binary build/APP, or --build "go build -o build/APP ." (with --binary '
            "if it writes elsewhere than build/APP)",
        )
    if answers.binary.startswith("/") or ".." in Path(answers.binary).parts:
        raise DeployError(
            f"--binary {answers.binary}: expected a path inside the repo, relative to it",
            "write it like build/APP: deploy.toml names it relative to itself",
        )
    if answers.build is not None and not answers.build.strip():
        raise DeployError("--build: expected a shell command line, found nothing", 'e.g. "make"')
    if not answers.ports:
        raise DeployError("no port: the app needs at least one", "pass --port 80/http")
    for attr, what in (("number", "port"), ("name", "socket name")):
        seen = [getattr(p, attr) for p in answers.ports]
        twice = sorted({str(v) for v in seen if seen.count(v) > 1})
        if twice:
            raise DeployError(
                f"--port: the {what} {twice[0]} is given twice",
                "give each port once, each with its own name",
            )
    if answers.domain is not None:
        bad = dns_name_problem(answers.domain)
        if bad:
            raise DeployError(f"--domain {answers.domain}: {bad[0]}", bad[1])
    if answers.email is not None and (
        not _SSH_WORD.fullmatch(answers.email) or "@" not in answers.email
    ):
        raise DeployError(
            f"--email {answers.email}: expected an e-mail address", "e.g. you@example.org"
        )
    if answers.host is not None and (
        not _SSH_WORD.fullmatch(answers.host) or answers.host.startswith("-")
    ):
        raise DeployError(
            f"--host {answers.host}: expected a host name, IP address or ssh alias",
            "e.g. --host 203.0.113.10, or leave it out for the local sandbox VM",
        )


def render(answers: Answers) -> dict[str, str]:
    """Every file init writes, by path relative to the repo (.gitignore is merged, not written)."""
    check(answers)
    n = answers.name
    files = {
        DEPLOY_TOML: _deploy_toml(answers),
        TASKS_PY: f'"""Deploy tasks for {n}: `invoke --list`."""\n\n'
        "from portable_deploy.tasks import ns  # noqa: F401\n",
        "image/usr/lib/os-release": _os_release(n),
        f"units/{n}.service": _service(answers),
    }
    for port in answers.ports:
        files[f"units/{n}-{port.name}.socket"] = _socket(n, port)
    if answers.litestream:
        files["image/etc/litestream.yml"] = _litestream_yml(n)
        files[f"units/{n}-litestream.service"] = _litestream_service(n)
        files[f"units/{n}-restore.service"] = _restore_service(n)
    return dict(sorted(files.items()))


def conflicts(root: Path, files: Mapping[str, str]) -> list[str]:
    """The paths in FILES that already exist under ROOT (init would overwrite them)."""
    return [path for path in files if (root / path).is_symlink() or (root / path).exists()]


def gitignore(current: str | None) -> str | None:
    """CURRENT .gitignore with init's lines added, or None when it has them all."""
    text = current or ""
    have = {line.strip().strip("/") for line in text.splitlines()}
    missing = [line for line in GITIGNORE_LINES if line.strip("/") not in have]
    if not missing:
        return None
    if text and not text.endswith("\n"):
        text += "\n"
    return (
        text + "# portable-deploy: build outputs and the signing key\n" + "\n".join(missing) + "\n"
    )


# --- templates -----------------------------------------------------------------------------------


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def _deploy_toml(a: Answers) -> str:
    n = a.name
    commands = []
    if a.build:
        commands.append(a.build)
    if a.litestream:
        commands.append('mkdir -p build && cp "$(command -v litestream)" build/litestream')
    files = {f"usr/bin/{n}": a.binary or ""}
    if a.litestream:
        files["usr/bin/litestream"] = "build/litestream"
    lines = [
        f"# portable-deploy: how {n} is built into a portable image, signed and deployed.",
        '# Every key is checked when a task reads this file (README: "deploy.toml reference").',
        "",
        "[app]",
        f"name = {_toml(n)}",
        '# "git": `git describe --tags --always --dirty` (the repo needs a commit).',
        'version = "git"',
        "",
        "[build]",
        "# Run in order with `sh -c` from this directory before the image is packed; they get",
        "# APP_NAME, APP_VERSION and DEPLOY_ROOT, and this Python environment's bin/ first on PATH.",
        "commands = [" + ", ".join(_toml(c) for c in commands) + "]",
        "",
        "[image]",
        "# Copied into the image root: os-release (and configs the units read).",
        'tree = "image"',
        "# The units: a .socket per port holds it for the app, so a restart never closes it.",
        'units = "units"',
        'compression = "zstd"',
        "",
        "[image.files]",
        "# Image path = file here, made by the [build] commands.",
        *(f"{_toml(dest)} = {_toml(src)}" for dest, src in files.items()),
        "",
        "[sign]",
        "# Made by `invoke init`; hosts trust its .pub. Keep it out of git (.gitignore has it).",
        'key = ".deploy/signing_key"',
        'principal = "deploy"',
        "",
    ]
    if a.host is None:
        lines += [
            "# A Debian 12 VM on this machine (`invoke sandbox.up`); the first deploy boots and",
            '# sets it up. Add [hosts.prod] with address = "203.0.113.10" for a real host.',
            "[hosts.sandbox]",
            "sandbox = true",
        ]
    else:
        lines += [
            "# Prepare it once: `invoke host.setup` (root over SSH, Debian 12 with systemd-container).",
            "[hosts.prod]",
            f"address = {_toml(a.host)}",
        ]
    lines += [
        "",
        "[deploy]",
        '# Attached with the tool\'s hardened portable profile (README: "Hardening").',
        'profile = "pd-hardened"',
        "# Overlapped switches: the new release starts beside the old one on the same sockets",
        "# (a twin of the service that the build adds), then the old one drains: no request",
        "# waits for a restart. With Type=notify in the service, the new release takes no",
        '# connection before it says READY=1 (README: "Overlapped switches").',
        "overlap = true",
        "",
        "[verify]",
        "# After each switch, GET path on 127.0.0.1:port of the host must answer 200 within",
        "# timeout; a release that does not is rolled back. (With [verify.tls]: HTTPS on 443.)",
        f"port = {a.ports[0].number}",
        '# A path that answers 200 when the app is healthy, e.g. "/healthz".',
        'path = "/"',
        '# Set to "/version" if the app answers its version there: the deploy then checks that',
        "# the new release is the one answering.",
        'version_path = ""',
        "timeout = 60",
    ]
    if a.tls:
        lines += [
            "",
            "[verify.tls]",
            "# The checks go over HTTPS to 127.0.0.1:443 with this name (SNI); the certificate must",
            '# be trusted, valid for it and not expired. For a test CA: ca_file = "PATH.pem".',
            f"name = {_toml(a.domain or '')}",
        ]
    return "\n".join(lines) + "\n"


def _os_release(n: str) -> str:
    return (
        f'NAME="{n}"\nID=portable\nPRETTY_NAME="{n} portable service"\n'
        f'PORTABLE_PRETTY_NAME="{n}"\n'
        f"# portablectl attaches the units whose names start with one of these.\n"
        f"PORTABLE_PREFIXES={n}\n"
    )


def _socket(n: str, port: Port) -> str:
    return f"""[Unit]
Description={n}: port {port.number} ({port.name}), held by systemd

[Socket]
# systemd owns the listening socket: it stays open, and queues connections, while {n}.service
# restarts, so a deploy never closes the port. The app gets it passed as a file descriptor
# ($LISTEN_FDS, named "{port.name}" in $LISTEN_FDNAMES) and must not bind the port itself.
ListenStream={port.number}
FileDescriptorName={port.name}
Service={n}.service

[Install]
WantedBy=sockets.target
"""


def _service(a: Answers) -> str:
    n = a.name
    sockets = " ".join(f"{n}-{p.name}.socket" for p in a.ports)
    unit = [
        "[Unit]",
        f"Description={n}",
        f"Requires={sockets}",
        f"After={sockets}",
    ]
    if a.litestream:
        unit += [
            "# The restore oneshot runs before every start (a no-op when the database exists).",
            f"Wants={n}-restore.service",
            f"After={n}-restore.service",
        ]
    state = f"{n} {n}-replica" if a.litestream else n
    service = [
        "",
        "[Service]",
        "# If the app tells systemd it is ready (sd_notify READY=1) once it has checked itself,",
        "# make this Type=notify: an overlapped switch then keeps a broken release off the",
        "# sockets. Type=exec: the start ends when the binary runs.",
        "Type=exec",
        f"ExecStart=/usr/bin/{n}",
        f"Sockets={sockets}",
        "# The profile adds DynamicUser=yes: units that share data share User= and StateDirectory=",
        f"# (the app's data is in /var/lib/{n}, kept across deploys and rollbacks).",
        f"User={n}",
        f"StateDirectory={state}",
    ]
    if a.litestream:
        service += [
            "# SQLite in WAL mode here; Litestream replicates it (units/*-litestream.service).",
            f"Environment=DATABASE_PATH=/var/lib/{n}/app.db",
        ]
    if a.tls:
        service += [
            "# TLS: the app gets its own certificate over ACME (e.g. Go's autocert) and serves it on",
            "# the https socket; http serves the ACME challenges and redirects the rest.",
            f"Environment=TLS_DOMAINS={a.domain}",
        ]
        if a.email:
            service.append(f"Environment=ACME_EMAIL={a.email}")
    service += [
        "# The host's own settings, outside the image (a deploy never changes them).",
        f"EnvironmentFile=-/etc/default/{n}",
        "# Hardening: the pd-hardened profile takes away capabilities, privilege gain, most system",
        "# calls and every address family but AF_UNIX; the passed sockets need none.",
    ]
    if a.tls:
        service += [
            "# ACME reaches the CA: outbound IPv4/IPv6, and the host's CA store to trust it.",
            "RestrictAddressFamilies=AF_INET AF_INET6",
            "BindReadOnlyPaths=-/etc/ssl/certs",
        ]
    else:
        service += [
            "# No network of its own at all. If the app makes outbound connections, replace this",
            "# with RestrictAddressFamilies=AF_INET AF_INET6 (and BindReadOnlyPaths=-/etc/ssl/certs).",
            "PrivateNetwork=yes",
        ]
    service += [
        "Restart=on-failure",
        "RestartSec=1",
        "# Time to finish requests in flight after SIGTERM.",
        "TimeoutStopSec=15",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(unit + service) + "\n"


def _litestream_yml(n: str) -> str:
    return f"""# Litestream: the database in /var/lib/{n} is replicated to a file replica in the
# {n}-replica state directory on the same host. For S3 or SFTP, change the replica block and
# give the keys to both Litestream units as [secrets.NAME] in deploy.toml (never in the image).
dbs:
  - path: /var/lib/{n}/app.db
    replica:
      type: file
      path: /var/lib/{n}-replica/app
"""


def _litestream_service(n: str) -> str:
    return f"""[Unit]
Description={n}: Litestream replication of the database
# Never replicate a fresh empty database over an existing replica: restore first.
Wants={n}-restore.service
After={n}-restore.service

[Service]
ExecStart=/usr/bin/litestream replicate -config /etc/litestream.yml
User={n}
StateDirectory={n} {n}-replica
# Hardening beyond the profile: an off-host replica (S3, SFTP) is reached over the network and
# its TLS is checked against the host's CA store.
RestrictAddressFamilies=AF_INET AF_INET6
BindReadOnlyPaths=-/etc/ssl/certs
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


def _restore_service(n: str) -> str:
    return f"""[Unit]
Description={n}: restore the database from the Litestream replica if it is missing
Before={n}.service
# Nothing to restore when the database exists: skipped without starting Litestream.
ConditionPathExists=!/var/lib/{n}/app.db

[Service]
Type=oneshot
# No RemainAfterExit=: this runs before every start of {n}.service.
ExecStart=/usr/bin/litestream restore -config /etc/litestream.yml -if-db-not-exists -if-replica-exists /var/lib/{n}/app.db
User={n}
StateDirectory={n} {n}-replica
RestrictAddressFamilies=AF_INET AF_INET6
BindReadOnlyPaths=-/etc/ssl/certs
"""
