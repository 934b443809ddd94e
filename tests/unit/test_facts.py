"""Parsers of remote output, fed with output recorded on the Debian 12 sandbox (systemd 252).

The files in ``recorded/`` are the exact output of each fact's command, as its builder renders it,
run over SSH on a sandbox VM: ``recorded/commands.json`` holds each command line and its exit
code, and ``scripts/record-facts`` records them all again (on a wiped host, then with
scoreboard_rec1 -> rec2 -> a broken rec3 rolled back). Times, PIDs and hashes change with each
recording; the expected values below are those of the files in the repository.

Edge cases a real host does not produce easily are hand-written, in the last section, and say so.
"""

from __future__ import annotations

import json
from pathlib import Path

from portable_deploy import facts, history, profiles
from portable_deploy.command import Command
from portable_deploy.commands import files, lock, portablectl, status, systemctl, trust
from portable_deploy.commands.layout import PORTABLES_DIR, STATE_ROOT, Layout
from portable_deploy.commands.state import SECTION, host_state
from portable_deploy.host import Result
from portable_deploy.manifest import Manifest
from portable_deploy.preflight import state_command

RECORDED = Path(__file__).parent / "recorded"
#: The releases whose images backed a loop device when images_in_use.txt was recorded.
RECORDED_IN_USE = {"scoreboard_rec1", "scoreboard_rec2"}
LAYOUT = Layout("scoreboard")
APP_UNITS = ("scoreboard-http.socket", "scoreboard.service", "scoreboard-litestream.service")
#: The lock's holder as scripts/record-facts wrote it (the shape locking.deploy_lock writes).
HOLDER = facts.LockRecord(
    token="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    user="alice",
    origin="laptop",
    pid=4242,
    at=1790000000.25,
    release="scoreboard_rec4",
    command="deploy",
    machine="9e8d7c6b5a4f40e1b2c3d4e5f6a7b8c9",
    boot="5f1c9b0de0c54ab0a1e2f3c4d5e6f708",
)
#: The record the second (refused) deploy tried to take the lock with.
CONTENDER = '{"token": "contender"}'


def recorded(name: str) -> str:
    return (RECORDED / f"{name}.txt").read_text()


#: Each recording and the builder that renders its command; a changed builder must be re-recorded.
BUILDERS: dict[str, Command] = {
    "host_state_fresh": host_state(LAYOUT, LAYOUT.allowed_signers, STATE_ROOT, profiles.DEFAULT),
    "images_in_use_none": portablectl.images_in_use(),
    "host_info": trust.host_info(LAYOUT.allowed_signers),
    "host_state": host_state(LAYOUT, LAYOUT.allowed_signers, STATE_ROOT, profiles.DEFAULT),
    "systemctl_show_active": systemctl.show(APP_UNITS),
    "systemctl_show_failed": systemctl.show(["pd-record-failed.service"]),
    "systemctl_show_unknown": systemctl.show(["pd-record-no-such-unit.service"]),
    "sha256sum_present": files.sha256(LAYOUT.image("scoreboard_rec2")),
    "sha256sum_absent": files.sha256(LAYOUT.image("scoreboard_absent")),
    "release_listing": files.listing(PORTABLES_DIR, "scoreboard_*.raw"),
    "images_in_use": portablectl.images_in_use(),
    "lock_free": lock.acquire(
        LAYOUT.lock, json.dumps(HOLDER.__dict__, sort_keys=True), LAYOUT.incoming_dir
    ),
    "lock_held": lock.acquire(LAYOUT.lock, CONTENDER, LAYOUT.incoming_dir),
    # `invoke status` (asserted in test_status.py): healthy, and with Litestream failed.
    "status_report": state_command(LAYOUT).then(status.report(LAYOUT)),
    "status_report_failed": state_command(LAYOUT).then(status.report(LAYOUT)),
}


def test_recordings_were_made_with_todays_commands() -> None:
    """Every recording's command line is what its builder renders now: parser and command agree."""
    index = json.loads((RECORDED / "commands.json").read_text())
    assert {name: index[name]["command"] for name in index} == {
        name: command.render(reveal=True) for name, command in BUILDERS.items()
    }
    assert {p.stem for p in RECORDED.glob("*.txt")} == set(BUILDERS)


def sections(name: str) -> dict[str, str]:
    return facts.state_sections(recorded(name), SECTION)


# -- host info and the one-round-trip state read ----------------------------------------------


def test_host_info_of_a_set_up_host() -> None:
    """trust.host_info on the set-up VM: systemd 252, both tools found, trusted, set up, root."""
    assert facts.host_info(recorded("host_info")) == facts.HostInfo(
        systemd_version=252,
        has_portablectl=True,
        has_ssh_keygen=True,
        trusted=True,
        set_up=True,
        user="root",
    )


def test_state_read_splits_into_its_sections() -> None:
    """The state script's output splits into info, attached, live-manifest and audit."""
    assert list(sections("host_state")) == [
        "info",
        "attached",
        "live-manifest",
        "audit",
        "profile-attached",
        "profile",
        "secrets-salt",
        "secret-sets",
        "secrets-dropins",
    ]
    assert sections("host_state")["info"] == recorded("host_info")


def test_live_release_comes_from_the_attach_drop_ins() -> None:
    """The live release is the image the three attached units point at (rec2, after rec3 failed)."""
    attached = sections("host_state")["attached"]
    assert attached == "RootImage=/var/lib/portables/scoreboard_rec2.raw\n" * 3
    assert facts.live_release(attached, "scoreboard") == "scoreboard_rec2"
    assert facts.live_release(attached, "other") is None


def test_live_manifest_section_is_the_live_release_and_matches_the_image() -> None:
    """The live-manifest section is rec2's manifest, whose image hash is the image's on the host."""
    manifest = Manifest.from_json(sections("host_state")["live-manifest"], "recorded")
    assert (manifest.release, manifest.version) == ("scoreboard_rec2", "rec2")
    assert manifest.image_sha256 == facts.sha256sum(recorded("sha256sum_present"))


def test_audit_section_parses_every_record() -> None:
    """The audit section: two good deploys and a rolled-back one, all fields typed."""
    records = facts.audit_log(sections("host_state")["audit"])
    assert records == [
        facts.AuditRecord(
            "2026-11-27T03:12:47+00:00",
            "deploy",
            "scoreboard_rec1",
            "scoreboard_rec1",
            "ok",
            "root",
            "vm",
        ),
        facts.AuditRecord(
            "2026-11-27T03:13:02+00:00",
            "deploy",
            "scoreboard_rec2",
            "scoreboard_rec2",
            "ok",
            "root",
            "vm",
        ),
        facts.AuditRecord(
            "2026-11-27T03:14:18+00:00",
            "deploy",
            "scoreboard_rec3",
            "scoreboard_rec2",
            "rolled-back",
            "root",
            "vm",
            "health check failed: GET /healthz -> 500 'failing on purpose (failHealth)', expected 200",
        ),
    ]


def test_history_skips_the_rolled_back_release() -> None:
    """rec3 never became live: history is rec1, rec2, and rollback from rec2 goes to rec1."""
    records = facts.audit_log(sections("host_state")["audit"])
    assert facts.live_history(records) == ["scoreboard_rec1", "scoreboard_rec2"]
    assert facts.previous_release(records, "scoreboard_rec2") == "scoreboard_rec1"


def test_state_read_of_a_never_deployed_host() -> None:
    """On a wiped host every section is there; only info has lines: not trusted, not set up."""
    fresh = sections("host_state_fresh")
    assert fresh == {
        "info": fresh["info"],
        "attached": "",
        "live-manifest": "",
        "audit": "",
        "profile-attached": "",
        "profile": fresh["profile"],
        "secrets-salt": "",
        "secret-sets": "",
        "secrets-dropins": "",
    }
    info = facts.host_info(fresh["info"])
    assert (info.systemd_version, info.trusted, info.set_up) == (252, False, False)
    assert facts.live_release(fresh["attached"], "scoreboard") is None
    assert facts.audit_log(fresh["audit"]) == []


# -- systemctl show ----------------------------------------------------------------------------


def test_unit_states_of_the_running_app() -> None:
    """systemctl show prints properties in its own order; each block becomes one UnitState."""
    assert facts.unit_states(recorded("systemctl_show_active")) == {
        "scoreboard-http.socket": facts.UnitState(
            id="scoreboard-http.socket",
            load_state="loaded",
            active_state="active",
            sub_state="running",
            result="success",
            n_restarts=0,  # a socket has no NRestarts or MainPID: they default to 0
            main_pid=0,
            active_enter_monotonic=27188220,
            active_enter="Fri 2026-11-27 03:12:42 UTC",
        ),
        "scoreboard.service": facts.UnitState(
            id="scoreboard.service",
            load_state="loaded",
            active_state="active",
            sub_state="running",
            result="success",
            n_restarts=0,
            main_pid=728,
            active_enter_monotonic=120744251,
            active_enter="Fri 2026-11-27 03:14:15 UTC",
        ),
        "scoreboard-litestream.service": facts.UnitState(
            id="scoreboard-litestream.service",
            load_state="loaded",
            active_state="active",
            sub_state="running",
            result="success",
            n_restarts=0,
            main_pid=475,
            active_enter_monotonic=29094009,
            active_enter="Fri 2026-11-27 03:12:44 UTC",
        ),
    }


def test_unit_state_of_a_failed_unit() -> None:
    """A unit whose process exited non-zero is failed/failed with Result=exit-code and no PID."""
    state = facts.unit_states(recorded("systemctl_show_failed"))["pd-record-failed.service"]
    assert state == facts.UnitState(
        id="pd-record-failed.service",
        load_state="loaded",
        active_state="failed",
        sub_state="failed",
        result="exit-code",
        n_restarts=0,
        main_pid=0,
        active_enter_monotonic=125083814,
        active_enter="Fri 2026-11-27 03:14:20 UTC",
    )
    assert not state.active


def test_unit_state_of_an_unknown_unit() -> None:
    """An unknown unit is still a block: not-found, inactive, never entered active."""
    state = facts.unit_states(recorded("systemctl_show_unknown"))["pd-record-no-such-unit.service"]
    assert state == facts.UnitState(
        id="pd-record-no-such-unit.service",
        load_state="not-found",
        active_state="inactive",
        sub_state="dead",
        result="success",
        n_restarts=0,
        main_pid=0,
        active_enter_monotonic=0,
        active_enter="",
    )


# -- files, lock, releases, portablectl --------------------------------------------------------


def test_sha256sum_of_a_present_file() -> None:
    """The digest is the first field of sha256sum's line."""
    assert (
        facts.sha256sum(recorded("sha256sum_present"))
        == "b381387d4fd084a28a5fb9aeec7b9d02365befbd7c3dd2d124839280a36e3813"
    )


def test_sha256sum_of_an_absent_file_is_none() -> None:
    """A missing file prints nothing, which reads as no file."""
    assert recorded("sha256sum_absent") == ""
    assert facts.sha256sum(recorded("sha256sum_absent")) is None


def test_held_lock_names_its_holder() -> None:
    """A refused acquire prints the holder's record (exit HELD), read back with every field."""
    index = json.loads((RECORDED / "commands.json").read_text())
    assert index["lock_held"]["exit_code"] == lock.HELD
    assert facts.lock_record(recorded("lock_held")) == HOLDER


def test_free_lock_is_no_lock() -> None:
    """Taking a free lock prints nothing: no holder."""
    index = json.loads((RECORDED / "commands.json").read_text())
    assert index["lock_free"]["exit_code"] == 0
    assert facts.lock_record(recorded("lock_free")) is None


class _OneCommandHost:
    """A host that answers one expected command with recorded output."""

    name = "recorded"
    dry_run = False

    def __init__(self, command: str, stdout: str) -> None:
        self.command, self.stdout = command, stdout

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        assert command.render(reveal=True) == self.command
        return Result(self.stdout, "", 0)


def test_release_listing_names_the_kept_releases() -> None:
    """The listing of /var/lib/portables gives the app's releases by name, in order."""
    host = _OneCommandHost(
        BUILDERS["release_listing"].render(reveal=True), recorded("release_listing")
    )
    assert history.kept_releases(host, LAYOUT) == [  # type: ignore[arg-type]
        "scoreboard_rec1",
        "scoreboard_rec2",
        "scoreboard_rec3",
    ]


def test_images_in_use_are_the_loop_devices_backing_files() -> None:
    """With rec2 live after an app-only change from rec1, rec2 (app) and rec1 (Litestream, not
    restarted) back loop devices; the failed rec3 does not, so pruning may delete it."""
    assert facts.images_in_use(recorded("images_in_use"), PORTABLES_DIR) == RECORDED_IN_USE


def test_no_images_in_use() -> None:
    """A host where nothing runs from an image has no backing files of ours."""
    assert facts.images_in_use(recorded("images_in_use_none"), PORTABLES_DIR) == set()


# -- edge cases a real host does not produce easily (hand-written) ------------------------------


def test_hand_written_live_release_majority_wins_when_units_disagree() -> None:
    """A half-finished attach (hand-written) reports the image most units point at."""
    text = "RootImage=/x/scoreboard_2.raw\nRootImage=/x/scoreboard_2.raw\nRootImage=/x/scoreboard_1.raw\n"
    assert facts.live_release(text, "scoreboard") == "scoreboard_2"


def test_hand_written_images_in_use_of_a_deleted_or_foreign_image() -> None:
    """A deleted image still in use (" (deleted)", hand-written) counts; other files do not."""
    output = (
        "/var/lib/portables/app_1.raw (deleted)\n/var/lib/machines/vm.raw\n"
        "/var/lib/portables/sub/app_2.raw\n/var/lib/portables/app_3.img\n"
    )
    assert facts.images_in_use(output, "/var/lib/portables") == {"app_1"}


def test_hand_written_host_without_portablectl() -> None:
    """A host without systemd-container (hand-written) has no portablectl and an old systemd."""
    info = facts.host_info("systemd=247\nportablectl=\n")
    assert not info.has_portablectl and info.systemd_version == 247


HAND_WRITTEN_AUDIT = """\
{"at":"t1","event":"deploy","live":"app_1","release":"app_1","result":"ok","user":"u","origin":"o"}
not json
{"at":"t2","event":"deploy","live":"app_2","release":"app_2","result":"ok","user":"u","origin":"o"}
"""


def test_hand_written_audit_log_skips_garbage() -> None:
    """A garbled line (hand-written: a torn write) is skipped, the rest parsed in order."""
    assert [r.release for r in facts.audit_log(HAND_WRITTEN_AUDIT)] == ["app_1", "app_2"]


def test_previous_release_follows_history_not_version_order() -> None:
    """After a rollback from 2 to 1, the previous of 1 is 2."""
    records = facts.audit_log(HAND_WRITTEN_AUDIT)
    records.append(facts.AuditRecord("t4", "rollback", "app_1", "app_1", "ok", "u", "o"))
    assert facts.previous_release(records, "app_1") == "app_2"


def test_previous_release_none_on_first_deploy() -> None:
    """With one release in history there is nothing to roll back to."""
    assert (
        facts.previous_release(facts.audit_log(HAND_WRITTEN_AUDIT.splitlines()[0]), "app_1") is None
    )


def test_hand_written_garbled_lock_still_counts_as_held() -> None:
    """A lock file that is not JSON (hand-written) is still a held lock, by '?'."""
    garbled = facts.lock_record("???")
    assert garbled is not None and garbled.user == "?"


def test_audit_record_round_trip() -> None:
    """to_json output is read back by audit_log."""
    rec = facts.AuditRecord("t", "deploy", "a_1", "a_1", "ok", "u", "o", "m")
    assert facts.audit_log(rec.to_json()) == [rec]


def test_state_script_runs_in_a_real_shell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The state script prints every section even on a host with nothing set up."""
    import subprocess

    from portable_deploy.commands.layout import Layout
    from portable_deploy.commands.state import SECTION, host_state

    command = host_state(Layout("scoreboard"), str(tmp_path / "none"), str(tmp_path), "default")
    out = subprocess.run(["sh", "-c", command.render()], capture_output=True, text=True)
    assert out.returncode == 0
    sections = facts.state_sections(out.stdout, SECTION)
    assert set(sections) == {
        "info",
        "attached",
        "live-manifest",
        "audit",
        "profile-attached",
        "profile",
        "secrets-salt",
        "secret-sets",
        "secrets-dropins",
    }
    assert facts.digest(sections["profile"]) is None
    assert (
        facts.host_info(sections["info"]).set_up and not facts.host_info(sections["info"]).trusted
    )


def test_exposure_is_the_overall_score() -> None:
    """The last line of systemd-analyze security gives the score; other text gives None."""
    line = "→ Overall exposure level for scoreboard.service: 1.0 OK :-)\n"
    assert facts.exposure(line) == 1.0
    assert facts.exposure("Unit x.service not found.") is None


def test_digest_is_one_sha256_or_none() -> None:
    """A profile section is a digest only when it is exactly one SHA-256."""
    assert facts.digest("a" * 64 + "\n") == "a" * 64
    assert facts.digest("") is None
    assert facts.digest("a" * 63) is None


def test_recorded_profile_sections_are_the_tools_profile() -> None:
    """After deploys with pd-hardened, both profile sections are the digest of its text."""
    from portable_deploy import profiles

    state = sections("host_state")
    expected = profiles.digest(profiles.text(profiles.DEFAULT))
    assert facts.digest(state["profile-attached"]) == expected
    assert facts.digest(state["profile"]) == expected
