"""Parsers of remote output, fed with output recorded on the Debian 12 sandbox (systemd 252)."""

from portable_deploy import facts

# `portablectl list --no-legend --no-pager` after an app-only deploy: the old image is still
# "running" because Litestream was not restarted.
PORTABLECTL_LIST = """\
scoreboard_eab5cfd-dirty raw no Thu 2026-11-26 07:06:04 UTC Thu 2026-11-26 07:06:11 UTC 15.0M running
scoreboard_v2            raw no Thu 2026-11-26 07:07:06 UTC Thu 2026-11-26 07:07:15 UTC 15.0M running
"""

# The RootImage= lines of the attach drop-ins (the `attached` section of commands.state).
ATTACHED = "RootImage=/var/lib/portables/scoreboard_v2.raw\n" * 4

# `systemctl show -p ... scoreboard-http.socket scoreboard.service`
SYSTEMCTL_SHOW = """\
Id=scoreboard-http.socket
LoadState=loaded
ActiveState=active
SubState=listening
Result=success
NRestarts=0
MainPID=0
ActiveEnterTimestampMonotonic=26123456
ActiveEnterTimestamp=Thu 2026-11-26 07:06:21 UTC

Id=scoreboard.service
LoadState=loaded
ActiveState=active
SubState=running
Result=success
NRestarts=2
MainPID=648
ActiveEnterTimestampMonotonic=150123456
ActiveEnterTimestamp=Thu 2026-11-26 07:08:25 UTC
"""


def test_portable_images_keeps_name_and_state_despite_spaced_times() -> None:
    """Name is the first column and state the last, although the times hold spaces."""
    images = facts.portable_images(PORTABLECTL_LIST)
    assert [(i.name, i.state) for i in images] == [
        ("scoreboard_eab5cfd-dirty", "running"),
        ("scoreboard_v2", "running"),
    ]
    assert all(i.attached for i in images)


def test_no_images() -> None:
    """portablectl's 'No images.' line is not an image."""
    assert facts.portable_images("No images.\n") == []


def test_live_release_comes_from_the_attach_drop_ins() -> None:
    """The live release is the image the attached units point at, not a 'running' image."""
    assert facts.live_release(ATTACHED, "scoreboard") == "scoreboard_v2"
    assert facts.live_release("", "scoreboard") is None
    assert facts.live_release("RootImage=/var/lib/portables/other_1.raw\n", "scoreboard") is None


def test_live_release_majority_wins_when_units_disagree() -> None:
    """A half-finished attach reports the image most units point at."""
    text = "RootImage=/x/scoreboard_2.raw\nRootImage=/x/scoreboard_2.raw\nRootImage=/x/scoreboard_1.raw\n"
    assert facts.live_release(text, "scoreboard") == "scoreboard_2"


def test_unit_states() -> None:
    """systemctl show blocks become UnitState values keyed by unit."""
    states = facts.unit_states(SYSTEMCTL_SHOW)
    assert states["scoreboard-http.socket"].active
    assert states["scoreboard-http.socket"].sub_state == "listening"
    assert states["scoreboard.service"].main_pid == 648
    assert states["scoreboard.service"].n_restarts == 2
    assert states["scoreboard-http.socket"].active_enter == "Thu 2026-11-26 07:06:21 UTC"


def test_sha256sum() -> None:
    """The digest is the first field; empty output means no file."""
    assert facts.sha256sum("ab12  /var/lib/portables/x.raw\n") == "ab12"
    assert facts.sha256sum("") is None


def test_host_info() -> None:
    """KEY=VALUE lines from commands.trust.host_info."""
    info = facts.host_info(
        "systemd=252\nportablectl=/usr/bin/portablectl\nssh_keygen=/usr/bin/ssh-keygen\n"
        "trust=yes\nstate=no\nuser=root\n"
    )
    assert info.systemd_version == 252 and info.has_portablectl and info.trusted
    assert not info.set_up
    assert not facts.host_info("systemd=247\nportablectl=\n").has_portablectl


AUDIT = """\
{"at":"t1","event":"deploy","live":"app_1","release":"app_1","result":"ok","user":"u","origin":"o"}
not json
{"at":"t2","event":"deploy","live":"app_2","release":"app_2","result":"ok","user":"u","origin":"o"}
{"at":"t3","event":"deploy","live":"app_2","release":"app_3","result":"rolled-back","user":"u","origin":"o"}
"""


def test_audit_log_skips_garbage() -> None:
    """Unreadable lines are skipped, the rest parsed in order."""
    records = facts.audit_log(AUDIT)
    assert [r.release for r in records] == ["app_1", "app_2", "app_3"]
    assert records[2].result == "rolled-back"


def test_previous_release_follows_history_not_version_order() -> None:
    """After 1 -> 2 -> (3 rolled back), the previous of 2 is 1; a rollback to 1 makes 2 previous."""
    records = facts.audit_log(AUDIT)
    assert facts.live_history(records) == ["app_1", "app_2"]
    assert facts.previous_release(records, "app_2") == "app_1"
    records.append(facts.AuditRecord("t4", "rollback", "app_1", "app_1", "ok", "u", "o"))
    assert facts.previous_release(records, "app_1") == "app_2"


def test_previous_release_none_on_first_deploy() -> None:
    """With one release in history there is nothing to roll back to."""
    assert facts.previous_release(facts.audit_log(AUDIT.splitlines()[0]), "app_1") is None


def test_lock_record() -> None:
    """The lock file's JSON; a garbled lock still counts as held; no output is no lock."""
    rec = facts.lock_record(
        '{"token":"t","user":"alice","origin":"laptop","pid":7,"at":1.5,"release":"a_1","command":"deploy"}\n'
    )
    assert rec is not None and rec.user == "alice" and rec.pid == 7
    garbled = facts.lock_record("???")
    assert garbled is not None and garbled.user == "?"
    assert facts.lock_record("") is None


def test_audit_record_round_trip() -> None:
    """to_json output is read back by audit_log."""
    rec = facts.AuditRecord("t", "deploy", "a_1", "a_1", "ok", "u", "o", "m")
    assert facts.audit_log(rec.to_json()) == [rec]


def test_state_sections_split_the_one_round_trip_read() -> None:
    """The batched state read is split back into its named sections, empty ones included."""
    out = "### x:info\nsystemd=252\n### x:attached\n### x:audit\n{}\n{}\n"
    assert facts.state_sections(out, "### x:") == {
        "info": "systemd=252\n",
        "attached": "",
        "audit": "{}\n{}\n",
    }


def test_state_script_runs_in_a_real_shell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The state script prints every section even on a host with nothing set up."""
    import subprocess

    from portable_deploy.commands.layout import Layout
    from portable_deploy.commands.state import SECTION, host_state

    command = host_state(Layout("scoreboard"), str(tmp_path / "none"), str(tmp_path))
    out = subprocess.run(["sh", "-c", command.render()], capture_output=True, text=True)
    assert out.returncode == 0
    sections = facts.state_sections(out.stdout, SECTION)
    assert set(sections) == {"info", "attached", "live-manifest", "audit"}
    assert (
        facts.host_info(sections["info"]).set_up and not facts.host_info(sections["info"]).trusted
    )
