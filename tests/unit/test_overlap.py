"""Overlapped switches ([deploy] overlap): the twin unit the build adds, how plans and the
host command use it, and how status and secrets treat it. Pure: the VM side is
tests/e2e/test_overlap.py."""

from __future__ import annotations

import re

from portable_deploy.commands.layout import Layout
from portable_deploy.credentials import Entry, SecretSet, wanted_dropins
from portable_deploy.plan import Action, overlap_twins, plan_release
from portable_deploy.steps import reattach_command
from portable_deploy.units import (
    OVERLAP_KEY,
    Kind,
    directives,
    overlap_name,
    overlap_twin,
    overlapped_services,
    parse_unit,
)

from ..flow.conftest import UNITS, manifest

APP = (
    "[Unit]\nDescription=Scoreboard\nRequires=scoreboard-http.socket\n\n"
    "[Service]\nType=notify\nExecStart=/usr/bin/scoreboard\nSockets=scoreboard-http.socket\n"
    "User=scoreboard\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n"
)
TWIN = overlap_twin("scoreboard.service", APP)
OVERLAPPED = {**UNITS, "scoreboard.service": APP, "scoreboard-overlap.service": TWIN}


def _settings(text: str) -> dict[tuple[str, str], str]:
    """The last value of each (section, key): what systemd ends up with."""
    return {(s, k): v for s, k, v in directives(text)}


def test_the_twin_is_the_app_service_without_install_or_restart() -> None:
    """The twin keeps every setting of the app (its sockets, user, type) and its text; it has
    no [Install] (never enabled, never started at boot), Restart=no, and names its app."""
    settings = _settings(TWIN)
    assert settings[("Service", "Sockets")] == "scoreboard-http.socket"
    assert settings[("Service", "Type")] == "notify"
    assert settings[("Service", "User")] == "scoreboard"
    assert settings[("Service", "Restart")] == "no"
    assert settings[("Unit", OVERLAP_KEY)] == "scoreboard.service"
    assert settings[("Unit", "Description")] == "Scoreboard (overlap, during a switch)"
    assert not any(section == "Install" for section, _, _ in directives(TWIN))
    assert "WantedBy" not in TWIN


def test_the_twin_is_its_own_kind_and_names_its_app() -> None:
    info = parse_unit("scoreboard-overlap.service", TWIN)
    assert (info.kind, info.overlap_of) == (Kind.OVERLAP, "scoreboard.service")
    assert parse_unit("scoreboard.service", APP).overlap_of is None
    assert type(info).from_dict(info.name, info.to_dict()) == info


def test_only_socket_activated_services_get_a_twin() -> None:
    infos = {n: parse_unit(n, t) for n, t in UNITS.items()}
    assert overlapped_services(infos) == ["scoreboard.service"]
    assert overlap_name("scoreboard.service") == "scoreboard-overlap.service"


def test_an_app_change_restarts_the_app_overlapped_and_never_touches_the_twin() -> None:
    """The app restarts beside its twin; the twin itself is never started, restarted or stopped
    by the ordinary rules, and the sidecars are as before."""
    old = manifest("1", units=OVERLAPPED)
    plan = plan_release(old, manifest("2", app="e", litestream="f", units=OVERLAPPED))
    assert plan.restart == ("scoreboard-litestream.service", "scoreboard.service")
    assert plan.overlap == (("scoreboard.service", "scoreboard-overlap.service"),)
    assert plan.restarted_alone() == ("scoreboard-litestream.service",)
    assert plan.twins == ("scoreboard-overlap.service",)
    assert "overlapped by scoreboard-overlap.service" in plan.reasons["scoreboard.service"]
    assert "scoreboard-overlap.service" not in (*plan.start, *plan.stop, *plan.restart)


def test_a_release_that_turns_overlap_on_starts_no_twin() -> None:
    """The twin is new in the release but not started: it runs only inside a switch."""
    plan = plan_release(manifest("1"), manifest("2", units=OVERLAPPED))
    assert plan.start == () and plan.overlap == (
        ("scoreboard.service", "scoreboard-overlap.service"),
    )


def test_going_back_to_a_release_without_a_twin_stops_it() -> None:
    """The way back to a release without overlap stops the twin (in case it runs) and restarts
    the app plainly."""
    plan = plan_release(manifest("2", units=OVERLAPPED), manifest("1"))
    assert plan.stop == ("scoreboard-overlap.service",)
    assert plan.overlap == () and plan.restart == ("scoreboard.service",)
    # Stopped before the swap: after it the twin's unit file is gone, and an inactive unit
    # systemd no longer knows cannot be stopped ("not loaded", exit 5).
    command = reattach_command(Layout("scoreboard"), plan)
    assert command is not None
    assert re.findall(r"portablectl reattach|systemctl \w+ [\w.-]+", command.render()) == [
        "systemctl stop scoreboard-overlap.service",
        "portablectl reattach",
        "systemctl restart scoreboard.service",
    ]


def test_the_host_command_starts_the_twin_restarts_the_app_then_stops_the_twin() -> None:
    """One command, in this order, each step only if the one before succeeded: the swap, the
    sidecars, then the twin from the new release, the app while the twin serves, the twin stopped."""
    plan = plan_release(
        manifest("1", units=OVERLAPPED),
        manifest("2", app="e", litestream="f", units=OVERLAPPED),
    )
    command = reattach_command(Layout("scoreboard"), plan)
    assert command is not None
    text = command.render()
    assert re.findall(r"portablectl reattach|systemctl \w+ [\w.-]+", text) == [
        "portablectl reattach",
        "systemctl restart scoreboard-litestream.service",
        "systemctl restart scoreboard-overlap.service",
        "systemctl restart scoreboard.service",
        "systemctl stop scoreboard-overlap.service",
    ]
    assert "||" not in text and re.sub(r" ; }", "", text).count(";") == 0  # only &&


def test_a_first_attach_stops_the_twins_it_started() -> None:
    """attach --now starts every attached unit: the twins are stopped right after."""
    plan = plan_release(None, manifest("1", units=OVERLAPPED))
    assert plan.action is Action.ATTACH
    command = reattach_command(Layout("scoreboard"), plan)
    assert command is not None
    assert command.render().endswith("&& systemctl stop scoreboard-overlap.service")


def test_the_twin_gets_its_apps_secrets_from_the_same_files() -> None:
    """A secret of the app reaches its twin: the same credential, and the app's own
    environment file for an environment secret."""
    secrets = SecretSet(
        (
            Entry("api-token", "x", ("scoreboard.service",), None),
            Entry("dsn", "y", ("scoreboard.service",), "DSN"),
        )
    )
    twins = overlap_twins(manifest("1", units=OVERLAPPED))
    assert twins == {"scoreboard-overlap.service": "scoreboard.service"}
    wanted = wanted_dropins("/sets/s1", secrets, list(OVERLAPPED), {}, twins)
    assert wanted["scoreboard-overlap.service"] == wanted["scoreboard.service"]
    assert "api-token" in (wanted["scoreboard.service"] or "")
    assert wanted["scoreboard-litestream.service"] is None
