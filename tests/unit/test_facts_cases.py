"""Fact parsers on the edge cases of their input: missing keys, odd values, garbled lines."""

from __future__ import annotations

from portable_deploy import facts
from portable_deploy.facts import AuditRecord, HostInfo, LockRecord, UnitState

# --- loop devices' backing files: the images in use ---------------------------------------------


def test_only_raw_files_directly_in_the_portables_dir_are_images_in_use() -> None:
    """Blank lines, other directories, a prefix-alike directory and other suffixes are skipped."""
    output = (
        "\n/var/lib/portables/app_1.raw\n/var/lib/portables2/app_2.raw\n"
        "/var/lib/portables/app_3.raw.tmp\n/x/var/lib/portables/app_4.raw\n"
    )
    assert facts.images_in_use(output, "/var/lib/portables") == {"app_1"}


# --- RootImage= lines: the live release -------------------------------------------------------


def test_the_most_common_image_wins_not_the_highest_name() -> None:
    """Three units on app_1, one on app_2 (a half-finished attach): app_1 is live."""
    lines = ["RootImage=/var/lib/portables/app_1.raw"] * 3 + ["RootImage=/x/app_2.raw"]
    assert facts.live_release("\n".join(lines), "app") == "app_1"


def test_an_image_name_holding_equals_signs_is_kept_whole() -> None:
    """Only the first "=" separates the key: the image name keeps the rest."""
    assert facts.live_release("RootImage=/p/app_1=x.raw\n", "app") == "app_1=x"


def test_a_bare_image_name_without_a_directory_is_read() -> None:
    """RootImage= without a directory still names the release."""
    assert facts.live_release("RootImage=app_3.raw\n", "app") == "app_3"


def test_the_app_is_the_name_before_the_first_underscore() -> None:
    """A version holding "_" (app_1_rc1) still belongs to app."""
    assert facts.live_release("RootImage=/p/app_1_rc1.raw\n", "app") == "app_1_rc1"


# --- systemctl show ---------------------------------------------------------------------------


def test_unit_state_reads_every_property() -> None:
    """Each property lands in its field; values keep any "=" after the first."""
    block = (
        "Id=app.service\nLoadState=loaded\nActiveState=active\nSubState=running\n"
        "Result=exit=odd\nNRestarts=3\nMainPID=42\nActiveEnterTimestampMonotonic=123456\n"
        "ActiveEnterTimestamp=Mon 2024-01-01 10:00:00 UTC\n"
    )
    assert facts.unit_states(block) == {
        "app.service": UnitState(
            "app.service",
            "loaded",
            "active",
            "running",
            "exit=odd",
            3,
            42,
            123456,
            "Mon 2024-01-01 10:00:00 UTC",
        )
    }


def test_missing_properties_are_empty_or_zero() -> None:
    """A block with only Id= (a unit systemd does not know): empty strings and zeros."""
    assert facts.unit_states("Id=gone.service\n") == {
        "gone.service": UnitState("gone.service", "", "", "", "", 0, 0, 0, "")
    }


def test_unparsable_numbers_are_zero() -> None:
    """NRestarts=[not set] and the like read as 0, not as an error."""
    state = facts.unit_states("Id=a.service\nNRestarts=[not set]\nMainPID=\n")["a.service"]
    assert (state.n_restarts, state.main_pid) == (0, 0)


def test_a_block_without_id_is_skipped_not_the_end() -> None:
    """A block with no Id= is skipped; the blocks after it are still read."""
    output = "LoadState=loaded\n\nId=b.service\nActiveState=active\n"
    assert list(facts.unit_states(output)) == ["b.service"]


# --- host_info --------------------------------------------------------------------------------


def test_host_info_reads_every_key() -> None:
    """Each KEY=VALUE lands in its field; a value keeps any "=" after the first."""
    output = (
        "systemd=252\nportablectl=/usr/bin/portablectl\nssh_keygen=/usr/bin/ssh-keygen\n"
        "trust=yes\nstate=yes\nuser=odd=name\n"
    )
    assert facts.host_info(output) == HostInfo(252, True, True, True, True, "odd=name")


def test_host_info_of_nothing_says_nothing_is_there() -> None:
    """No output (a host without the tools): version 0, nothing found, no user."""
    assert facts.host_info("") == HostInfo(0, False, False, False, False, "")


def test_host_info_with_an_unreadable_systemd_version_is_zero() -> None:
    """systemd=unknown reads as version 0 (too old), not as an error."""
    assert facts.host_info("systemd=unknown\n").systemd_version == 0


# --- audit log and lock file ------------------------------------------------------------------


def test_an_audit_line_without_user_origin_or_message_has_them_empty() -> None:
    """Only the required keys: user, origin and message are empty strings."""
    line = '{"at":"t","event":"deploy","release":"a_1","live":"a_1","result":"ok"}'
    assert facts.audit_log(line) == [AuditRecord("t", "deploy", "a_1", "a_1", "ok", "", "", "")]


def test_an_audit_record_is_one_line_of_json_with_sorted_keys() -> None:
    """to_json writes compact JSON, keys sorted, so lines compare and grep alike."""
    record = AuditRecord("t", "deploy", "a_2", "a_1", "refused", "u", "o", "m")
    assert record.to_json() == (
        '{"at":"t","event":"deploy","live":"a_1","message":"m","origin":"o",'
        '"release":"a_2","result":"refused","user":"u"}'
    )


def test_a_garbled_lock_is_held_by_an_unknown_owner() -> None:
    """A lock file that is not our JSON: held, its text as token, every other field unknown."""
    assert facts.lock_record("garbage\n") == LockRecord(
        token="garbage", user="?", origin="?", pid=0, at=0.0, release="?", command="?"
    )


def test_a_lock_record_of_an_older_version_has_no_machine_or_boot() -> None:
    """A lock written before machine and boot ids were recorded parses with both empty."""
    record = facts.lock_record(
        '{"at": 1.5, "command": "deploy", "origin": "ci", "pid": 7, "release": "a_1", '
        '"token": "t", "user": "u"}\n'
    )
    assert record == LockRecord("t", "u", "ci", 7, 1.5, "a_1", "deploy", machine="", boot="")
