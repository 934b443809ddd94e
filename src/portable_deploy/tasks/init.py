"""`invoke init`: set up an app's repo for portable-deploy (deploy.toml, tasks.py, units/, image/,
.gitignore lines and a signing key). The files come from ``scaffold``; this module asks, checks
what would be overwritten, and writes.

In a repo without tasks.py yet, run it as ``portable-deploy init`` (``python -m portable_deploy
init``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from invoke.context import Context
from invoke.tasks import task
from rich.markup import escape
from rich.prompt import Confirm, Prompt

from .. import scaffold, sign, ui
from ..config import app_name_problem
from ..errors import DeployError
from ..scaffold import Answers, Port
from .common import user_errors

HELP = {
    "name": "App name: lowercase letters, digits and - (default: the directory's name).",
    "binary": "The app's binary in the repo, as the build leaves it (default with --build: "
    "build/NAME).",
    "build": "Shell command that builds the binary (leave out when it is built elsewhere).",
    "port": "A port systemd holds for the app: NUMBER[/NAME], e.g. 80/http (repeatable; "
    "default 80/http).",
    "litestream": "The app keeps SQLite in its state directory: add Litestream and restore units.",
    "no_litestream": "No Litestream units (the default without a terminal).",
    "tls": "The app serves HTTPS on 443 with its own ACME certificate (needs --domain).",
    "no_tls": "No TLS (the default without a terminal).",
    "domain": "With --tls: the public name the certificate is for ([verify.tls] name).",
    "email": "With --tls: the ACME account's contact e-mail.",
    "host": "SSH host to deploy to (name, address or ssh alias; default: the local sandbox VM).",
    "force": "Overwrite files that exist (the signing key is never replaced).",
    "yes": "Ask nothing, even on a terminal: flags and defaults only.",
}


@task(iterable=["port"], help=HELP, auto_shortflags=False)
@user_errors
def init(
    c: Context,
    name: str = "",
    binary: str = "",
    build: str = "",
    port: list[str] | None = None,
    litestream: bool = False,
    no_litestream: bool = False,
    tls: bool = False,
    no_tls: bool = False,
    domain: str = "",
    email: str = "",
    host: str = "",
    force: bool = False,
    yes: bool = False,
) -> None:
    """Set up this repo for portable-deploy: deploy.toml, tasks.py, units/, image/, signing key."""
    root = Path.cwd()
    for flag, on, off in (("litestream", litestream, no_litestream), ("tls", tls, no_tls)):
        if on and off:
            raise DeployError(f"--{flag} and --no-{flag} both given", "pass one of them")
    asking = not yes and sys.stdin.isatty()
    answers = _answers(
        root,
        asking,
        name=name,
        binary=binary,
        build=build,
        ports=port or [],
        litestream=True if litestream else False if no_litestream else None,
        tls=True if tls else False if no_tls else None,
        domain=domain,
        email=email,
        host=host,
    )
    files = scaffold.render(answers)
    existing = scaffold.conflicts(root, files)
    if existing and not force:
        raise DeployError(
            f"init would overwrite {len(existing)} file(s): {', '.join(existing)}",
            "move them away, or run again with --force to overwrite them",
        )
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        target.write_text(text)
        ui.console.print(f"  {'overwrote' if path in existing else 'wrote'} {escape(path)}")
    ignore = root / scaffold.GITIGNORE
    merged = scaffold.gitignore(ignore.read_text() if ignore.exists() else None)
    if merged is not None:
        ignore.write_text(merged)
        ui.console.print(f"  added the build outputs and .deploy/ to {scaffold.GITIGNORE}")
    key = root / scaffold.SIGNING_KEY
    if key.exists():
        ui.console.print(f"  kept the signing key {scaffold.SIGNING_KEY}")
    else:
        sign.generate_key(key)
        ui.console.print(f"  made the signing key {scaffold.SIGNING_KEY} (hosts trust its .pub)")
    ui.console.print(
        f"[bold green]{answers.name} is set up[/]: commit it (`git add -A && git commit`), then "
        "`invoke deploy`",
        soft_wrap=True,
    )


def _answers(
    root: Path,
    asking: bool,
    *,
    name: str,
    binary: str,
    build: str,
    ports: list[str],
    litestream: bool | None,
    tls: bool | None,
    domain: str,
    email: str,
    host: str,
) -> Answers:
    """The flags, and on a terminal the questions for what they left open; else the defaults.
    An answer with no default and no flag is an error naming the flag."""
    default_name = root.name if app_name_problem(root.name) is None else ""
    if not name and asking:
        name = (
            Prompt.ask("App name", default=default_name) if default_name else Prompt.ask("App name")
        )
    name = name or default_name
    if not name:
        raise DeployError(
            f"no app name: the directory's name {root.name!r} cannot be one",
            "pass --name my-app (lowercase letters, digits and -)",
        )
    if not binary and not build and asking:
        build = Prompt.ask(
            "Command that builds the binary (empty: it is built elsewhere)",
            default="",
            show_default=False,
        )
    if not binary and build:
        binary = (
            Prompt.ask("Binary it writes", default=f"build/{name}") if asking else f"build/{name}"
        )
    if not binary and asking:
        binary = Prompt.ask("Path of the app's binary in this repo")
    if not binary:
        raise DeployError(
            "no binary: stdin is not a terminal to ask for it",
            'pass --binary PATH (the binary in the repo) or --build "CMD" (the command that '
            "builds build/NAME; --binary if it writes elsewhere)",
        )
    if not ports and asking:
        ports = Prompt.ask(
            escape("Ports systemd holds (NUMBER[/NAME], space-separated)"), default="80/http"
        ).split()
    parsed = tuple(scaffold.parse_port(p) for p in ports) or (Port(80, "http"),)
    if litestream is None:
        litestream = asking and Confirm.ask(
            "Does the app keep SQLite (add Litestream)?", default=False
        )
    if tls is None:
        tls = asking and Confirm.ask(
            "Does the app serve HTTPS with its own ACME certificate?", default=False
        )
    if tls:
        if not domain and asking:
            domain = Prompt.ask("Public name the certificate is for")
        if not domain:
            raise DeployError(
                "--tls needs --domain: the name the certificate is for",
                "e.g. --domain app.example.org",
            )
        if not email and asking:
            email = Prompt.ask("ACME contact e-mail (empty: none)", default="", show_default=False)
        parsed = scaffold.with_tls_ports(parsed)
    elif domain or email:
        raise DeployError("--domain and --email are for TLS", "add --tls, or leave them out")
    if not host and asking:
        host = Prompt.ask(
            "SSH host to deploy to (empty: the local sandbox VM)", default="", show_default=False
        )
    return Answers(
        name=name,
        binary=binary,
        build=build or None,
        ports=parsed,
        litestream=bool(litestream),
        domain=(domain or None) if tls else None,
        email=(email or None) if tls else None,
        host=host or None,
    )
