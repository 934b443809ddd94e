"""The tasks that look and change nothing: releases, status."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from json import dumps
from typing import Any

from invoke.context import Context
from invoke.tasks import task
from rich.markup import escape

from .. import pipeline, ui
from .. import status as st
from ..errors import DeployError
from ..host import Host, TransportError
from .common import HOST_HELP, JSON_HELP, ROLE_HELP, config, each_host, hosts, user_errors


@task(iterable=["host", "role"], help={"host": HOST_HELP, "role": ROLE_HELP})
@user_errors
def releases(c: Context, host: list[str] | None = None, role: list[str] | None = None) -> None:
    """List the releases kept on each host: which is live, which rollback picks, who deployed when."""
    cfg = config()
    with hosts(cfg, host, role) as opened:

        def show(h: Host) -> None:
            rows = pipeline.releases_on(h, cfg)
            ui.table(
                f"{cfg.app.name} on {h.name}",
                ["release", "state", "deployed (UTC)", "by", "result"],
                [
                    [
                        r.release,
                        "live" if r.live else ("rollback target" if r.rollback_target else ""),
                        r.deployed_at,
                        r.deployed_by,
                        r.result,
                    ]
                    for r in rows
                ],
            )

        each_host(opened, show, "releases")


@task(
    iterable=["host", "role"],
    help={"host": HOST_HELP, "role": ROLE_HELP, "json": JSON_HELP},
)
@user_errors
def status(
    c: Context, host: list[str] | None = None, role: list[str] | None = None, json: bool = False
) -> None:
    """Show each host's live release, units, health, certificate, last deploy and disk; exit 1 if unhealthy."""
    cfg = config()
    now = datetime.now(UTC)
    documents: list[dict[str, Any]] = []
    unhealthy: list[str] = []
    with ui.data_on_stdout() if json else nullcontext(), hosts(cfg, host, role) as opened:
        for h in opened:
            try:
                s = pipeline.status_on(h, cfg)
            except DeployError as e:
                if len(opened) == 1 and not json:
                    raise  # its own line and hint say it all
                unhealthy.append(h.name)
                documents.append(st.failed_json(h.name, str(e), not isinstance(e, TransportError)))
                ui.error(e.message, e.hint)
                continue
            found = st.problems(s, now)
            if found:
                unhealthy.append(h.name)
            documents.append(st.to_json(s, now))
            if not json:
                _show(s, found, now)
    if json:
        print(dumps(documents, indent=2))
    if unhealthy:
        raise DeployError(
            f"unhealthy: {', '.join(unhealthy)} ({len(unhealthy)} of {len(documents)} hosts)",
            hint='see the problems above (with --json: each host\'s "problems"); '
            "`invoke logs --host NAME` shows what the units said",
        )


def _show(s: st.HostStatus, found: list[str], now: datetime) -> None:
    if s.live is None:
        ui.console.print(f"{s.host}: no release of {s.app} attached", markup=False)
    else:
        ui.table(st.title(s), st.UNIT_COLUMNS, st.unit_rows(s), compact=True)
    for line in st.summary(s, now):
        ui.console.print(f"  {line}", markup=False)
    for warning in st.warnings(s):
        ui.console.print(f"  [yellow]![/] {escape(warning)}")
    if found:
        for problem in found:
            ui.console.print(f"  [bold red]✗[/] {escape(problem)}")
    else:
        ui.console.print("  [green]✓[/] healthy")
