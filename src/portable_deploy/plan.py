"""Which units a release change restarts: a pure function of the old and new manifests.

The rules: the app (a service a socket activates) restarts whenever the image changed; any other
long-running service (a sidecar such as Litestream) only when its unit file or a file it runs
changed; a socket never, unless its unit file changed and the user allowed it; a oneshot is not
restarted (it runs again when the app starts). A change of portable profile restarts every
long-running service once, announced in the plan (sockets get no profile: they stay). An app
service with an overlap twin in the release restarts overlapped: the twin runs the release
beside the old process until the app is back (``Plan.overlap``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from . import profiles
from .errors import DeployError
from .manifest import Manifest, changed_paths
from .units import UNIT_DIR, Kind, UnitInfo


class Action(StrEnum):
    ATTACH = "attach"
    REATTACH = "reattach"
    NONE = "none"


@dataclass(frozen=True)
class Plan:
    release: str
    previous: str | None
    action: Action
    #: The portable profile the units are attached with.
    profile: str = profiles.DEFAULT
    #: The live units run with another profile text: every service restarts (announced).
    profile_changed: bool = False
    stop: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    #: Unit -> why it restarts or starts, for the dry run and the deploy log.
    reasons: dict[str, str] = field(default_factory=dict)
    #: (app, twin) for each app service of ``restart`` that the release overlaps ([deploy]
    #: overlap): its twin starts from the release beside the old process, the app restarts
    #: while the twin serves, then the twin stops.
    overlap: tuple[tuple[str, str], ...] = ()
    #: Every overlap twin of the release: none runs after a switch (a first attach starts them).
    twins: tuple[str, ...] = ()

    def restarted_alone(self) -> tuple[str, ...]:
        """The units of ``restart`` that are not overlapped."""
        overlapped = {app for app, _ in self.overlap}
        return tuple(u for u in self.restart if u not in overlapped)


def unit_infos(manifest: Manifest) -> dict[str, UnitInfo]:
    return {name: UnitInfo.from_dict(name, data) for name, data in manifest.unit_info.items()}


def overlap_twins(manifest: Manifest) -> dict[str, str]:
    """Each overlap twin of the release -> the app service it doubles ([deploy] overlap)."""
    return {n: u.overlap_of for n, u in unit_infos(manifest).items() if u.overlap_of}


def plan_release(
    old: Manifest | None,
    new: Manifest,
    *,
    restart_sockets: bool = False,
    profile: str = profiles.DEFAULT,
    profile_changed: bool = False,
    secrets_changed: frozenset[str] = frozenset(),
) -> Plan:
    """The units to stop, restart and start to go from ``old`` (live) to ``new``, attached with
    PROFILE; PROFILE_CHANGED says the live units run with another profile text; SECRETS_CHANGED
    names the units whose secrets change (a restart each, if long-running)."""
    twins = {app: twin for twin, app in overlap_twins(new).items()}
    if old is None:
        return Plan(
            new.release,
            None,
            Action.ATTACH,
            profile,
            reasons={"*": "first deploy: attach --now"},
            twins=tuple(sorted(twins.values())),
        )
    same_image = old.release == new.release and old.image_sha256 == new.image_sha256
    if same_image and not profile_changed and not secrets_changed:
        return Plan(new.release, old.release, Action.NONE, profile)
    changed = changed_paths(old, new)
    image_changed = old.image_sha256 != new.image_sha256
    units, old_units = unit_infos(new), unit_infos(old)
    apps = {u.activates for u in units.values() if u.kind is Kind.SOCKET and u.activates}

    stop = sorted(set(old_units) - set(units))
    restart: list[str] = []
    start: list[str] = []
    reasons: dict[str, str] = {name: "removed from the release" for name in stop}
    blocked: list[str] = []
    order = {Kind.SOCKET: 0, Kind.SERVICE: 1, Kind.OTHER: 2, Kind.ONESHOT: 3}
    # A twin is none of these: it runs only inside its app's overlapped restart.
    ordinary = {n: u for n, u in units.items() if u.kind is not Kind.OVERLAP}
    for name, unit in sorted(
        ordinary.items(), key=lambda kv: (order[kv[1].kind], kv[0] in apps, kv[0])
    ):
        unit_file_changed = f"{UNIT_DIR}/{name}" in changed
        if name not in old_units:
            if unit.kind is not Kind.ONESHOT:
                start.append(name)
                reasons[name] = "new in this release"
        elif unit.kind is Kind.SOCKET:
            if unit_file_changed and restart_sockets:
                restart.append(name)
                reasons[name] = "socket unit changed (--restart-sockets)"
            elif unit_file_changed:
                blocked.append(name)
        elif profile_changed and unit.kind in (Kind.SERVICE, Kind.OTHER):
            restart.append(name)
            reasons[name] = f"portable profile changed to {profile}"
        elif unit.kind is Kind.SERVICE and name in apps and image_changed:
            restart.append(name)
            reasons[name] = "app service: image changed"
        elif (
            unit.kind in (Kind.SERVICE, Kind.OTHER) and (unit.paths & changed) and name not in apps
        ):
            restart.append(name)
            reasons[name] = "changed: " + ", ".join(sorted(unit.paths & changed))
        elif unit.kind in (Kind.SERVICE, Kind.OTHER) and name in secrets_changed:
            restart.append(name)
            reasons[name] = "its secrets changed"
    if blocked:
        raise DeployError(
            f"{new.release} changes socket unit(s) {', '.join(blocked)}: restarting a socket closes "
            "its port for a moment and drops queued connections",
            hint="deploy with --restart-sockets to accept that, or keep the socket unit unchanged",
        )
    overlap = tuple((app, twins[app]) for app in restart if app in twins)
    for app, twin in overlap:
        reasons[app] += f"; overlapped by {twin}"
    return Plan(
        new.release,
        old.release,
        Action.REATTACH,
        profile,
        profile_changed,
        stop=tuple(stop),
        restart=tuple(restart),
        start=tuple(start),
        reasons=reasons,
        overlap=overlap,
        twins=tuple(sorted(twins.values())),
    )
