"""Which units a release change restarts."""

import dataclasses

import pytest

from portable_deploy.errors import DeployError
from portable_deploy.plan import Action, Plan, plan_release
from portable_deploy.units import UNIT_DIR

from ..flow.conftest import UNITS, manifest


def test_first_deploy_attaches() -> None:
    """No live release: attach --now starts everything."""
    assert plan_release(None, manifest("1")).action is Action.ATTACH


def test_same_release_does_nothing() -> None:
    """Deploying the live release again restarts nothing."""
    assert plan_release(manifest("1"), manifest("1")).action is Action.NONE


def test_app_change_restarts_only_the_app() -> None:
    """A new app binary restarts the socket-activated service, not Litestream or the socket."""
    plan = plan_release(manifest("1"), manifest("2", app="e"))
    assert plan.action is Action.REATTACH
    assert plan.restart == ("scoreboard.service",)
    assert plan.start == () and plan.stop == ()


def test_version_only_change_still_restarts_the_app() -> None:
    """Any image change restarts the app, so it runs from the new image."""
    assert plan_release(manifest("1"), manifest("2")).restart == ("scoreboard.service",)


def test_litestream_change_restarts_sidecar_first() -> None:
    """A new Litestream binary restarts the sidecar (before the app)."""
    plan = plan_release(manifest("1"), manifest("2", litestream="f"))
    assert plan.restart == ("scoreboard-litestream.service", "scoreboard.service")


def test_socket_change_needs_the_flag() -> None:
    """A changed socket unit is refused, or restarted with restart_sockets."""
    with pytest.raises(DeployError, match="--restart-sockets"):
        plan_release(manifest("1"), manifest("2", socket="9"))
    plan = plan_release(manifest("1"), manifest("2", socket="9"), restart_sockets=True)
    assert plan.restart[0] == "scoreboard-http.socket"


def test_oneshot_is_never_restarted() -> None:
    """The restore oneshot runs when the app starts; a deploy never restarts it directly."""
    plan = plan_release(manifest("1"), manifest("2", litestream="f"))
    assert "scoreboard-restore.service" not in plan.restart


# --- exact plans: what each unit does, in which order, and why --------------------------------

SIDECARS = {
    **UNITS,
    "scoreboard-backup.timer": "[Timer]\nOnCalendar=daily\n",
    "scoreboard-cleanup.service": "[Service]\nExecStart=/usr/bin/cleanup\n",
    "scoreboard-metrics.socket": "[Socket]\nListenStream=9100\nService=scoreboard-metrics.service\n",
    "scoreboard-metrics.service": "[Service]\nExecStart=/usr/bin/metrics\n",
}


def test_first_deploy_plan_says_why() -> None:
    """The first deploy attaches with --now; its one reason covers every unit."""
    assert plan_release(None, manifest("1")) == Plan(
        "scoreboard_1", None, Action.ATTACH, reasons={"*": "first deploy: attach --now"}
    )


def test_same_release_plan_names_the_live_one_as_previous() -> None:
    """Redeploying the live release: nothing to do, and the live release is the previous one."""
    assert plan_release(manifest("1"), manifest("1")) == Plan(
        "scoreboard_1", "scoreboard_1", Action.NONE
    )


def test_a_rebuild_of_the_same_version_restarts_the_app() -> None:
    """Same release name but another image (rebuilt): reattach and restart the app, not a no-op."""
    assert plan_release(manifest("1"), manifest("1", app="e")) == Plan(
        "scoreboard_1",
        "scoreboard_1",
        Action.REATTACH,
        restart=("scoreboard.service",),
        reasons={"scoreboard.service": "app service: image changed"},
    )


def test_sidecar_change_plan_lists_the_changed_paths() -> None:
    """A sidecar restarts because of the files it runs that changed, named in its reason."""
    assert plan_release(manifest("1"), manifest("2", litestream="f")) == Plan(
        "scoreboard_2",
        "scoreboard_1",
        Action.REATTACH,
        restart=("scoreboard-litestream.service", "scoreboard.service"),
        reasons={
            "scoreboard-litestream.service": "changed: usr/bin/litestream",
            "scoreboard.service": "app service: image changed",
        },
    )


def test_a_sidecar_reason_joins_several_changed_paths() -> None:
    """Two changed files of one sidecar: both named, sorted, comma-separated."""
    old, new = manifest("1"), manifest("2", litestream="f")
    files = {**new.files, "etc/litestream.yml": "sha256:" + "9" * 64}
    plan = plan_release(old, dataclasses.replace(new, files=files))
    assert plan.reasons["scoreboard-litestream.service"] == (
        "changed: etc/litestream.yml, usr/bin/litestream"
    )


def test_allowed_socket_restart_plan() -> None:
    """With restart_sockets a changed socket restarts first, with the flag as its reason."""
    plan = plan_release(manifest("1"), manifest("2", socket="9"), restart_sockets=True)
    assert plan == Plan(
        "scoreboard_2",
        "scoreboard_1",
        Action.REATTACH,
        restart=("scoreboard-http.socket", "scoreboard.service"),
        reasons={
            "scoreboard-http.socket": "socket unit changed (--restart-sockets)",
            "scoreboard.service": "app service: image changed",
        },
    )


def test_refused_socket_change_says_why_and_what_to_do() -> None:
    """The refusal names the release and every changed socket, the risk, and the two ways out."""
    old = manifest("1", units=SIDECARS)
    new = manifest("2", socket="9", units=SIDECARS)
    with pytest.raises(DeployError) as err:
        plan_release(old, new)
    assert err.value.message == (
        "scoreboard_2 changes socket unit(s) scoreboard-http.socket, scoreboard-metrics.socket: "
        "restarting a socket closes its port for a moment and drops queued connections"
    )
    assert err.value.hint == (
        "deploy with --restart-sockets to accept that, or keep the socket unit unchanged"
    )


def test_new_units_start_sockets_first_then_services_then_others() -> None:
    """New units start sockets, then services, then timers (by name within each); no oneshot."""
    plan = plan_release(manifest("1"), manifest("2", units=SIDECARS))
    assert plan.start == (
        "scoreboard-metrics.socket",
        "scoreboard-cleanup.service",
        "scoreboard-metrics.service",
        "scoreboard-backup.timer",
    )
    assert plan.reasons["scoreboard-backup.timer"] == "new in this release"


def test_removed_units_stop_with_their_reason() -> None:
    """Units gone from the new release stop, by name, each with "removed from the release"."""
    plan = plan_release(manifest("1", units=SIDECARS), manifest("2"))
    removed = (
        "scoreboard-backup.timer",
        "scoreboard-cleanup.service",
        "scoreboard-metrics.service",
        "scoreboard-metrics.socket",
    )
    assert plan.stop == removed
    assert plan.start == ()
    assert {u: plan.reasons[u] for u in removed} == dict.fromkeys(
        removed, "removed from the release"
    )


def test_changed_services_restart_before_other_units() -> None:
    """Changed sidecars, then apps (services a socket activates), restart before a changed timer."""
    old = manifest("1", units=SIDECARS)
    new = manifest("2", units=SIDECARS)
    timer, cleanup = f"{UNIT_DIR}/scoreboard-backup.timer", "usr/bin/cleanup"
    files = {**new.files, timer: "sha256:" + "9" * 64, cleanup: "sha256:" + "8" * 64}
    old_files = {**old.files, cleanup: "sha256:" + "7" * 64}
    plan = plan_release(
        dataclasses.replace(old, files=old_files), dataclasses.replace(new, files=files)
    )
    assert plan.restart == (
        "scoreboard-cleanup.service",
        "scoreboard-metrics.service",
        "scoreboard.service",
        "scoreboard-backup.timer",
    )


def test_profile_change_restarts_every_service_and_no_socket() -> None:
    """A new portable profile restarts Litestream and the app once, never the socket."""
    plan = plan_release(manifest("1"), manifest("2"), profile="default", profile_changed=True)
    assert plan.restart == ("scoreboard-litestream.service", "scoreboard.service")
    assert plan.profile_changed and plan.profile == "default"
    assert plan.reasons["scoreboard.service"] == "portable profile changed to default"


def test_profile_change_alone_reattaches_the_live_release() -> None:
    """The live release with another profile is reattached, not skipped as already live."""
    plan = plan_release(manifest("1"), manifest("1"), profile_changed=True)
    assert plan.action is Action.REATTACH
    assert "scoreboard.service" in plan.restart


def test_plan_carries_the_profile_to_attach_with() -> None:
    """Every plan names the profile the units are attached with."""
    assert plan_release(None, manifest("1"), profile="strict").profile == "strict"
    assert plan_release(manifest("1"), manifest("1"), profile="strict").profile == "strict"
