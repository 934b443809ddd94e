"""Which units a release change restarts."""

import pytest

from portable_deploy.errors import DeployError
from portable_deploy.plan import Action, plan_release

from ..flow.conftest import manifest


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
