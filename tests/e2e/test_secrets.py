"""Secrets for real, on their own sandbox VM (sandbox-3): a token from a local file reaches the
app as an encrypted systemd credential and nowhere else; deploys switch code and secrets
together and a rollback brings back the secrets the target ran with; a secret-only change
restarts only the unit that gets it; Litestream replicates over SFTP to the VM's own sshd with
its SSH key as a credential; a missing source stops the deploy before any host is touched.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from portable_deploy.sandbox import VM, replica
from tests.project import Project, make_project, ok

pytestmark = pytest.mark.e2e

SECRETS_TOML = """
[secrets.api-token]
file = ".deploy/api-token"
units = ["scoreboard.service"]
"""


@pytest.fixture(scope="module")
def site(sandbox_fleet: list[VM], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The reference app on sandbox-3 with an API token from .deploy/api-token (mode 0600)."""
    vm = sandbox_fleet[2]
    p = make_project(vm, tmp_path_factory.mktemp("scoreboard-secrets"))
    p.reset()
    set_token(p, new_token("v1"))
    toml = p.root / "deploy.toml"
    text = toml.read_text().replace("sandbox = true", "sandbox = 3")
    assert "sandbox = 3" in text
    toml.write_text(text + SECRETS_TOML)
    yield p
    p.reset()
    p.ssh("rm -f /etc/default/scoreboard")


def new_token(tag: str) -> str:
    return f"tok-{tag}-{secrets.token_hex(12)}"


def set_token(p: Project, token: str) -> None:
    path = p.root / ".deploy" / "api-token"
    path.write_text(token + "\n")
    path.chmod(0o600)


def token(p: Project) -> str:
    return (p.root / ".deploy" / "api-token").read_text().strip()


def whoami(p: Project, bearer: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{p.vm.http_port}/api/whoami")
    if bearer is not None:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_the_token_reaches_the_app_and_nowhere_else(site: Project) -> None:
    """The app accepts exactly the token; it is in no image byte, dist/ file, echoed command,
    audit line, journal line, drop-in or file on the host in plain text."""
    site.reset()
    result = site.invoke("deploy", "--echo", version="sec1")
    ok(result)
    tok = token(site)
    assert whoami(site, tok) == 200
    assert whoami(site, "wrong") == 401 and whoami(site, None) == 401
    assert tok not in result.stdout + result.stderr
    for f in (site.root / "dist").iterdir():
        assert tok.encode() not in f.read_bytes(), f
    on_host = site.ssh(
        f"grep -rl -F {tok} /var/lib/portable-deploy /etc/systemd /var/lib/portables "
        "/run/systemd/system 2>/dev/null || true; "
        f"journalctl --no-pager -o cat | grep -c -F {tok} || true"
    )
    assert on_host.split() == ["0"], on_host
    dropins = site.ssh(
        "cat /etc/systemd/system/scoreboard.service.d/50-portable-deploy-secrets.conf; echo ===; "
        "cat /etc/systemd/system/scoreboard-overlap.service.d/50-portable-deploy-secrets.conf"
    )
    app, twin = dropins.split("===\n")
    assert "api-token" in app and twin == app  # the overlap twin runs with the same secrets
    audit = [
        json.loads(line)
        for line in site.ssh("cat /var/lib/portable-deploy/scoreboard/audit.jsonl").splitlines()
    ]
    assert audit[-1]["secrets"] and tok not in json.dumps(audit)


def test_rollback_brings_back_the_token_the_release_ran_with(site: Project) -> None:
    """sec2 with token v2, then rollback: sec1 runs with token v1 again, v2 is refused."""
    site.bring_to("sec1")
    v1 = token(site)
    assert whoami(site, v1) == 200
    set_token(site, new_token("v2"))
    v2 = token(site)
    ok(site.deploy_built("sec2"))
    assert (whoami(site, v2), whoami(site, v1)) == (200, 401)
    ok(site.invoke("rollback"))
    assert site.get("/version") == (200, "sec1\n")
    assert (whoami(site, v1), whoami(site, v2)) == (200, 401)
    set_token(site, v1)


def test_a_secret_only_change_restarts_the_app_not_the_socket(site: Project) -> None:
    """The live release again with a new token restarts the app only: the socket and Litestream
    keep running, and the new token is the one accepted."""
    site.bring_to_any()
    live = site.state().live
    assert live is not None
    sockets = site.unit("scoreboard-http.socket", "ActiveEnterTimestampMonotonic")
    litestream = site.unit("scoreboard-litestream.service", "MainPID")
    app = site.unit("scoreboard.service", "MainPID")
    old = token(site)
    set_token(site, new_token("v3"))
    result = site.deploy_built(live)
    ok(result)
    assert "overlap scoreboard.service: its secrets changed" in " ".join(result.stdout.split())
    assert site.unit("scoreboard-http.socket", "ActiveEnterTimestampMonotonic") == sockets
    assert site.unit("scoreboard-litestream.service", "MainPID") == litestream
    assert site.unit("scoreboard.service", "MainPID") != app
    assert (whoami(site, token(site)), whoami(site, old)) == (200, 401)


def test_a_missing_source_stops_before_any_host_is_touched(site: Project) -> None:
    """With the token file gone, deploy fails in one line naming the secret and its file, and
    the host is exactly as it was."""
    site.bring_to_any()
    before = site.snapshot()
    path = site.root / ".deploy" / "api-token"
    saved = path.read_text()
    path.unlink()
    try:
        result = site.deploy("secmiss")
    finally:
        path.write_text(saved)
        path.chmod(0o600)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.strip()]
    assert "api-token" in line
    assert site.snapshot() == before


def test_litestream_replicates_over_sftp_with_its_key_as_a_credential(site: Project) -> None:
    """Litestream ships the database to the VM's own sshd as the unprivileged replica user, with
    the SSH key delivered as an encrypted credential and the host key pinned; a deleted
    database comes back from that replica."""
    site.bring_to_any()
    key = site.root / ".deploy" / "replica_key"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "replica", "-f", str(key)],
            check=True,
        )
    host_key = site.ssh(replica.setup_script(Path(f"{key}.pub").read_text())).strip()
    site.ssh(
        "printf '%s\\n' 'LITESTREAM_CONFIG=/etc/litestream-sftp.yml' 'REPLICA_HOST=127.0.0.1:22' "
        f"'REPLICA_USER={replica.USER}' 'REPLICA_PATH={replica.HOME}/replicas/scoreboard' "
        f"'REPLICA_HOST_KEY={host_key}' > /etc/default/scoreboard"
    )
    toml = site.root / "deploy.toml"
    if "[secrets.replica-key]" not in toml.read_text():
        toml.write_text(
            toml.read_text()
            + '\n[secrets.replica-key]\nfile = ".deploy/replica_key"\n'
            + 'units = ["scoreboard-litestream.service", "scoreboard-restore.service"]\n'
        )
    try:
        result = site.deploy_built("secsftp")
        ok(result)
        site.add_points("sftp", 11)
        expected = site.scores()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            files = site.ssh(f"find {replica.HOME}/replicas -type f | wc -l").strip()
            if int(files) > 0:
                break
            time.sleep(2)
        assert int(files) > 0, site.ssh("journalctl -u scoreboard-litestream -n 30 --no-pager")
        time.sleep(5)  # Litestream ships the last write within a second or so
        site.ssh(
            "systemctl stop scoreboard.service scoreboard-litestream.service; "
            "rm -f /var/lib/private/scoreboard/app.db /var/lib/private/scoreboard/app.db-*; "
            "rm -rf /var/lib/private/scoreboard-replica/*"
        )
        # Both units order themselves after the restore oneshot, which finds no database.
        site.ssh("systemctl start scoreboard-litestream.service scoreboard.service")
        assert site.scores() == expected
        restore = site.ssh("journalctl -u scoreboard-restore.service --no-pager -o cat -n 50")
        assert "sftp" in restore.lower() or "restor" in restore.lower()
        assert "host key not verified" not in site.ssh(
            "journalctl -u scoreboard-litestream.service --no-pager -o cat"
        )
    finally:
        site.ssh("rm -f /etc/default/scoreboard")
