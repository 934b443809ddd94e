"""Verify over HTTPS ([verify.tls]): the checks go to the TLS port with the name, a good certificate
passes with its days left, one close to expiry warns, and a refused certificate is one line that
leads to the automatic rollback."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from portable_deploy import pipeline, tls, ui
from portable_deploy.config import Config, TlsConfig, VerifyConfig
from portable_deploy.errors import DeployError
from portable_deploy.host import Result
from portable_deploy.release import Options

from .conftest import FakeHost, config, manifest, signed

NAME = "scoreboard.test"
NOW = datetime.now(UTC)
V2 = manifest("2", app="e")
SWAP = (
    "portablectl reattach --profile pd-hardened --copy=copy --enable /var/lib/portables/scoreboard_2.raw && "
    "systemctl restart scoreboard.service"
)
BACK = (
    "portablectl reattach --profile pd-hardened --copy=copy --enable /var/lib/portables/scoreboard_1.raw && "
    "systemctl restart scoreboard.service"
)
HTTPS = [f"GET https://{NAME}:443/healthz", f"GET https://{NAME}:443/version"]


def cert(days: int, names: tuple[str, ...] = (NAME,)) -> tls.Certificate:
    """A certificate with DAYS whole days left (an hour to spare, so the count is exact)."""
    return tls.Certificate(names, NOW - timedelta(days=1), NOW + timedelta(days=days, hours=1))


def tls_config(tmp_path: Path, **tls_keys: object) -> Config:
    tls_cfg = TlsConfig(name=NAME, **tls_keys)  # type: ignore[arg-type]
    return dataclasses.replace(
        config(tmp_path), verify=VerifyConfig(settle=0, timeout=2, tls=tls_cfg)
    )


def output() -> tuple[ui.Steps, io.StringIO]:
    text = io.StringIO()
    return ui.Steps(Console(file=text, width=300, highlight=False)), text


def release_serves(host: FakeHost, certificate: tls.Certificate | None) -> None:
    """scoreboard_2 answers with CERTIFICATE and version 2; back on scoreboard_1, a good one."""
    host.version, host.certificate = "2", certificate

    def back_to_v1(line: str) -> Result:
        host.version, host.certificate = "1", cert(60)
        host.tls_failure, host.handshakes = None, []
        return Result("", "", 0)

    host.on(r"portablectl reattach .*scoreboard_1\.raw", back_to_v1)


def test_a_good_certificate_passes_and_names_its_days(tmp_path: Path, live_v1: FakeHost) -> None:
    """Health and version over HTTPS to port 443 with the name; the line gives the days left."""
    release_serves(live_v1, cert(89))
    steps, text = output()
    pipeline.deploy_to(live_v1, tls_config(tmp_path), signed(V2), Options(), steps)
    verbs = live_v1.verbs()
    assert verbs[verbs.index(SWAP) + 1 :][:3] == ["systemctl show", *HTTPS]
    assert not any(line.startswith("GET :") for line in live_v1.log)  # [verify] port unused
    lines = text.getvalue().splitlines()
    assert (
        "  scoreboard-http.socket, scoreboard-litestream.service, scoreboard.service active; "
        f"GET https://{NAME}/healthz -> 200; certificate valid 89 days"
    ) in lines
    assert not any("!" in line for line in lines)
    assert [r.result for r in live_v1.audited()] == ["ok"]


def test_another_tls_port_is_in_the_url(tmp_path: Path, live_v1: FakeHost) -> None:
    """[verify.tls] port = 8443: the GET goes to 8443 and the URL shows it."""
    release_serves(live_v1, cert(30))
    steps, text = output()
    pipeline.deploy_to(live_v1, tls_config(tmp_path, port=8443), signed(V2), Options(), steps)
    assert f"GET https://{NAME}:8443/healthz" in live_v1.log
    assert f"GET https://{NAME}:8443/healthz -> 200; certificate valid 30 days" in text.getvalue()


@pytest.mark.parametrize(("days", "shown"), [(13, "13 days"), (1, "1 day"), (0, "0 days")])
def test_fewer_days_than_warn_days_warns_and_passes(
    tmp_path: Path, live_v1: FakeHost, days: int, shown: str
) -> None:
    """Days left under warn_days (14): a warning line with the date, the release stays live."""
    release_serves(live_v1, cert(days))
    steps, text = output()
    pipeline.deploy_to(live_v1, tls_config(tmp_path), signed(V2), Options(), steps)
    expires = (NOW + timedelta(days=days, hours=1)).strftime("%Y-%m-%d")
    assert (
        f"  ! certificate for {NAME} on 127.0.0.1:443 expires in {shown}, on {expires} "
        "([verify.tls] warn_days = 14): renew it"
    ) in text.getvalue().splitlines()
    assert [r.result for r in live_v1.audited()] == ["ok"]


def test_exactly_warn_days_left_does_not_warn(tmp_path: Path, live_v1: FakeHost) -> None:
    """14 days left with warn_days = 14 is not fewer: no warning."""
    release_serves(live_v1, cert(14))
    steps, text = output()
    pipeline.deploy_to(live_v1, tls_config(tmp_path), signed(V2), Options(), steps)
    assert "certificate valid 14 days" in text.getvalue()
    assert "renew it" not in text.getvalue()


EXPIRED_ON = NOW - timedelta(days=3)


@pytest.mark.parametrize(
    ("failure", "certificate", "detail", "ca_file", "why"),
    [
        (
            tls.Failure.EXPIRED,
            tls.Certificate((NAME,), NOW - timedelta(days=90), EXPIRED_ON),
            "certificate has expired",
            None,
            f"certificate for {NAME} on 127.0.0.1:443 expired on {EXPIRED_ON:%Y-%m-%d}",
        ),
        (
            tls.Failure.WRONG_NAME,
            cert(30, ("a.example", "b.example")),
            f"Hostname mismatch, certificate is not valid for '{NAME}'.",
            None,
            f"certificate on 127.0.0.1:443 is not valid for {NAME} (it is for: a.example, b.example)",
        ),
        (
            tls.Failure.UNTRUSTED,
            cert(30),
            "unable to get local issuer certificate",
            None,
            f"certificate for {NAME} on 127.0.0.1:443 is not trusted (unknown CA: unable to get "
            "local issuer certificate; set [verify.tls] ca_file for a test CA)",
        ),
        (
            tls.Failure.UNTRUSTED,
            cert(30),
            "self-signed certificate",
            Path("/etc/test-ca.pem"),
            f"certificate for {NAME} on 127.0.0.1:443 is not trusted (not issued by the CA in "
            "ca_file /etc/test-ca.pem: self-signed certificate)",
        ),
        (
            tls.Failure.HANDSHAKE,
            None,
            "TLSV1_ALERT_INTERNAL_ERROR",
            None,
            f"TLS handshake for {NAME} with 127.0.0.1:443 failed: TLSV1_ALERT_INTERNAL_ERROR",
        ),
    ],
    ids=["expired", "wrong-name", "untrusted", "untrusted-by-ca-file", "handshake"],
)
def test_a_refused_certificate_is_one_line_and_rolls_back(
    tmp_path: Path,
    live_v1: FakeHost,
    failure: tls.Failure,
    certificate: tls.Certificate | None,
    detail: str,
    ca_file: Path | None,
    why: str,
) -> None:
    """Expired, wrong name, untrusted, no handshake: scoreboard_1 is put back, the line says why."""
    release_serves(live_v1, certificate)
    live_v1.tls_failure, live_v1.tls_detail = failure, detail
    cfg = tls_config(tmp_path, ca_file=ca_file)
    with pytest.raises(DeployError) as failed:
        pipeline.deploy_to(live_v1, cfg, signed(V2), Options(), ui.Steps())
    assert failed.value.message == (
        f"[fake] scoreboard_2 failed verification: {why}; rolled back, scoreboard_1 is live"
    )
    verbs = live_v1.verbs()
    # Retried until [verify] timeout (2 s, every 0.5 s); the version page is never asked.
    # Between tries the units are looked at (a crash fails at once).
    tries = [f"GET https://{NAME}:443/healthz", "systemctl show"] * 5 + [
        f"GET https://{NAME}:443/healthz"
    ]
    [audit_line] = live_v1.audit_lines()
    assert verbs[verbs.index(SWAP) :] == [
        SWAP,
        "systemctl show",
        *tries,
        "deadman.hold",
        "check-release",
        BACK,
        "systemctl show",
        *HTTPS,
        "deadman.disarm",
        audit_line,
        "lock.release",
    ]
    [record] = live_v1.audited()
    assert (record.result, record.live, record.message) == ("rolled-back", "scoreboard_1", why)


def test_handshakes_failing_at_first_are_retried(tmp_path: Path, live_v1: FakeHost) -> None:
    """An app getting its first certificate (ACME) refuses a few handshakes: verify waits."""
    release_serves(live_v1, cert(89))
    refused = tls.Answer(failure=tls.Failure.HANDSHAKE, detail="TLSV1_ALERT_INTERNAL_ERROR")
    live_v1.handshakes = [refused, refused, refused]
    pipeline.deploy_to(live_v1, tls_config(tmp_path), signed(V2), Options(), ui.Steps())
    assert live_v1.log.count(f"GET https://{NAME}:443/healthz") == 4
    assert [r.result for r in live_v1.audited()] == ["ok"]


def test_the_last_failure_is_the_one_reported(tmp_path: Path, live_v1: FakeHost) -> None:
    """A self-signed placeholder first, then handshakes refused until the deadline: the line
    names the handshake, the last failure seen."""
    release_serves(live_v1, None)
    live_v1.handshakes = [
        tls.Answer(
            certificate=cert(1), failure=tls.Failure.UNTRUSTED, detail="self-signed certificate"
        )
    ]
    live_v1.tls_failure, live_v1.tls_detail = tls.Failure.HANDSHAKE, "EOF occurred in violation"
    with pytest.raises(DeployError) as failed:
        pipeline.deploy_to(live_v1, tls_config(tmp_path), signed(V2), Options(), ui.Steps())
    assert failed.value.message == (
        f"[fake] scoreboard_2 failed verification: TLS handshake for {NAME} with 127.0.0.1:443 "
        "failed: EOF occurred in violation; rolled back, scoreboard_1 is live"
    )


def test_a_wrong_status_over_https_names_the_url(tmp_path: Path, live_v1: FakeHost) -> None:
    """A verified connection whose health page answers 503: the HTTP failure, with the URL."""
    release_serves(live_v1, cert(89))
    live_v1.health = 503

    def back_to_v1(line: str) -> Result:
        live_v1.version, live_v1.health = "1", 200
        return Result("", "", 0)

    live_v1.on(r"portablectl reattach .*scoreboard_1\.raw", back_to_v1)
    with pytest.raises(DeployError) as failed:
        pipeline.deploy_to(live_v1, tls_config(tmp_path), signed(V2), Options(), ui.Steps())
    assert failed.value.message == (
        "[fake] scoreboard_2 failed verification: health check failed: "
        f"GET https://{NAME}/healthz -> 503 'ok', expected 200; rolled back, scoreboard_1 is live"
    )


def test_invoke_verify_checks_the_live_release_over_https(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """`invoke verify` on the live scoreboard_1: the same HTTPS checks and days-left line."""
    live_v1.version, live_v1.certificate = "1", cert(45)
    steps, text = output()
    pipeline.verify_live(live_v1, tls_config(tmp_path), steps)
    assert live_v1.verbs()[-2:] == HTTPS
    assert f"GET https://{NAME}/healthz -> 200; certificate valid 45 days" in text.getvalue()


def test_invoke_verify_with_an_expired_certificate_is_one_error(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """`invoke verify` reports the refused certificate as its one-line error (no rollback)."""
    live_v1.version = "1"
    live_v1.certificate = tls.Certificate((NAME,), NOW - timedelta(days=90), EXPIRED_ON)
    live_v1.tls_failure = tls.Failure.EXPIRED
    with pytest.raises(DeployError) as failed:
        pipeline.verify_live(live_v1, tls_config(tmp_path), ui.Steps())
    assert failed.value.message == (
        f"[fake] certificate for {NAME} on 127.0.0.1:443 expired on {EXPIRED_ON:%Y-%m-%d}"
    )


def test_dry_run_says_what_it_would_check(tmp_path: Path, live_v1: FakeHost) -> None:
    """A dry run names the URL, the port on the host, the name, the trust and the warning."""
    live_v1.dry_run = True
    steps, text = output()
    cfg = tls_config(tmp_path, ca_file=Path("/etc/test-ca.pem"), warn_days=7)
    pipeline.deploy_to(live_v1, cfg, signed(V2), Options(dry_run=True), steps)
    assert (
        "  would check scoreboard-http.socket, scoreboard-litestream.service, scoreboard.service "
        f"and GET https://{NAME}/healthz (through 127.0.0.1:443; certificate valid for {NAME}, "
        "trusted by the CAs in /etc/test-ca.pem, a warning under 7 days left)"
    ) in text.getvalue().splitlines()
    assert not any(line.startswith("GET") for line in live_v1.log)
