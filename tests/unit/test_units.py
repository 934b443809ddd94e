"""Reading a unit's role and the image paths it depends on."""

from portable_deploy.units import Kind, parse_unit

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
