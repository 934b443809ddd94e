"""Unit files: which ones an image takes, reading them as systemd does, and what each is for."""

from __future__ import annotations

from pathlib import Path

import pytest

from portable_deploy.image import unit_mount_points
from portable_deploy.units import (
    Kind,
    UnitDirError,
    directives,
    is_attachable,
    logical_lines,
    parse_unit,
    unit_files,
)

SERVICE = """\
[Unit]
Description=scoreboard
[Service]
ExecStart=/usr/bin/scoreboard --db /var/lib/scoreboard/app.db
EnvironmentFile=-/etc/scoreboard.env
Restart=on-failure
"""


def test_service_lists_its_unit_file_binary_and_files() -> None:
    """Exec binaries, absolute arguments and EnvironmentFile are watched paths."""
    info = parse_unit("scoreboard.service", SERVICE)
    assert info.kind is Kind.SERVICE
    assert info.paths == {
        "usr/lib/systemd/system/scoreboard.service",
        "usr/bin/scoreboard",
        "var/lib/scoreboard/app.db",
        "etc/scoreboard.env",
    }


def test_option_with_path_value_is_watched() -> None:
    """`-config=/etc/x.yml` style arguments count as paths too."""
    info = parse_unit(
        "a-l.service", "[Service]\nExecStart=/usr/bin/l replicate -config=/etc/l.yml\n"
    )
    assert "etc/l.yml" in info.paths


def test_oneshot_without_remain_after_exit() -> None:
    """A plain oneshot is not restarted by deploys: it runs when the app starts."""
    assert (
        parse_unit("a-r.service", "[Service]\nType=oneshot\nExecStart=/bin/x\n").kind
        is Kind.ONESHOT
    )


def test_oneshot_with_remain_after_exit_is_a_service() -> None:
    """RemainAfterExit=yes makes a oneshot stay active, so it behaves like a service."""
    text = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/x\n"
    assert parse_unit("a-r.service", text).kind is Kind.SERVICE


def test_socket_names_its_service() -> None:
    """Service= in [Socket] says which service the socket activates."""
    info = parse_unit("a-http.socket", "[Socket]\nListenStream=80\nService=a.service\n")
    assert info.kind is Kind.SOCKET
    assert info.activates == "a.service"


def test_socket_defaults_to_same_name_service() -> None:
    """Without Service= a socket activates the service of the same name."""
    assert parse_unit("a.socket", "[Socket]\nListenStream=80\n").activates == "a.service"


def test_continuation_lines_and_comments() -> None:
    """Backslash continuations are joined; comments ignored."""
    text = "# c\n[Service]\n; c\nExecStart=/usr/bin/x \\\n  /etc/conf\n"
    assert "etc/conf" in parse_unit("a.service", text).paths


def test_round_trip_through_dict() -> None:
    """to_dict/from_dict keep everything (the manifest stores this)."""
    info = parse_unit("a-http.socket", "[Socket]\nService=a.service\n")
    assert type(info).from_dict(info.name, info.to_dict()) == info


def test_timer_is_other() -> None:
    """Units that are neither services nor sockets are OTHER."""
    assert parse_unit("a.timer", "[Timer]\nOnCalendar=daily\n").kind is Kind.OTHER


# --- reading unit files as systemd does ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        pytest.param(
            "A=x \\\n# comment\n; comment\n  y\n",
            ["A=x    y"],
            id="comment-inside-continuation-skipped",
        ),
        pytest.param("# note \\\nA=x\n", ["A=x"], id="comment-ending-in-backslash"),
        pytest.param("A=x\\\\\nB=y\n", ["A=x\\\\", "B=y"], id="escaped-backslash"),
        pytest.param("A=x \\\n\nB=y\n", ["A=x", "B=y"], id="blank-line-ends-continuation"),
        pytest.param("A=x \\\n  y \\", ["A=x    y"], id="continuation-at-end-of-file"),
        pytest.param("[S]\r\nA=x \\\r\ny\r\n", ["[S]", "A=x  y"], id="crlf"),
        pytest.param("\ufeff[S]\n  # c\n\n\tA = x \n", ["[S]", "A = x"], id="bom-indent"),
    ],
)
def test_logical_lines_follow_systemd(text: str, lines: list[str]) -> None:
    """Lines join and comments drop as in systemd's config_parse (conf-parser.c)."""
    assert list(logical_lines(text)) == lines


def test_directives_skip_a_commented_out_continuation_line() -> None:
    """A commented line inside ExecStart's continuation is not part of the command."""
    text = "[Service]\nExecStart=/usr/bin/x \\\n# --old /etc/old\n  /etc/conf\n"
    assert [v.split() for _, _, v in directives(text)] == [["/usr/bin/x", "/etc/conf"]]
    assert "etc/old" not in parse_unit("a.service", text).paths


def test_image_reads_units_with_the_same_reader() -> None:
    """unit_mount_points skips a comment inside a continuation, as parse_unit does."""
    text = "[Service]\nStateDirectory=a \\\n# b\n  c\n"
    assert unit_mount_points(text) == ["var/lib/a", "var/lib/c"]


# --- which unit files an image takes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "attachable"),
    [
        ("app.service", True),
        ("app-http.socket", True),
        ("app@.service", True),
        ("app.target", True),
        ("app-daily.timer", True),
        ("app.path", True),
        ("app.mount", False),
        ("app.slice", False),
        ("apple.service", False),
        ("other.service", False),
        ("README.md", False),
    ],
)
def test_attachable_means_type_and_app_prefix(name: str, attachable: bool) -> None:
    """portablectl attaches .service .socket .target .timer .path named APP. APP- or APP@."""
    assert is_attachable(name, "app") is attachable


def test_unit_files_lists_the_units_by_name(tmp_path: Path) -> None:
    """A directory of the app's unit files gives them back sorted by name."""
    for name in ("app.service", "app-http.socket", "app@.service"):
        (tmp_path / name).write_text("[Unit]\n")
    assert [p.name for p in unit_files(tmp_path, "app")] == [
        "app-http.socket",
        "app.service",
        "app@.service",
    ]


@pytest.mark.parametrize(
    ("entry", "wording"),
    [
        ("README.md", "found README.md, which is not a unit file"),
        (".gitkeep", "found .gitkeep, which is not a unit file"),
        ("app.mount", "found app.mount: portablectl attaches no other types"),
        ("app.service.d/", "found app.service.d, a directory: portablectl"),
        ("app.service@", "found app.service, which is not a regular file"),
        ("web.service", 'expected unit names starting with "app." "app-" or "app@"'),
    ],
)
def test_unit_files_refuse_anything_else(tmp_path: Path, entry: str, wording: str) -> None:
    """Each kind of stray entry is an error with its own reason (dir/, broken-symlink@)."""
    (tmp_path / "app.socket").write_text("[Socket]\n")
    if entry.endswith("/"):
        (tmp_path / entry).mkdir()
    elif entry.endswith("@"):
        (tmp_path / entry[:-1]).symlink_to("missing")
    else:
        (tmp_path / entry).write_text("x\n")
    with pytest.raises(UnitDirError) as info:
        unit_files(tmp_path, "app")
    assert wording in info.value.message
    assert info.value.hint


def test_drop_in_hint_names_the_unit_to_merge_into(tmp_path: Path) -> None:
    """A UNIT.d directory's hint says to put its settings into UNIT itself."""
    (tmp_path / "app.service.d").mkdir()
    with pytest.raises(UnitDirError) as info:
        unit_files(tmp_path, "app")
    assert info.value.hint == "merge its settings into the unit file itself (app.service)"


def test_environment_paths_count_as_files_the_unit_reads() -> None:
    """A path in Environment= (a config the unit is pointed at) is one of its paths, so a release
    that changes it restarts the unit."""
    from portable_deploy.units import parse_unit

    text = '[Service]\nEnvironment="CONFIGS=/etc/a.yml /etc/b.yml"\nExecStart=/usr/bin/x -c ${C}\n'
    assert {"etc/a.yml", "etc/b.yml", "usr/bin/x"} <= parse_unit("x.service", text).paths
