"""The tasks that look and change nothing: releases, status."""

from __future__ import annotations

from invoke.context import Context
from invoke.tasks import task

from .. import pipeline, ui
from ..host import Host
from .common import HOST_HELP, ROLE_HELP, config, each_host, hosts, user_errors


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


@task(iterable=["host", "role"], help={"host": HOST_HELP, "role": ROLE_HELP})
@user_errors
def status(c: Context, host: list[str] | None = None, role: list[str] | None = None) -> None:
    """Show the live release and the state of each of its units on every host."""
    cfg = config()
    with hosts(cfg, host, role) as opened:

        def show(h: Host) -> None:
            state, units = pipeline.status_on(h, cfg)
            if state.live_manifest is None:
                ui.console.print(f"{h.name}: no release of {cfg.app.name} attached")
                return
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

        each_host(opened, show, "status")
