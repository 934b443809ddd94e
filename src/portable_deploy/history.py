"""The deploy history on a host: the audit log, the releases kept, and pruning old ones."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime

from . import facts
from .commands import files, portablectl
from .commands.layout import PORTABLES_DIR, Layout
from .facts import AuditRecord
from .host import Remote


def record(
    host: Remote,
    layout: Layout,
    event: str,
    release: str,
    live: str | None,
    result: str,
    message: str = "",
) -> None:
    """Append one JSON line to the host's audit log."""
    entry = AuditRecord(
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        event=event,
        release=release,
        live=live,
        result=result,
        user=getpass.getuser(),
        origin=socket.gethostname(),
        message=message,
    )
    host.run(files.append_log(layout.audit_log, entry.to_json()))


def prune(
    host: Remote, layout: Layout, keep: int, protect: set[str], audit: Sequence[AuditRecord]
) -> list[str]:
    """Delete the oldest releases beyond ``keep``; never the live one or the rollback target."""
    releases = kept_releases(host, layout)
    # An old image that a sidecar still runs from (it was not restarted) stays too.
    running = facts.images_in_use(host.run(portablectl.images_in_use()).stdout, PORTABLES_DIR)
    doomed = prunable(releases, keep, protect | running, audit)
    for r in doomed:
        host.run(files.remove(layout.image(r), layout.manifest(r), layout.signature(r)))
    return doomed


def prunable(
    kept: Sequence[str], keep: int, protect: AbstractSet[str], audit: Sequence[AuditRecord]
) -> list[str]:
    """Of the KEPT releases, the ones to delete so that KEEP remain, the least recently live
    first (never live counts as oldest). PROTECT ones are never deleted and count towards KEEP.
    """
    last_live = {r.live: i for i, r in enumerate(audit) if r.live}
    # sorted() is stable: releases never live keep their listing order.
    newest = sorted(kept, key=lambda r: last_live.get(r, -1), reverse=True)
    room = max(keep - sum(r in protect for r in newest), 0)
    return [r for r in newest if r not in protect][room:]


@dataclass(frozen=True)
class ReleaseRow:
    release: str
    live: bool
    rollback_target: bool
    deployed_at: str
    deployed_by: str
    result: str


def kept_releases(host: Remote, layout: Layout) -> list[str]:
    """The app's releases whose images are on the host."""
    names = host.run(files.listing(PORTABLES_DIR, f"{layout.app}_*.raw")).stdout.split()
    return [n.removesuffix(".raw") for n in names]


def release_rows(
    releases: Sequence[str], live: str | None, previous: str | None, audit: Sequence[AuditRecord]
) -> list[ReleaseRow]:
    """One row per kept release, newest deploy first, from the audit log."""
    last: dict[str, AuditRecord] = {}
    for r in audit:
        if r.live and r.result in ("ok", "rolled-back"):
            last[r.live] = r
    rows = []
    for release in releases:
        rec = last.get(release)
        rows.append(
            ReleaseRow(
                release=release,
                live=release == live,
                rollback_target=release == previous,
                deployed_at=rec.at if rec else "",
                deployed_by=f"{rec.user}@{rec.origin}" if rec else "",
                result=rec.result if rec else "",
            )
        )
    rows.sort(key=lambda row: row.deployed_at, reverse=True)
    return rows
