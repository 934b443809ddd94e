"""An app that binds its own port is caught before it hurts: the build warns when no socket holds
the port verify checks and a service is started by no socket; the dry run says which ports
systemd holds."""

from __future__ import annotations

import dataclasses

import pytest

from portable_deploy.config import Config, TlsConfig, VerifyConfig
from portable_deploy.image import build
from portable_deploy.units import (
    UnitInfo,
    held_ports,
    held_ports_line,
    listen_port,
    parse_unit,
    self_bound_warning,
)

APP = "[Service]\nExecStart=/usr/bin/app\n"
HTTP = "[Socket]\nListenStream=80\nFileDescriptorName=http\nService=app.service\n"
HTTPS = "[Socket]\nListenStream=[::]:443\nService=app.service\n"
SIDECAR = "[Service]\nExecStart=/usr/bin/litestream replicate\n"


def _infos(units: dict[str, str]) -> dict[str, UnitInfo]:
    return {n: parse_unit(n, t) for n, t in units.items()}


@pytest.mark.parametrize(
    ("listen", "port"),
    [("80", 80), ("0.0.0.0:8080", 8080), ("[::]:443", 443), ("/run/app.sock", None),
     ("@abstract", None), ("vsock:2:1234", 1234), ("", None), ("99999", None)],
)  # fmt: skip
def test_listen_port_reads_what_systemd_listens_on(listen: str, port: int | None) -> None:
    """A Listen*= value gives its port; a path or an abstract socket gives none."""
    assert listen_port(listen) == port


def test_a_socket_records_its_listen_values_in_the_manifest() -> None:
    """parse_unit keeps ListenStream= values (an empty one resets them, as in systemd)."""
    info = parse_unit(
        "app-http.socket", "[Socket]\nListenStream=81\nListenStream=\nListenStream=80\n"
    )
    assert info.listen == ("80",)
    assert info.to_dict()["listen"] == ["80"]
    assert type(info).from_dict(info.name, info.to_dict()) == info


def test_held_ports_line_names_each_port_and_its_socket() -> None:
    """The dry run's line: ports by number, each with the socket that holds it."""
    infos = _infos({"app.service": APP, "app-https.socket": HTTPS, "app-http.socket": HTTP})
    assert held_ports(infos) == [(80, "app-http.socket"), (443, "app-https.socket")]
    assert held_ports_line(infos) == (
        "ports held by systemd: 80 (app-http.socket), 443 (app-https.socket)"
    )


def test_held_ports_line_says_none_when_no_socket_listens() -> None:
    """A release without sockets: the line says so and why it matters."""
    assert held_ports_line(_infos({"app.service": APP})).startswith("ports held by systemd: none: ")


def test_a_service_without_a_socket_and_the_verify_port_unheld_warns() -> None:
    """No socket at all: the warning names the service, the port and the fix."""
    warning = self_bound_warning(_infos({"app.service": APP}), 8080)
    assert warning is not None
    assert warning.startswith("app.service is started by no .socket")
    assert "port 8080" in warning and "app-http.socket with ListenStream=8080" in warning


def test_a_sidecar_without_a_socket_is_fine_when_a_socket_holds_the_verify_port() -> None:
    """Litestream has no socket, but the app's socket holds port 80: no warning."""
    infos = _infos({"app.service": APP, "app-http.socket": HTTP, "app-litestream.service": SIDECAR})
    assert self_bound_warning(infos, 80) is None


def test_a_socket_on_another_port_than_verify_warns() -> None:
    """The socket holds 80 but verify checks 8080, and the sidecar has no socket: warned."""
    infos = _infos({"app.service": APP, "app-http.socket": HTTP, "app-litestream.service": SIDECAR})
    warning = self_bound_warning(infos, 8080)
    assert warning is not None and warning.startswith("app-litestream.service is started")


def test_every_service_activated_by_a_socket_never_warns() -> None:
    """Every service has its socket: nothing to warn about, whatever port verify checks."""
    assert self_bound_warning(_infos({"app.service": APP, "app-http.socket": HTTP}), 8080) is None


def _verify_port(cfg: Config, port: int, tls: bool = False) -> Config:
    verify = VerifyConfig(port=port, tls=TlsConfig(name="demo.test", port=port) if tls else None)
    return dataclasses.replace(cfg, verify=verify)


def test_the_build_warns_about_an_app_that_binds_its_own_port(demo_project: Config) -> None:
    """Without its socket, the demo app's build warns (and still builds)."""
    (demo_project.image.units / "demo-http.socket").unlink()
    artifact = build(demo_project, "1.0")
    assert artifact.image.is_file()
    assert any("demo.service is started by no .socket" in w for w in artifact.warnings)


def test_the_build_with_its_socket_does_not_warn(demo_project: Config) -> None:
    """The demo app's socket holds port 80, the port verify checks: no warning."""
    assert not any("no .socket" in w for w in build(demo_project, "1.0").warnings)


@pytest.mark.parametrize(("port", "tls", "warns"), [(443, True, True), (80, True, False)])
def test_with_tls_the_build_checks_the_https_port(
    demo_project: Config, port: int, tls: bool, warns: bool
) -> None:
    """With [verify.tls] the port checked is [verify.tls] port."""
    (demo_project.image.units / "demo-extra.service").write_text(SIDECAR)
    artifact = build(_verify_port(demo_project, port, tls), "1.0")
    assert any("no .socket" in w for w in artifact.warnings) is warns


def test_manifest_of_the_build_records_the_sockets_ports(demo_project: Config) -> None:
    """The manifest keeps each socket's Listen values: the dry run reads them from it."""
    info = build(demo_project, "1.0").manifest.unit_info["demo-http.socket"]
    assert list(info["listen"]) == ["80"]  # type: ignore[call-overload]
