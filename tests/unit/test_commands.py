"""Every remote command the tool runs, pinned as the exact line a shell would get."""

import subprocess

from portable_deploy.commands import files, journalctl, lock, portablectl, systemctl, trust
from portable_deploy.commands.layout import Layout


def test_layout_paths() -> None:
    """Images live where portablectl looks; the app's state under /var/lib/portable-deploy."""
    lay = Layout("scoreboard")
    assert lay.image("scoreboard_1.2") == "/var/lib/portables/scoreboard_1.2.raw"
    assert lay.manifest("scoreboard_1.2") == (
        "/var/lib/portable-deploy/scoreboard/releases/scoreboard_1.2.manifest.json"
    )
    assert lay.signature("scoreboard_1.2").endswith(".manifest.json.sig")
    assert lay.lock == "/var/lib/portable-deploy/scoreboard/deploy.lock"
    assert lay.audit_log == "/var/lib/portable-deploy/scoreboard/audit.jsonl"


def test_reattach_never_uses_now_by_default() -> None:
    """reattach without --now keeps sockets and sidecars running."""
    c = portablectl.reattach("/var/lib/portables/scoreboard_1.2.raw", "pd-hardened")
    assert c.render() == (
        "portablectl reattach --profile pd-hardened --copy=copy --enable "
        "/var/lib/portables/scoreboard_1.2.raw"
    )
    assert c.mutates


def test_first_attach_enables_and_starts() -> None:
    """The first deploy attaches with --now --enable."""
    c = portablectl.attach("/var/lib/portables/scoreboard_1.raw", "default")
    assert c.render() == (
        "portablectl attach --profile default --copy=copy --now --enable "
        "/var/lib/portables/scoreboard_1.raw"
    )


def test_detach_and_list() -> None:
    """detach and list render as expected; list is read-only."""
    assert portablectl.detach("x.raw", now=True).render() == "portablectl detach --now x.raw"
    assert portablectl.images_in_use().render() == (
        "sh -c 'cat /sys/block/loop*/loop/backing_file 2>/dev/null; true'"
    )
    assert not portablectl.images_in_use().mutates
    assert portablectl.is_attached("x").render() == "portablectl is-attached x"
    assert portablectl.inspect("x").render() == "portablectl inspect --no-pager x"


def test_systemctl_builders() -> None:
    """restart/start/stop take unit lists; show asks for the stability properties."""
    assert systemctl.restart(["a.service", "b.service"]).render() == (
        "systemctl restart a.service b.service"
    )
    assert systemctl.stop(["a.service"]).mutates
    assert systemctl.show(["a.service"]).render() == (
        "systemctl show --no-pager -p Id,LoadState,ActiveState,SubState,Result,NRestarts,"
        "MainPID,ActiveEnterTimestampMonotonic,ActiveEnterTimestamp a.service"
    )


def test_journalctl_filters_by_release() -> None:
    """logs of one release filter on the PORTABLE= journal field."""
    c = journalctl.logs("scoreboard", follow=True, lines=10, release="scoreboard_2")
    assert c.render() == (
        "journalctl --no-pager -o short-iso -u 'scoreboard.*' -u 'scoreboard-*' -u 'scoreboard@*' -n 10 -f PORTABLE=scoreboard_2.raw"
    )


def test_signature_check_uses_host_trust_root() -> None:
    """The host verifies with the app's own allowed_signers and the fixed namespace."""
    c = trust.verify_signature(
        "/m.json", "/m.json.sig", "deploy", Layout("scoreboard").allowed_signers
    )
    assert c.render() == (
        'sh -c \'ssh-keygen -Y verify -f "$1" -I "$2" -n "$3" -s "$4" < "$5"\' sh '
        "/etc/portable-deploy/scoreboard/allowed_signers deploy portable-deploy /m.json.sig /m.json"
    )


def _sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True)


def test_image_check_script_runs_in_a_real_shell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The check passes for the release's manifest with the image's hash, fails (exit 1) for
    another hash, and exits OTHER_RELEASE for a manifest of another release."""
    img = tmp_path / "a.raw"
    img.write_bytes(b"image")
    digest = _sh(f"sha256sum {img}").stdout.split()[0]
    good = tmp_path / "good.json"
    good.write_text(f'{{\n  "image_sha256": "{digest}",\n  "release": "app_2"\n}}\n')
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "image_sha256": "00",\n  "release": "app_2"\n}\n')

    def check(manifest: str, release: str) -> int:
        return _sh(trust.image_matches_manifest(str(img), manifest, release).render()).returncode

    assert check(str(good), "app_2") == 0
    assert check(str(bad), "app_2") == 1
    assert check(str(good), "app_20") == trust.OTHER_RELEASE
    assert check(str(good), "app_") == trust.OTHER_RELEASE


def test_the_one_round_trip_check_runs_in_a_real_shell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """trust.check_release with a real ssh-keygen: passes a signed manifest of this release
    that holds the image's hash; exits BAD_SIGNATURE, OTHER_RELEASE or 1 otherwise; with show,
    prints the manifest first (NO_MANIFEST when there is none)."""
    key = tmp_path / "key"
    _sh(f"ssh-keygen -q -t ed25519 -N '' -C deploy -f {key}")
    signers = tmp_path / "allowed_signers"
    signers.write_text("deploy " + (tmp_path / "key.pub").read_text())
    img = tmp_path / "a.raw"
    img.write_bytes(b"image")
    digest = _sh(f"sha256sum {img}").stdout.split()[0]

    def signed(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        _sh(f"ssh-keygen -q -Y sign -f {key} -n portable-deploy {path}")
        return str(path)

    good = signed("good.json", f'{{\n  "image_sha256": "{digest}",\n  "release": "app_2"\n}}\n')
    bad = signed("bad.json", '{\n  "image_sha256": "00",\n  "release": "app_2"\n}\n')

    def check(manifest: str, release: str, sig: str = "", show: bool = False) -> tuple[int, str]:
        c = trust.check_release(
            manifest, sig or manifest + ".sig", "deploy", str(signers), str(img), release, show
        )
        done = _sh(c.render())
        return done.returncode, done.stdout

    assert check(good, "app_2") == (0, digest + "\n")
    assert check(bad, "app_2") == (1, digest + "\n")  # the hash it found, for the message
    assert check(good, "app_3")[0] == trust.OTHER_RELEASE
    assert check(good, "app_2", sig=bad + ".sig")[0] == trust.BAD_SIGNATURE
    code, out = check(good, "app_2", show=True)
    assert code == 0
    text, marker, rest = out.partition(trust.CHECKED)
    assert (text.strip(), marker, rest.strip()) == (
        (tmp_path / "good.json").read_text().strip(),
        trust.CHECKED,
        digest,
    )
    assert check(str(tmp_path / "none.json"), "app_2", show=True)[0] == trust.NO_MANIFEST


def test_lock_is_exclusive_and_released_only_by_its_owner(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A second acquire fails with HELD and prints the holder; release needs the token."""
    path = str(tmp_path / "deploy.lock")
    assert (
        _sh(lock.acquire(path, '{"token":"t1"}', str(tmp_path / "incoming")).render()).returncode
        == 0
    )
    second = _sh(lock.acquire(path, '{"token":"t2"}', str(tmp_path / "incoming")).render())
    assert second.returncode == lock.HELD
    assert '"t1"' in second.stdout
    _sh(lock.release(path, "t2").render())
    assert (tmp_path / "deploy.lock").exists()
    _sh(lock.release(path, "t1").render())
    assert not (tmp_path / "deploy.lock").exists()
    assert not list(tmp_path.glob("deploy.lock.*"))


def test_file_builders_in_a_real_shell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """write is atomic and exact; append_log adds one line; cat/sha256 of a missing file print nothing."""
    target = str(tmp_path / "f")
    assert _sh(files.write(target, "a 'b'\n$x").render()).returncode == 0
    assert (tmp_path / "f").read_text() == "a 'b'\n$x"
    log = str(tmp_path / "log")
    _sh(files.append_log(log, '{"a": 1}').render())
    _sh(files.append_log(log, '{"b": 2}').render())
    assert (tmp_path / "log").read_text() == '{"a": 1}\n{"b": 2}\n'
    assert _sh(files.cat(str(tmp_path / "none")).render()).stdout == ""
    assert _sh(files.sha256(str(tmp_path / "none")).render()).stdout == ""
    (tmp_path / "app_1.raw").write_text("")
    (tmp_path / "app_2.raw").write_text("")
    out = _sh(files.listing(str(tmp_path), "app_*.raw").render()).stdout.split()
    assert out == ["app_1.raw", "app_2.raw"]
    assert _sh(files.listing(str(tmp_path), "zzz_*.raw").render()).stdout == ""
    assert _sh(files.exists([target, str(tmp_path / "none")]).render()).stdout.split() == [target]


def test_the_audit_log_rotates_past_its_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Past MAX lines the older half moves to LOG.1: the log stays bounded, nothing is lost
    but the generation before."""
    log = tmp_path / "audit.jsonl"
    for n in range(1, 12):
        assert _sh(files.append_log(str(log), f"r{n}", max_lines=10).render()).returncode == 0
    assert log.read_text().split() == ["r7", "r8", "r9", "r10", "r11"]
    assert (tmp_path / "audit.jsonl.1").read_text().split() == [f"r{n}" for n in range(1, 7)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl", "audit.jsonl.1"]
