"""The deploy history on a host: the audit log, the releases kept, and pruning old ones."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime

from . import facts
from .command import Command
from .commands import creds, files, portablectl
from .commands.layout import PORTABLES_DIR, Layout
from .credentials import SET_FILE, SecretSet
from .errors import DeployError
from .facts import AuditRecord
from .host import Remote
from .preflight import HostState

#: The fleet operation this process runs ("fleet deploy 3f2a9c1b04de"), if any: every audit
#: record it writes names it, on every host, so one operation's records can be matched.
_operation = ""


def set_operation(name: str) -> None:
    global _operation
    _operation = name


def operation() -> str:
    return _operation


def record(
    host: Remote,
    layout: Layout,
    event: str,
    release: str,
    live: str | None,
    result: str,
    message: str = "",
    secrets: str = "",
    first: Command | None = None,
    then: Command | None = None,
) -> None:
    """Append one JSON line to the host's audit log (SECRETS: the id of the secret set the live
    release runs with; never a value); FIRST runs before, in the same command (and the line is
    appended only if it succeeds), THEN after it (such as releasing the deploy lock)."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    line = record_line(event, release, live, result, message, secrets, at=now)
    command = files.append_log(layout.audit_log, line)
    if first is not None:
        command = first.then(command)
    if then is not None:
        command = command.then(then)
    host.run(command)


def record_line(
    event: str,
    release: str,
    live: str | None,
    result: str,
    message: str,
    secrets: str,
    at: str = files.STAMP,
) -> str:
    """One audit line by this user from this machine. By default its time is ``files.STAMP``,
    which the host fills in when it appends the line (the dead-man switch writes it later)."""
    return AuditRecord(
        at=at,
        event=event,
        release=release,
        live=live,
        result=result,
        user=getpass.getuser(),
        origin=socket.gethostname(),
        message=message,
        secrets=secrets,
        operation=_operation,
    ).to_json()


def prune(
    host: Remote, layout: Layout, keep: int, protect: set[str], audit: Sequence[AuditRecord]
) -> list[str]:
    """Delete the oldest releases beyond ``keep``; never the live one or the rollback target."""
    releases = kept_releases(host, layout)
    # An old image that a sidecar still runs from (it was not restarted) stays too.
    running = facts.images_in_use(host.run(portablectl.images_in_use()).stdout, PORTABLES_DIR)
    doomed = prunable(releases, keep, protect | running, audit)
    for r in doomed:
        host.run(
            files.remove(layout.image(r), layout.index(r), layout.manifest(r), layout.signature(r))
        )
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


def secret_set_of(audit: Sequence[AuditRecord], release: str) -> str | None:
    """The set RELEASE last ran with: the newest record that left it live ("" for none); None
    if the audit log never saw it live."""
    for r in reversed(audit):
        if r.live == release and r.result in ("ok", "rolled-back", "unverified"):
            return r.secrets
    return None


def recorded_secret_set(
    host: Remote, layout: Layout, state: HostState, release: str
) -> SecretSet | None:
    """The secret set RELEASE ran with, read back from the host (None: the log does not know,
    so the units keep what they have)."""
    set_id = secret_set_of(state.audit, release)
    if set_id is None:
        return None
    if not set_id:
        return SecretSet()
    text = host.run(files.cat(f"{layout.secret_set(set_id)}/{SET_FILE}")).stdout
    if not text.strip():
        raise DeployError(
            f"[{host.name}] the secrets {release} ran with (set {set_id}) are no longer on the host",
            hint="deploy it again (`invoke deploy` of that version) to send today's secrets",
        )
    return SecretSet.from_json(text)


def prune_secret_sets(host: Remote, layout: Layout, state: HostState, live: str) -> list[str]:
    """Delete the secret sets that no kept release ran with (and that are not live)."""
    if not state.secret_sets - {live}:
        return []
    kept = set(kept_releases(host, layout))
    wanted = {live} | {r.secrets for r in state.audit if r.live in kept and r.secrets}
    doomed = sorted(state.secret_sets - wanted)
    if doomed:
        host.run(creds.remove_sets(*(layout.secret_set(d) for d in doomed)))
    return doomed
