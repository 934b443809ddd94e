"""The tasks that look and change nothing: releases, logs, status."""

from __future__ import annotations

from invoke.context import Context
from invoke.tasks import task

from .. import pipeline, ui
from ..commands import journalctl
from ..release import release_name
from .common import HOST_HELP, config, hosts, user_errors


@task(iterable=["host"], help={"host": HOST_HELP})
@user_errors
def releases(c: Context, host: list[str] | None = None) -> None:
    """List the releases kept on each host: which is live, which rollback picks, who deployed when."""
    cfg = config()
    with hosts(cfg, host) as opened:
        for h in opened:
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


@task(
    iterable=["host"],
    help={
        "host": HOST_HELP,
        "follow": "Keep streaming new lines (Ctrl-C to stop).",
        "lines": "How many recent lines to show first (default 100).",
        "release": "Only lines logged by this release (VERSION or NAME_VERSION).",
        "since": "Only lines since this time (journalctl --since syntax, e.g. '10 min ago').",
    },
)
@user_errors
def logs(
    c: Context,
    host: list[str] | None = None,
    follow: bool = False,
    lines: int = 100,
    release: str | None = None,
    since: str | None = None,
) -> None:
    """Show (or --follow) the journal of every unit of the app."""
    cfg = config()
    rel = release_name(cfg.app.name, release) if release else None
    command = journalctl.logs(cfg.app.name, follow=follow, lines=lines, since=since, release=rel)
    with hosts(cfg, host) as opened:
        for h in opened:
            h.stream(command)


@task(iterable=["host"], help={"host": HOST_HELP})
@user_errors
def status(c: Context, host: list[str] | None = None) -> None:
    """Show the live release and the state of each of its units on every host."""
    cfg = config()
    with hosts(cfg, host) as opened:
        for h in opened:
            state, units = pipeline.status_on(h, cfg)
            if state.live_manifest is None:
                ui.console.print(f"{h.name}: no release of {cfg.app.name} attached")
                continue
            rows = []
            for name in sorted(state.live_manifest.unit_info):
                u = units.get(name)
                rows.append(
                    [name, f"{u.active_state}/{u.sub_state}", u.active_enter,
                     str(u.main_pid or ""), str(u.n_restarts)]
                    if u is not None
                    else [name, "?", "", "", ""]
                )  # fmt: skip
            ui.table(
                f"{h.name}: {state.live} live"
                + (f", rollback target {state.previous}" if state.previous else ""),
                ["unit", "state", "since", "main pid", "restarts"],
                rows,
            )
