"""`invoke host.setup`: prepare a host once."""

from __future__ import annotations

from invoke.context import Context
from invoke.tasks import task

from .. import preflight, ui
from ..targets import open_hosts
from .common import ECHO_HELP, HOST_HELP, config, user_errors


@task(name="setup", iterable=["host"], help={"host": HOST_HELP, "echo": ECHO_HELP})
@user_errors
def setup(c: Context, host: list[str] | None = None, echo: bool = False) -> None:
    """Prepare hosts (idempotent): directories and the allowed_signers trust root."""
    cfg = config()
    with open_hosts(cfg, host, echo=ui.echo if echo else None) as opened:
        for h in opened:
            changed = preflight.setup_host(h, cfg)
            ui.console.print(f"{h.name}: " + ("; ".join(changed) if changed else "already set up"))
