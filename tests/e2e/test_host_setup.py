"""host.setup on a real Debian 12 VM (sandbox-3): systemd-container installed where it is
missing, and the trust root rotated with --add-key / --remove-key while deploys keep working.

sandbox-3 is shared with the fleet and secrets tests, so every test leaves it with
systemd-container installed, and the module resets the app on it before and after. The sandbox
has no package mirror: the VM's own systemd-container .deb (the version its package lists name)
is put into its apt cache, where `apt-get install` finds it without any network.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from portable_deploy import signers
from portable_deploy.sandbox import VM
from tests.conftest import ssh_run
from tests.project import LAYOUT, Project, make_project, ok

pytestmark = pytest.mark.e2e

PACKAGE = "systemd-container"
CACHE = "/var/cache/apt/archives"
TRUST = LAYOUT.allowed_signers
#: While this file exists, a watcher on the VM checks the trust root over and over.
WATCH = "/run/pd-test-watch-trust"
#: The .deb files this module put into the VM's apt cache (taken out again at the end).
_PLACED: list[str] = []


@pytest.fixture(scope="module")
def box(sandbox_fleet: list[VM], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The reference app aimed at sandbox-3, with a fresh host (no app, no trust root)."""
    p = make_project(sandbox_fleet[2], tmp_path_factory.mktemp("host-setup"))
    toml = p.root / "deploy.toml"
    toml.write_text(toml.read_text().replace("sandbox = true", "sandbox = 3"))
    p.reset()
    yield p
    try:
        if not _has_package(p):
            p.ssh(
                f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {PACKAGE}"
            )
    finally:
        p.ssh(f"rm -f {WATCH} " + " ".join(f"{CACHE}/{n}" for n in _PLACED))
        p.reset()


@pytest.fixture(scope="module")
def deb(box: Project, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The VM's systemd-container .deb, in its apt cache (fetched here with `apt-get download`)."""
    version = box.ssh(f"dpkg-query -W -f='${{Version}}' {PACKAGE}").strip()
    assert version, "sandbox-3 should have systemd-container installed"
    name = f"{PACKAGE}_{version.replace(':', '%3a')}_amd64.deb"
    if box.ssh(f"test -f {CACHE}/{name} && echo yes || true").strip() == "yes":
        return name
    local = tmp_path_factory.mktemp("deb")
    got = subprocess.run(
        ["apt-get", "download", f"{PACKAGE}={version}"],
        cwd=local,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    files = list(local.glob("*.deb"))
    if got.returncode != 0 or not files:
        pytest.skip(f"cannot get {PACKAGE} {version} on this machine: {got.stderr.strip()[-300:]}")
    ssh_run(box.vm, f"base64 -d > {CACHE}/{name}", input=base64.b64encode(files[0].read_bytes()))
    _PLACED.append(name)
    return name


def _has_package(p: Project) -> bool:
    out = p.ssh(f"dpkg-query -W -f='${{Status}}' {PACKAGE} 2>/dev/null || true")
    return out.strip() == "install ok installed"


def _remove_package(p: Project) -> None:
    p.ssh(f"DEBIAN_FRONTEND=noninteractive apt-get remove -y -q {PACKAGE} >/dev/null")
    assert not _has_package(p)
    assert p.ssh("command -v portablectl || true").strip() == ""


def _trusted(p: Project) -> list[str]:
    """Fingerprints of the keys the host's trust root lists, in file order."""
    return [k.fingerprint for k in signers.keys(p.ssh(f"cat {TRUST} 2>/dev/null || true"))]


def _fingerprint(pub: Path) -> str:
    return signers.public_key(pub, "key").fingerprint


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_without_yes_a_missing_package_is_named_and_nothing_changes(box: Project, deb: str) -> None:
    """No systemd-container and no --yes (no terminal to ask on): one error line naming the
    package and --yes; nothing is installed or created."""
    box.reset()
    if _has_package(box):
        _remove_package(box)
    result = box.invoke("host.setup")
    assert result.returncode == 1
    [line] = _errors(result)
    assert "has no portablectl (package systemd-container)" in line and "--yes" in line, line
    assert not _has_package(box)
    assert box.ssh("test -e /etc/portable-deploy && echo yes || echo no").strip() == "no"


def test_yes_installs_the_package_and_sets_the_host_up(box: Project, deb: str) -> None:
    """--yes runs apt-get install systemd-container on the host: portablectl answers, and the
    host is set up in the same run."""
    box.reset()
    if _has_package(box):
        _remove_package(box)
    # apt finds the package in its cache: nothing would be downloaded.
    uris = box.ssh(f"apt-get install --print-uris -y -q --no-install-recommends {PACKAGE}")
    assert "://" not in uris, uris
    result = box.invoke("host.setup", "--yes")
    ok(result)
    assert "sandbox: installed systemd-container;" in result.stdout
    assert _has_package(box)
    assert box.ssh("portablectl list --no-legend >/dev/null && echo ok").strip() == "ok"
    assert box.state().set_up


def test_a_second_run_changes_nothing(box: Project, deb: str) -> None:
    """host.setup --yes on a set-up host installs nothing and writes nothing."""
    if not (_has_package(box) and box.state().set_up):
        ok(box.invoke("host.setup", "--yes"))
    snapshot = (
        f"wc -l < /var/log/dpkg.log; sha256sum {TRUST}; "
        "stat -c '%n %Y' /etc/portable-deploy /var/lib/portable-deploy/scoreboard "
        f"{TRUST} /etc/systemd/portable/profile/pd-hardened/service.conf"
    )
    before = box.ssh(snapshot)
    result = box.invoke("host.setup", "--yes")
    ok(result)
    assert result.stdout.strip().endswith("sandbox: already set up"), result.stdout
    assert box.ssh(snapshot) == before


def test_the_key_deploy_toml_signs_with_is_kept_without_force(box: Project) -> None:
    """--remove-key of [sign] key's own key is refused before any host is touched."""
    if not box.state().set_up:
        ok(box.invoke("host.setup", "--yes"))
    before = box.ssh(f"cat {TRUST}")
    result = box.invoke("host.setup", "--remove-key", ".deploy/signing_key.pub")
    assert result.returncode == 1
    [line] = _errors(result)
    assert "[sign] trusts that key" in line and "--force" in line, line
    assert box.ssh(f"cat {TRUST}") == before


def test_key_rotation_keeps_deploys_working(box: Project) -> None:
    """Deploy signed with A; --add-key B; deploy signed with B; --remove-key A (never a moment
    with no key in the file, seen by a watcher on the host); deploy with B still works, and a
    release signed with A is refused."""
    if not box.state().set_up:
        ok(box.invoke("host.setup", "--yes"))
    key_a = box.root / ".deploy/signing_key.pub"
    key_b = box.root / ".deploy/key_b"
    if not key_b.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_b)], check=True
        )
    toml_b = box.root / "deploy-b.toml"
    toml_b.write_text(
        (box.root / "deploy.toml")
        .read_text()
        .replace('key = ".deploy/signing_key"', 'key = ".deploy/key_b"')
    )
    a, b = _fingerprint(key_a), _fingerprint(Path(f"{key_b}.pub"))
    ok(box.deploy("hs1"))
    assert box.get("/version") == (200, "hs1\n")

    added = box.invoke("host.setup", "--add-key", ".deploy/key_b.pub")
    ok(added)
    assert f"trusts key {b}" in added.stdout
    assert _trusted(box) == [a, b]
    ok(box.invoke("deploy", version="hs2", toml=toml_b))
    assert box.get("/version") == (200, "hs2\n")

    watcher = _watch_trust(box)
    try:
        removed = box.invoke("host.setup", "--remove-key", str(key_a), toml=toml_b)
    finally:
        box.ssh(f"rm -f {WATCH}")
        seen, _ = watcher.communicate(timeout=120)
    ok(removed)
    assert f"no longer trusts key {a}" in removed.stdout
    assert _trusted(box) == [b]
    assert seen.split()[-1] == "done" and "NOKEY" not in seen and int(seen.split()[0]) > 10, seen

    ok(box.invoke("deploy", version="hs3", toml=toml_b))
    assert box.get("/version") == (200, "hs3\n")
    refused = box.deploy("hs4")  # deploy.toml still signs with A
    assert refused.returncode == 1
    assert "signature check failed" in refused.stderr
    assert box.get("/version") == (200, "hs3\n")


def _watch_trust(p: Project) -> subprocess.Popen[str]:
    """A loop on the host that reads the trust root until WATCH is gone (bounded): prints NOKEY
    whenever the file it read had no key, then how many reads it made and `done`."""
    ssh_run(p.vm, f"touch {WATCH}")
    script = (
        f"n=0; while [ -e {WATCH} ] && [ $n -lt 200000 ]; do "
        f"grep -q ssh- {TRUST} || echo NOKEY; n=$((n+1)); done; echo $n; echo done"
    )
    return subprocess.Popen(p.vm.ssh_argv([script], batch=True), stdout=subprocess.PIPE, text=True)


def test_the_last_key_is_never_removed(box: Project) -> None:
    """--remove-key --force of the only key the host trusts is refused; the file stays."""
    if not box.state().set_up:
        ok(box.invoke("host.setup", "--yes"))
    pub = (box.root / ".deploy/signing_key.pub").read_text().split()
    box.ssh(f"printf 'deploy namespaces=\"portable-deploy\" {pub[0]} {pub[1]}\\n' > {TRUST}")
    before = box.ssh(f"cat {TRUST}")
    result = box.invoke("host.setup", "--remove-key", ".deploy/signing_key.pub", "--force")
    assert result.returncode == 1
    [line] = _errors(result)
    assert "would trust no key" in line, line
    assert box.ssh(f"cat {TRUST}") == before
