"""The order of remote commands for deploy, a failed verify, rollback and dry runs (fake host)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from portable_deploy import pipeline, ui
from portable_deploy.commands import delta as deltacmd
from portable_deploy.commands import portablectl, trust
from portable_deploy.config import DeployConfig
from portable_deploy.errors import DeployError
from portable_deploy.host import Result
from portable_deploy.manifest import Manifest
from portable_deploy.release import Options

from .conftest import UNITS, FakeHost, arrived, config, manifest, signed

V2 = manifest("2", app="e")
IMG = "/var/lib/portables/scoreboard_2.raw"


def test_deploy_of_an_app_change_runs_the_commands_in_order(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """Lock, read state, upload, check on host, install, reattach without --now, restart the app only, verify, audit, unlock."""
    live_v1.version = "2"
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    assert live_v1.verbs() == [
        "lock.acquire",
        "state",
        "inventory",
        "delta.prepare",
        "put /var/lib/portable-deploy/scoreboard/incoming/scoreboard_2.manifest.json",
        "put /var/lib/portable-deploy/scoreboard/incoming/scoreboard_2.manifest.json.sig",
        "put /var/lib/portable-deploy/scoreboard/partial/scoreboard_2.delta",
        "delta.assemble",  # and the host-side check, in one command
        "install",
        # The dead-man switch rides on the swap, verify's own calls, and the audit record.
        "deadman.arm",
        f"portablectl reattach --profile pd-hardened --copy=copy --enable {IMG} && systemctl restart scoreboard.service",
        "systemctl show",
        "GET :80/healthz",
        "GET :80/version",
        "deadman.disarm",
        live_v1.log[-4],  # the audit line (timestamped)
        "listing",
        "images-in-use",
        "lock.release",
    ]
    assert live_v1.audit_lines() == [live_v1.log[-4]]
    assert [r.result for r in live_v1.audited()] == ["ok"]


def test_litestream_restarts_only_when_its_binary_changes(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """A new Litestream binary restarts the sidecar and the app, never the socket."""
    v2 = manifest("2", app="e", litestream="f")
    live_v1.version = "2"
    live_v1.on(r"incoming/scoreboard_2\.raw$", arrived(v2))
    pipeline.deploy_to(live_v1, config(tmp_path), signed(v2), Options(), ui.Steps())
    restarts = [line for line in live_v1.log if "systemctl restart" in line]
    assert restarts == [
        "portablectl reattach --profile pd-hardened --copy=copy --enable /var/lib/portables/scoreboard_2.raw && "
        "systemctl restart scoreboard-litestream.service scoreboard.service"
    ]


def test_new_units_are_started_and_removed_units_stopped(tmp_path: Path, live_v1: FakeHost) -> None:
    """A release without Litestream and with a new worker: the removed one is stopped before the
    swap (its unit file is still attached then), then the app restarts and the new one starts."""
    units = {n: t for n, t in UNITS.items() if n != "scoreboard-litestream.service"}
    units["scoreboard-worker.service"] = "[Service]\nExecStart=/usr/bin/scoreboard worker\n"
    v2 = manifest("2", app="e", units=units)
    live_v1.version = "2"
    live_v1.on(r"incoming/scoreboard_2\.raw$", arrived(v2))
    pipeline.deploy_to(live_v1, config(tmp_path), signed(v2), Options(), ui.Steps())
    assert [line for line in live_v1.log if "portablectl reattach" in line] == [
        "{ { systemctl stop scoreboard-litestream.service && portablectl reattach --profile "
        "pd-hardened --copy=copy --enable /var/lib/portables/scoreboard_2.raw ; } && "
        "systemctl restart scoreboard.service ; } && systemctl start scoreboard-worker.service"
    ]


def test_changed_socket_unit_is_refused_without_the_flag(tmp_path: Path, live_v1: FakeHost) -> None:
    """A socket unit change stops the deploy before reattach unless --restart-sockets is given."""
    v2 = manifest("2", socket="9")
    live_v1.on(r"incoming/scoreboard_2\.raw$", arrived(v2))
    with pytest.raises(DeployError, match="--restart-sockets"):
        pipeline.deploy_to(live_v1, config(tmp_path), signed(v2), Options(), ui.Steps())
    assert not any("portablectl reattach" in line for line in live_v1.log)
    assert live_v1.verbs()[-1] == "lock.release"


def test_failed_verify_reattaches_the_previous_release(tmp_path: Path, live_v1: FakeHost) -> None:
    """A failing health check puts scoreboard_1 back, verifies it, records it, and raises one message."""
    live_v1.health = 500
    live_v1.version = "1"

    def back_to_v1(line: str) -> Result:
        live_v1.health = 200
        return Result("", "", 0)

    live_v1.on(r"portablectl reattach .*scoreboard_1\.raw", back_to_v1)
    with pytest.raises(DeployError) as failure:
        pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    assert "rolled back, scoreboard_1 is live" in str(failure.value)
    swap = f"portablectl reattach --profile pd-hardened --copy=copy --enable {IMG} && systemctl restart scoreboard.service"
    after = live_v1.verbs()[live_v1.verbs().index(swap) :]
    assert after[:3] == [swap, "systemctl show", "GET :80/healthz"]
    back = (
        "portablectl reattach --profile pd-hardened --copy=copy --enable /var/lib/portables/scoreboard_1.raw && "
        "systemctl restart scoreboard.service"
    )
    tail = after[after.index(back) - 2 :]
    # The host's dead-man switch is held back; the rollback checks scoreboard_1's signature and
    # hash again (one command) before reattaching it.
    assert tail[:6] == [
        "deadman.hold",
        "check-release",
        back,
        "systemctl show",
        "GET :80/healthz",
        "GET :80/version",
    ]
    assert set(after[3 : after.index(back) - 2]) == {"GET :80/healthz", "systemctl show"}
    audit = live_v1.audit_lines()
    assert (
        len(audit) == 1
        and '"result":"rolled-back"' in audit[0]
        and '"live":"scoreboard_1"' in audit[0]
    )
    assert live_v1.verbs()[-1] == "lock.release"


def test_rollback_goes_to_the_previous_release_in_history(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """With scoreboard_2 live after scoreboard_1, rollback checks and reattaches scoreboard_1."""
    v1, v2 = manifest("1"), manifest("2", app="e")
    live_v1.version = "1"
    live_v1.live = "scoreboard_2"
    live_v1.manifests = {"scoreboard_1": v1, "scoreboard_2": v2}
    live_v1.on(r"releases/scoreboard_1\.manifest\.json$", Result(v1.to_json(), "", 0))
    live_v1.audit = (
        '{"at":"t1","event":"deploy","live":"scoreboard_1","release":"scoreboard_1","result":"ok"}\n'
        '{"at":"t2","event":"deploy","live":"scoreboard_2","release":"scoreboard_2","result":"ok"}\n'
    )
    plan = pipeline.rollback_on(live_v1, config(tmp_path), None, Options(), ui.Steps())
    assert plan.release == "scoreboard_1"
    verbs = live_v1.verbs()
    # The target's manifest is read and checked in one round trip, right after the state.
    assert verbs[:3] == ["lock.acquire", "state", "check-release"]
    assert (
        "portablectl reattach --profile pd-hardened --copy=copy --enable /var/lib/portables/scoreboard_1.raw && "
        "systemctl restart scoreboard.service"
    ) in verbs
    assert not any(v.startswith("put ") for v in verbs)
    # The audit record and the lock's release are one command: the rollback's last.
    [audit_line] = live_v1.audit_lines()
    assert live_v1.log[-1] == audit_line
    assert 'mv "$1" "$moved"' in audit_line and "scoreboard/deploy.lock" in audit_line
    assert verbs.count("lock.release") == 1  # the audit line above, named by its last part


def deployed_1_then_3_then_2(host: FakeHost) -> dict[str, Manifest]:
    """Kept images 1, 2, 3 (in file order); deployed 1, then 3, then 2, which is live."""
    kept = {f"scoreboard_{v}": manifest(v, app=a) for v, a in (("1", "a"), ("2", "e"), ("3", "f"))}
    host.live, host.manifests, host.version = "scoreboard_2", kept, "3"
    for name, m in kept.items():
        host.on(rf"releases/{name}\.manifest\.json$", Result(m.to_json(), "", 0))
    host.on(r"for f in", Result("".join(f"{name}.raw\n" for name in kept), "", 0))
    host.audit = "".join(
        f'{{"at":"t{i}","event":"deploy","live":"scoreboard_{v}","release":"scoreboard_{v}",'
        '"result":"ok","user":"u","origin":"o"}\n'
        for i, v in enumerate("132")
    )
    return kept


def test_rollback_picks_the_previous_release_by_history_not_by_version(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """Deployed 1, 3, 2 (live): rollback checks and reattaches scoreboard_3, the one live before."""
    deployed_1_then_3_then_2(live_v1)
    plan = pipeline.rollback_on(live_v1, config(tmp_path), None, Options(), ui.Steps())
    assert plan.release == "scoreboard_3"
    reattaches = [line for line in live_v1.log if line.startswith("portablectl reattach")]
    assert reattaches == [
        "portablectl reattach --profile pd-hardened --copy=copy --enable /var/lib/portables/scoreboard_3.raw && "
        "systemctl restart scoreboard.service"
    ]


def test_releases_marks_the_rollback_target_by_history(tmp_path: Path, live_v1: FakeHost) -> None:
    """`invoke releases` after deploying 1, 3, 2: newest deploy first, 2 live, 3 the target."""
    deployed_1_then_3_then_2(live_v1)
    rows = pipeline.releases_on(live_v1, config(tmp_path))
    assert [(r.release, r.live, r.rollback_target) for r in rows] == [
        ("scoreboard_2", True, False),
        ("scoreboard_3", False, True),
        ("scoreboard_1", False, False),
    ]


def test_prune_after_deploy_spares_live_target_and_running_images(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """keep_releases=2, kept 1, 2, 8, 9: deploying 2 over live 1 (both oldest by version) with a
    sidecar still running from 8 deletes only 9."""
    live_v1.version = "2"
    live_v1.on(
        r"for f in",
        Result("scoreboard_1.raw\nscoreboard_2.raw\nscoreboard_8.raw\nscoreboard_9.raw\n", "", 0),
    )
    live_v1.audit = "".join(
        f'{{"at":"t{i}","event":"{event}","live":"scoreboard_{v}","release":"scoreboard_{v}",'
        '"result":"ok","user":"u","origin":"o"}\n'
        for i, (event, v) in enumerate(
            [("deploy", "1"), ("deploy", "8"), ("deploy", "9"), ("rollback", "1")]
        )
    )
    live_v1.fail(
        portablectl.images_in_use,
        Result("/var/lib/portables/scoreboard_2.raw\n/var/lib/portables/scoreboard_8.raw\n", "", 0),
    )
    cfg = dataclasses.replace(config(tmp_path), deploy=DeployConfig(keep_releases=2))
    pipeline.deploy_to(live_v1, cfg, signed(V2), Options(), ui.Steps())
    assert [line for line in live_v1.log if line.startswith("rm ")] == [
        "rm -f /var/lib/portables/scoreboard_9.raw "
        "/var/lib/portable-deploy/scoreboard/releases/scoreboard_9.index "
        "/var/lib/portable-deploy/scoreboard/releases/scoreboard_9.manifest.json "
        "/var/lib/portable-deploy/scoreboard/releases/scoreboard_9.manifest.json.sig"
    ]


def test_dry_run_changes_nothing(tmp_path: Path, live_v1: FakeHost) -> None:
    """In a dry run every mutating command is only shown, and read-only ones still run."""
    live_v1.dry_run = True
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(dry_run=True), ui.Steps())
    executed = [line for line in live_v1.log if not line.startswith("(dry-run)")]
    assert all(v in ("state", "inventory") for v in (FakeHost(log=executed).verbs())), executed
    shown = [line for line in live_v1.log if line.startswith("(dry-run)")]
    assert (
        f"(dry-run) portablectl reattach --profile pd-hardened --copy=copy --enable {IMG} && systemctl restart scoreboard.service"
    ) in shown


def test_held_lock_fails_at_once_with_the_holder(tmp_path: Path, live_v1: FakeHost) -> None:
    """A lock held by someone else stops the deploy before anything else runs."""
    holder = (
        '{"at": 4102444800, "command": "deploy", "origin": "laptop", "pid": 1, '
        '"release": "scoreboard_9", "token": "t", "user": "alice"}\n'
    )
    live_v1.on(r'ln "\$tmp"', Result(holder, "", 3))
    with pytest.raises(DeployError, match=r"held by alice@laptop .*scoreboard_9"):
        pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    assert live_v1.verbs() == ["lock.acquire"]


def test_stale_lock_is_broken_only_with_the_flag(tmp_path: Path, live_v1: FakeHost) -> None:
    """--break-lock removes a lock older than lock_ttl and takes it."""
    holder = (
        '{"at": 1, "command": "deploy", "origin": "laptop", "pid": 1, '
        '"release": "scoreboard_9", "token": "oldtoken", "user": "alice"}\n'
    )
    attempts = iter([Result(holder, "", 3), Result("", "", 0)])
    live_v1.on(r'ln "\$tmp"', lambda line: next(attempts))
    live_v1.version = "2"
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(break_lock=True), ui.Steps())
    verbs = live_v1.verbs()
    assert verbs[:3] == ["lock.acquire", "lock.release", "lock.acquire"]
    assert "oldtoken" in live_v1.log[1]


def test_break_lock_does_not_break_a_young_lock_of_a_live_local_process(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """--break-lock on a young lock whose local owner runs: refused, holder named, nothing else run."""
    at = float(int(time.time()))
    origin, pid = socket.gethostname(), os.getpid()
    holder = json.dumps(
        {"at": at, "command": "deploy", "origin": origin, "pid": pid}
        | {"release": "scoreboard_9", "token": "livetoken", "user": "alice"}
    )
    live_v1.on(r'ln "\$tmp"', Result(holder + "\n", "", 3))
    with pytest.raises(DeployError) as held:
        pipeline.deploy_to(
            live_v1, config(tmp_path), signed(V2), Options(break_lock=True), ui.Steps()
        )
    since = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert str(held.value) == (
        f"[fake] deploy lock held by alice@{origin} (pid {pid}) since {since}, running `deploy` "
        "for scoreboard_9; it is not stale (younger than 900s and its owner may be alive)"
    )
    assert live_v1.verbs() == ["lock.acquire"]


def test_different_image_under_same_name_is_refused(tmp_path: Path, live_v1: FakeHost) -> None:
    """Releases are immutable: a host copy with another hash is never overwritten."""
    live_v1.fail(deltacmd.inventory, Result(f"image {'f' * 64}\n", "", 0))
    with pytest.raises(DeployError, match="immutable"):
        pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    assert not any(line.startswith("put") for line in live_v1.log)
    assert [(r.event, r.result) for r in live_v1.audited()] == [("deploy", "refused")]


def test_unset_host_is_refused_with_setup_hint(tmp_path: Path, live_v1: FakeHost) -> None:
    """A host without the trust root names `invoke host.setup`."""
    live_v1.info = "systemd=252\nportablectl=/usr/bin/portablectl\ntrust=no\nstate=no\n"
    with pytest.raises(DeployError, match=r"host.setup"):
        pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())


def test_host_without_portablectl_names_the_package(tmp_path: Path, live_v1: FakeHost) -> None:
    """A host lacking portablectl is told to install systemd-container."""
    live_v1.info = "systemd=252\nportablectl=\n"
    with pytest.raises(DeployError, match="systemd-container"):
        pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())


def test_refused_upload_is_audited_as_upload(tmp_path: Path, live_v1: FakeHost) -> None:
    """`invoke upload` of a release the host refuses writes an audit line with event "upload"."""
    live_v1.fail(
        trust.check_release, Result("", "Could not verify signature.", trust.BAD_SIGNATURE)
    )
    with pytest.raises(DeployError, match="signature check failed"):
        pipeline.upload_to(live_v1, config(tmp_path), signed(V2), ui.Steps())
    assert [(r.event, r.result) for r in live_v1.audited()] == [("upload", "refused")]
    assert not any(line.startswith("portablectl") for line in live_v1.log)


def test_a_profile_change_is_announced_and_installs_the_profile_first(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """Units attached with another profile text: the host gets the tool's profile written, the
    reattach names it, every service restarts once (sockets stay), and the plan says so."""
    live_v1.version = "2"
    live_v1.attached_profile = "0" * 64
    live_v1.host_profile = None
    shown: list[str] = []
    steps = ui.Steps()
    steps.info = shown.append  # type: ignore[method-assign]
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), steps)
    swap = next(line for line in live_v1.log if "portablectl reattach" in line)
    # The profile is written in the same round trip as the swap, before it.
    assert swap.index("pd-hardened/service.conf") < swap.index("portablectl reattach")
    assert swap.endswith(
        f"portablectl reattach --profile pd-hardened --copy=copy --enable {IMG} && "
        "systemctl restart scoreboard-litestream.service scoreboard.service ; }"
    )
    assert any("the portable profile changes to pd-hardened" in line for line in shown)


def test_a_profile_missing_on_the_host_stops_before_any_change(
    tmp_path: Path, live_v1: FakeHost
) -> None:
    """[deploy] profile naming a profile the host lacks fails in one line before the upload."""
    cfg = dataclasses.replace(config(tmp_path), deploy=DeployConfig(profile="mine"))
    live_v1.host_profile = None
    with pytest.raises(DeployError, match="has no portable profile 'mine'") as e:
        pipeline.deploy_to(live_v1, cfg, signed(V2), Options(), ui.Steps())
    assert e.value.hint and "/etc/systemd/portable/profile/mine/service.conf" in e.value.hint
    assert live_v1.verbs()[-1] == "lock.release"
    assert not any(line.startswith(("put ", "portablectl")) for line in live_v1.log)


def test_the_same_profile_is_not_written_again(tmp_path: Path, live_v1: FakeHost) -> None:
    """A host whose profile file matches the tool's text is not written to."""
    live_v1.version = "2"
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    assert not any("pd-hardened/service.conf" in line for line in live_v1.log)


def test_a_lock_of_a_dead_local_process_is_cleared_without_the_flag(
    tmp_path: Path, live_v1: FakeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """A young lock taken on this machine (same machine id and boot) by a pid that no longer
    exists is cleared by the next deploy, which says so; no --break-lock needed."""
    from portable_deploy.locking import boot_id, machine_id

    dead = subprocess.Popen(["true"])
    dead.wait()
    holder = json.dumps(
        {"at": float(int(time.time())), "command": "deploy", "origin": socket.gethostname()}
        | {"pid": dead.pid, "release": "scoreboard_9", "token": "deadtoken", "user": "alice"}
        | {"machine": machine_id(), "boot": boot_id()}
    )
    attempts = iter([Result(holder + "\n", "", 3), Result("", "", 0)])
    live_v1.on(r'ln "\$tmp"', lambda line: next(attempts))
    live_v1.version = "2"
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    assert live_v1.verbs()[:3] == ["lock.acquire", "lock.release", "lock.acquire"]
    assert "deadtoken" in live_v1.log[1]
    assert "clearing the deploy lock of alice@" in capsys.readouterr().out
