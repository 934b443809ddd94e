"""`invoke host.setup`: prepare a host once, and rotate its trust root."""

from __future__ import annotations

import sys
from pathlib import Path

from invoke.context import Context
from invoke.tasks import task

from .. import preflight, sign, ui
from ..host import Host
from ..targets import open_hosts
from .common import ECHO_HELP, HOST_HELP, config, each_host, user_errors

HELP = {
    "host": HOST_HELP,
    "echo": ECHO_HELP,
    "yes": "Install systemd-container where it is missing without asking.",
    "add_key": "Trust this public key file too, for [sign] principal (repeatable).",
    "remove_key": "Stop trusting this key: its .pub file or SHA256:fingerprint (repeatable).",
    "force": "With --remove-key: remove a key deploy.toml's [sign] still trusts.",
}


@task(name="setup", iterable=["host", "add_key", "remove_key"], help=HELP)
@user_errors
def setup(
    c: Context,
    host: list[str] | None = None,
    echo: bool = False,
    yes: bool = False,
    add_key: list[str] | None = None,
    remove_key: list[str] | None = None,
    force: bool = False,
) -> None:
    """Prepare hosts (idempotent): systemd-container, directories, trust root, profile."""
    cfg = config()
    # Bad keys or flags are refused here, before any host is opened.
    change = sign.trust_change(cfg, [Path(p) for p in add_key or ()], remove_key or (), force)
    request = preflight.SetupRequest(change, consent=_consent(yes))

    def work(h: Host) -> None:
        changed = preflight.setup_host(h, cfg, request)
        ui.console.print(f"{h.name}: " + ("; ".join(changed) if changed else "already set up"))

    with open_hosts(cfg, host, echo=ui.echo if echo else None) as opened:
        each_host(opened, work, "host.setup")


def _consent(yes: bool) -> preflight.Consent:
    """--yes, else a question on a terminal; with neither, no (the error names --yes)."""

    def ask(host: str, package: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        answer = ui.console.input(f"[{host}] has no portablectl: apt-get install {package}? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    return ask
