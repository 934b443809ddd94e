"""TLS for real, inside the sandbox: the reference app gets its certificate over ACME from pebble
(Let's Encrypt's test CA, running in the VM and validating on the app's socket-activated ports),
serves it on 443, keeps it across deploys and rollbacks, redirects HTTP to HTTPS, and `invoke
verify` checks it through the SSH connection. No traffic leaves the machine.

The module has a VM of its own (sandbox-2 of the session's fleet): the site settings it writes
to /etc/default/scoreboard turn TLS on for every deploy there.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from portable_deploy.sandbox import VM, acme
from tests.project import Project, make_project, ok

pytestmark = pytest.mark.e2e

DOMAIN = "scoreboard.test"


@pytest.fixture(scope="module")
def site(sandbox_fleet: list[VM], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The reference app on sandbox-2 with TLS on: pebble up, the site's settings written, and
    [verify.tls] checking the certificate against pebble's root."""
    vm = sandbox_fleet[1]
    p = make_project(vm, tmp_path_factory.mktemp("scoreboard-tls"))
    p.reset()
    (p.root / ".deploy" / "pebble-root.pem").write_text(acme.start(vm, [DOMAIN]))
    p.ssh(
        f"printf 'SCOREBOARD_DOMAINS={DOMAIN}\\nSCOREBOARD_ACME_DIRECTORY={acme.DIRECTORY_URL}\\n'"
        " > /etc/default/scoreboard"
    )
    toml = p.root / "deploy.toml"
    text = toml.read_text().replace("sandbox = true", "sandbox = 2")
    assert "sandbox = 2" in text
    toml.write_text(
        text + f'\n[verify.tls]\nname = "{DOMAIN}"\nca_file = ".deploy/pebble-root.pem"\n'
    )
    yield p
    p.reset()
    p.ssh(f"rm -f /etc/default/scoreboard; systemctl stop {acme.UNIT} || true")


def https_get(p: Project, path: str) -> tuple[int, str, str]:
    """GET https://DOMAIN/PATH through the VM's forwarded 443, trusting only pebble's root:
    (status, body, SHA-256 of the certificate served)."""
    context = ssl.create_default_context(cafile=str(p.root / ".deploy" / "pebble-root.pem"))
    with (
        socket.create_connection(("127.0.0.1", p.vm.https_port), timeout=60) as raw,
        context.wrap_socket(raw, server_hostname=DOMAIN) as tls,
    ):
        cert = tls.getpeercert(binary_form=True)
        assert cert is not None
        conn = http.client.HTTPConnection(DOMAIN)
        conn.sock = tls
        conn.request("GET", path, headers={"Host": DOMAIN, "Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode(), hashlib.sha256(cert).hexdigest()


def issued(p: Project) -> int:
    """How many certificates pebble has issued in this VM."""
    return int(p.ssh(acme.issued_count_script()).strip() or 0)


def test_first_deploy_gets_a_certificate_from_pebble(site: Project) -> None:
    """The first deploy obtains a certificate over ACME; 443 serves it for the domain, and the
    deploy's verify checked it through SSH."""
    site.reset()
    result = site.deploy_built("tls1")
    ok(result)
    shown = " ".join(result.stdout.split())  # rich wraps lines at the terminal's width
    assert f"GET https://{DOMAIN}/healthz -> 200; certificate valid" in shown
    assert issued(site) == 1
    assert https_get(site, "/version")[:2] == (200, "tls1\n")
    assert f"is live on sandbox: https://{DOMAIN}:{site.vm.https_port}/" in shown
    assert "acme: stored certificate for scoreboard.test" in site.ssh(
        "journalctl -u scoreboard.service -o cat --no-pager"
    )


def test_deploys_and_rollbacks_keep_the_certificate(site: Project) -> None:
    """A second deploy and a rollback serve the same certificate: no new order at pebble."""
    site.bring_to("tls1")
    before = https_get(site, "/healthz")[2]
    count = issued(site)
    ok(site.deploy_built("tls2"))
    assert https_get(site, "/version")[1:] == ("tls2\n", before)
    ok(site.invoke("rollback"))
    assert https_get(site, "/version")[1:] == ("tls1\n", before)
    assert issued(site) == count


def test_http_redirects_to_https_except_the_challenge(site: Project) -> None:
    """Port 80 answers 308 to https://DOMAIN/PATH; the ACME challenge path is not redirected."""
    site.bring_to_any()
    conn = http.client.HTTPConnection("127.0.0.1", site.vm.http_port, timeout=30)
    conn.request("GET", "/healthz?x=1", headers={"Host": f"{DOMAIN}:80"})
    response = conn.getresponse()
    assert (response.status, response.getheader("Location")) == (
        308,
        f"https://{DOMAIN}/healthz?x=1",
    )
    conn = http.client.HTTPConnection("127.0.0.1", site.vm.http_port, timeout=30)
    conn.request("GET", "/.well-known/acme-challenge/none", headers={"Host": DOMAIN})
    assert conn.getresponse().status == 404


def test_verify_refuses_a_certificate_it_cannot_trust(site: Project, tmp_path: Path) -> None:
    """Without pebble's root, `invoke verify` fails in one line saying the certificate is not
    trusted, with the ca_file hint."""
    site.bring_to_any()
    toml = site.root / "deploy.toml"
    untrusting = site.root / "deploy-untrusting.toml"
    untrusting.write_text(
        toml.read_text().replace('ca_file = ".deploy/pebble-root.pem"\n', "") + ""
    )
    short = untrusting.read_text().replace("timeout = 60", "timeout = 3")
    untrusting.write_text(short)
    result = site.invoke("verify", toml=untrusting)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.strip()]
    assert "is not trusted" in line and "ca_file" in line
