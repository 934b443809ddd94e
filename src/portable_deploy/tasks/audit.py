"""`invoke audit`: the hosts' audit logs, as a table or one JSON document."""

from __future__ import annotations

from contextlib import nullcontext
from json import dumps
from typing import Any

from invoke.context import Context
from invoke.tasks import task

from .. import pipeline, ui
from ..errors import DeployError
from ..facts import AuditRecord
from ..host import Host
from .common import HOST_HELP, JSON_HELP, ROLE_HELP, config, each_host, hosts, user_errors

#: The table's columns (JSON has every field, the release live after each event too).
COLUMNS = ("at (UTC)", "event", "release", "result", "by", "message")


@task(
    iterable=["host", "role"],
    help={
        "host": HOST_HELP,
        "role": ROLE_HELP,
        "json": JSON_HELP,
        "lines": "Show the last N records of each host (default 20; 0: all).",
    },
)
@user_errors
def audit(
    c: Context,
    host: list[str] | None = None,
    role: list[str] | None = None,
    json: bool = False,
    lines: int = 20,
) -> None:
    """Show each host's audit log: every deploy, rollback, reattach and upload, who, and how it ended."""
    if lines < 0:
        raise DeployError(f"--lines {lines}: a count cannot be negative", hint="give 0 for all")
    cfg = config()
    records: list[dict[str, Any]] = []
    with ui.data_on_stdout() if json else nullcontext(), hosts(cfg, host, role) as opened:

        def read(h: Host) -> None:
            log = pipeline.audit_on(h, cfg)
            shown = log[-lines:] if lines else log
            records.extend(record_json(h.name, r) for r in shown)
            if not json:
                more = f", the last {len(shown)} of {len(log)}" if len(shown) < len(log) else ""
                title = f"{cfg.app.name} on {h.name}: audit log{more}"
                ui.table(title, COLUMNS, rows(shown), compact=True, whole=("release",))

        try:
            each_host(opened, read, "audit")
        finally:  # the hosts that answered are printed, even when one did not (exit 1 after)
            if json:
                print(dumps(records, indent=2))


def record_json(host: str, r: AuditRecord) -> dict[str, Any]:
    """One audit record as `audit --json` prints it: its fields, and the host it is from."""
    return {"host": host, **r.shown()}


def rows(records: list[AuditRecord]) -> list[list[str]]:
    return [
        [
            r.at.replace("+00:00", "").replace("T", " "),
            r.event,
            r.release,
            r.result,
            f"{r.user}@{r.origin}",
            r.message + (f" ({r.operation})" if r.operation else ""),
        ]
        for r in records
    ]
