"""`deploy --dry-run` says which ports systemd holds for the release (and a real deploy does not
clutter its log with it)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from portable_deploy import pipeline, ui
from portable_deploy.release import Options

from .conftest import UNITS, FakeHost, config, manifest, signed


def _deploy_output(tmp_path: Path, host: FakeHost, dry_run: bool, units: dict[str, str]) -> str:
    out = Console(record=True, width=300)
    host.dry_run = dry_run
    host.version = "2"
    target = manifest("2", app="e", units=units)
    pipeline.deploy_to(
        host, config(tmp_path), signed(target), Options(dry_run=dry_run), ui.Steps(out)
    )
    return out.export_text()


def test_dry_run_names_the_ports_systemd_holds(tmp_path: Path, live_v1: FakeHost) -> None:
    """The dry run's plan ends with each port and the socket that holds it."""
    units = {**UNITS, "scoreboard-https.socket": "[Socket]\nListenStream=443\n"}
    text = _deploy_output(tmp_path, live_v1, True, units)
    assert (
        "ports held by systemd: 80 (scoreboard-http.socket), 443 (scoreboard-https.socket)" in text
    )


def test_dry_run_of_a_release_without_sockets_says_none(tmp_path: Path, live_v1: FakeHost) -> None:
    """A release whose app binds its own port: the dry run says no port is held by systemd."""
    units = {n: t for n, t in UNITS.items() if not n.endswith(".socket")}
    assert "ports held by systemd: none: " in _deploy_output(tmp_path, live_v1, True, units)


def test_a_real_deploy_does_not_print_the_ports_line(tmp_path: Path, live_v1: FakeHost) -> None:
    """Only the dry run prints it: a deploy's log stays as it was."""
    assert "ports held by systemd" not in _deploy_output(tmp_path, live_v1, False, UNITS)
