"""`invoke logs`: its journalctl command lines, its flags, and how journal lines are shown.

``recorded/journal_*.jsonl`` are journalctl's output on the sandbox VM (systemd 252.39), recorded
by hand: ``journal_grep_newest_first.jsonl`` is
``journalctl --no-pager -o json --output-fields MESSAGE,PRIORITY,_PID,SYSLOG_IDENTIFIER,_SYSTEMD_UNIT
-u 'scoreboard.*' -u 'scoreboard-*' -u 'scoreboard@*' -n 3 -r --grep 'boom|careful|debug'`` after a unit printed ``<3>boom``,
``<4>careful`` and ``<7>debug``; ``journal_full.jsonl`` is ``journalctl --no-pager -o json
-u 'scoreboard.*' -u 'scoreboard-*' -u 'scoreboard@*' -n 2 --grep 'boom|careful'`` (every field; newest first too, see in_order).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from invoke.context import MockContext
from invoke.exceptions import Exit

from portable_deploy import journal
from portable_deploy.command import Command
from portable_deploy.commands import journalctl
from portable_deploy.errors import DeployError
from portable_deploy.host import Result
from portable_deploy.tasks.logs import logs as logs_task

RECORDED = Path(__file__).parent / "recorded"
APP_UNITS = ["scoreboard-http.socket", "scoreboard-litestream.service", "scoreboard.service"]


def _recorded(name: str) -> list[str]:
    return (RECORDED / name).read_text().splitlines()


# --- the command ------------------------------------------------------------------------------


def test_the_view_asks_only_for_the_fields_it_shows() -> None:
    """The rendered view reads a JSON with only the fields a line shows (less work on the host)."""
    c = journalctl.logs("scoreboard", output="json", fields=journalctl.VIEW_FIELDS, lines=5)
    assert c.render() == (
        "journalctl --no-pager -o json --output-fields "
        "MESSAGE,PRIORITY,_PID,SYSLOG_IDENTIFIER,_SYSTEMD_UNIT -u 'scoreboard.*' -u 'scoreboard-*' -u 'scoreboard@*' -n 5"
    )


def test_grep_until_and_units_are_journalctl_flags() -> None:
    """--grep, --until and --unit reach journalctl as its own flags, each argument quoted."""
    c = journalctl.logs(
        "scoreboard",
        output="json",
        lines=10,
        units=["scoreboard.service", "scoreboard-http.socket"],
        since="1 hour ago",
        until="2026-11-27 12:00",
        grep="GET /api.*500$",
        reverse=True,
    )
    assert c.render() == (
        "journalctl --no-pager -o json -u scoreboard.service -u scoreboard-http.socket -n 10 -r "
        "--since '1 hour ago' --until '2026-11-27 12:00' --grep 'GET /api.*500$'"
    )
    assert not c.mutates


def test_an_empty_grep_pattern_is_still_passed() -> None:
    """--grep '' is a pattern (it matches every line), not a missing flag."""
    assert journalctl.logs("scoreboard", grep="").render().endswith("-n 100 --grep ''")


def test_a_follow_after_a_cursor_keeps_the_filters() -> None:
    """A follow starts after the last line shown, with the same units, pattern and release."""
    c = journalctl.logs(
        "scoreboard",
        output="json",
        follow=True,
        after_cursor="s=1;i=2a",
        units=["scoreboard.service"],
        grep="boom",
        release="scoreboard_2",
    )
    assert c.render() == (
        "journalctl --no-pager -o json -u scoreboard.service --after-cursor 's=1;i=2a' -f "
        "--grep boom PORTABLE=scoreboard_2.raw"
    )


def test_a_unit_may_be_named_without_service() -> None:
    """--unit takes a unit whole, or a .service without its suffix; each unit once."""
    picked = journalctl.unit_names(
        ["scoreboard", "scoreboard-http.socket", "scoreboard.service"], APP_UNITS
    )
    assert picked == ["scoreboard.service", "scoreboard-http.socket"]


def test_a_unit_that_is_not_the_apps_is_refused_with_the_apps_units() -> None:
    """--unit ssh is refused in one line that lists the units the app has."""
    with pytest.raises(DeployError) as caught:
        journalctl.unit_names(["ssh"], APP_UNITS)
    assert caught.value.message == (
        "--unit ssh: not a unit of the app; its units are scoreboard-http.socket, "
        "scoreboard-litestream.service, scoreboard.service"
    )
    assert caught.value.hint == "name one of them (a .service may be named without its suffix)"


def test_lines_is_reachable_as_n_and_unit_as_u() -> None:
    """`invoke logs -n 5 -u APP`: journalctl's own short flags; no other flag takes them."""
    names = {arg.name: set(arg.names) for arg in logs_task.get_arguments()}
    assert names["lines"] == {"lines", "n"}
    assert names["unit"] == {"unit", "u"}
    shorts = [n for ns in names.values() for n in ns if len(n) == 1]
    assert len(shorts) == len(set(shorts))
    assert {"grep", "g"} == names["grep"] and {"json", "j"} == names["json"]


# --- journalctl's answers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exit_code", "stderr", "other"),
    [
        (0, "", []),
        (1, "", []),  # --grep that matched nothing, -o json
        (1, "", ["-- No entries --"]),  # the same in a text output, or on a terminal
        (1, "Failed to add filter for units: No data available\n", []),  # a -u glob, no unit
    ],
)
def test_nothing_matched_is_not_a_failure(exit_code: int, stderr: str, other: list[str]) -> None:
    """journalctl exits 1 when nothing matched: for logs that is an empty answer, not an error."""
    assert journal.failure(exit_code, stderr, other) is None


@pytest.mark.parametrize(
    ("stderr", "other", "said"),
    [
        ('Bad pattern "(": missing closing parenthesis\n', [], 'Bad pattern "("'),
        ("", ["Failed to parse timestamp: garbage"], "Failed to parse timestamp: garbage"),
    ],
)
def test_a_bad_argument_is_a_failure_with_journalctls_words(
    stderr: str, other: list[str], said: str
) -> None:
    """A pattern or a time journalctl cannot read is a failure that quotes what it said
    (on its stderr, or on the terminal a follow runs on)."""
    detail = journal.failure(1, stderr, other)
    assert detail is not None and said in detail


# --- entries --------------------------------------------------------------------------------


def test_recorded_grep_output_is_put_oldest_first() -> None:
    """journalctl 252 gives --grep with --lines newest first; shown, they are oldest first,
    and two lines of one write (one timestamp) keep the journal's order."""
    log = journal.entries("sandbox", "\n".join(_recorded("journal_grep_newest_first.jsonl")))
    assert [e.message for e in log] == ["debug", "careful", "boom"]
    assert [e.message for e in journal.merged([log])] == ["boom", "careful", "debug"]
    assert log[0].usec == log[1].usec  # the tie that only the sequence number orders


def test_one_hosts_log_that_is_already_in_order_is_left_as_is() -> None:
    """Entries oldest first (journalctl without --grep) are not turned around."""
    log = journal.entries(
        "sandbox", "\n".join(reversed(_recorded("journal_grep_newest_first.jsonl")))
    )
    assert journal.in_order(log) == log


def test_priorities_colour_the_message_on_a_terminal() -> None:
    """err and worse red, warning yellow, info plain, debug dim; nothing without colour."""
    debug, warning, err = journal.entries(
        "sandbox", "\n".join(_recorded("journal_grep_newest_first.jsonl"))
    )
    assert (err.priority, warning.priority, debug.priority) == (3, 4, 7)
    assert err.render(tagged=False, colour=True).endswith("sh[909]: \x1b[31mboom\x1b[0m")
    assert warning.render(tagged=False, colour=True).endswith("\x1b[33mcareful\x1b[0m")
    assert debug.render(tagged=False, colour=True).endswith("\x1b[2mdebug\x1b[0m")
    assert "\x1b" not in err.render(tagged=False)
    info = journal.parse("sandbox", json.dumps({"__REALTIME_TIMESTAMP": "1", "MESSAGE": "hi"}))
    assert info is not None and info.render(colour=True).endswith(": hi")  # no PRIORITY: info


def test_one_hosts_line_has_no_host_tag() -> None:
    """On one host a line is `time unit[pid]: message`; on several `time [host] unit[pid]: ...`."""
    [e] = journal.entries("sandbox", _recorded("journal_grep_newest_first.jsonl")[2])
    assert e.render(tagged=False) == "2026-11-27T15:56:37.596564Z sh[909]: boom"
    assert e.render() == "2026-11-27T15:56:37.596564Z [sandbox] sh[909]: boom"


def test_json_of_one_host_is_journalctls_line_unchanged() -> None:
    """--json on one host prints each line exactly as journalctl -o json wrote it."""
    line = _recorded("journal_full.jsonl")[0]
    entry = journal.parse("sandbox", line)
    assert entry is not None and entry.json_line(tagged=False) == line


def test_json_of_several_hosts_adds_a_host_key_and_keeps_every_field() -> None:
    """--json on several hosts: a "host" key first (the deploy.toml name), then the journal's
    fields as they were."""
    line = _recorded("journal_full.jsonl")[0]
    entry = journal.parse("web-1", line)
    assert entry is not None
    tagged = entry.json_line()
    assert tagged.startswith('{"host":"web-1","')
    assert json.loads(tagged) == {"host": "web-1", **json.loads(line)}
    assert tagged.endswith(line[1:])


# --- the task, against fake hosts -------------------------------------------------------------


class FakeHost:
    """A host whose journalctl prints OUTPUT (or whose connection fails with FAIL)."""

    def __init__(
        self,
        name: str,
        output: list[str],
        exit_code: int = 0,
        stderr: str = "",
        fail: DeployError | None = None,
    ) -> None:
        self.name = name
        self.output = output
        self.exit_code = exit_code
        self.stderr = stderr
        self.fail = fail
        self.commands: list[tuple[str, bool]] = []

    def lines(
        self, command: Command, each: Callable[[list[str]], None], *, follow: bool = False
    ) -> Result:
        self.commands.append((command.render(), follow))
        if self.fail is not None:
            raise self.fail
        each(self.output)
        return Result("", self.stderr, self.exit_code)

    def close(self) -> None:
        pass


@pytest.fixture
def run_logs(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Runs the task body on the given fake hosts (None: the task must not open any)."""
    from portable_deploy.tasks import logs as module

    cfg = SimpleNamespace(app=SimpleNamespace(name="scoreboard"), image=SimpleNamespace(units=None))
    monkeypatch.setattr(module, "config", lambda: cfg)
    monkeypatch.setattr(module, "unit_files", lambda *_: [Path(u) for u in APP_UNITS])

    def run(fakes: list[FakeHost] | None, **flags: object) -> None:
        @contextlib.contextmanager
        def hosts(*_: object, **__: object) -> Iterator[list[FakeHost]]:
            assert fakes is not None, "a host was opened"
            yield fakes

        monkeypatch.setattr(module, "hosts", hosts)
        logs_task.body(MockContext(), **flags)

    return run


def _out(capsys: pytest.CaptureFixture[str]) -> tuple[list[str], list[str]]:
    out, err = capsys.readouterr()
    return out.splitlines(), err.splitlines()


def test_json_on_one_host_prints_journalctls_lines_and_nothing_else(
    run_logs: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    """--json on one host: journalctl -o json with every field, its lines printed as they came;
    a line that is not JSON (a message on its terminal) is not printed."""
    full = _recorded("journal_full.jsonl")
    host = FakeHost("sandbox", [*reversed(full), "-- No entries --"])
    run_logs([host], json=True, lines=2)
    assert host.commands == [
        (
            "journalctl --no-pager -o json -u 'scoreboard.*' -u 'scoreboard-*' -u 'scoreboard@*' -n 2",
            False,
        )
    ]
    assert _out(capsys) == ([*reversed(full)], [])


def test_the_view_of_one_host_is_journalctls_own_text(
    run_logs: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --json, one host's lines are journalctl's text as it wrote it (it colours them
    by priority itself: SYSTEMD_COLORS=1 on a terminal, 0 elsewhere), no host tag."""
    line = "2026-11-27T15:56:37.596564+00:00 sandbox sh[909]: boom"
    host = FakeHost("sandbox", [line])
    run_logs([host], follow=True)
    [(command, follow)] = host.commands
    assert follow and command == (
        "env SYSTEMD_COLORS=0 journalctl --no-pager -o short-iso-precise -u 'scoreboard.*' -u 'scoreboard-*' -u 'scoreboard@*' -n 100 -f"
    )
    assert _out(capsys) == ([line], [])


def test_a_filter_on_one_host_reads_newest_first_and_shows_oldest_first(
    run_logs: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    """--grep (or --since/--until) asks journalctl for the last lines newest first (-r) and
    shows them oldest first."""
    host = FakeHost("sandbox", _recorded("journal_grep_newest_first.jsonl"))
    run_logs([host], grep="boom|careful|debug", lines=3, unit=["scoreboard"])
    [(command, _)] = host.commands
    assert " -u scoreboard.service -n 3 -r --grep 'boom|careful|debug'" in command
    lines, _ = _out(capsys)
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["boom", "careful", "debug"]


def test_an_unreachable_host_is_reported_on_stderr_and_the_other_shown(
    run_logs: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    """On two hosts, one that cannot be reached is an error line on stderr; the other's lines,
    tagged, are on stdout (with --json: a "host" key); exit code 1 naming the failed host."""
    line = _recorded("journal_full.jsonl")[1]
    up = FakeHost("web", [line])
    down = FakeHost("down", [], fail=DeployError("[down] cannot reach 127.0.0.1:9", hint="up?"))
    with pytest.raises(Exit) as caught:
        run_logs([up, down], json=True)
    out, err = _out(capsys)
    assert [json.loads(o) for o in out] == [{"host": "web", **json.loads(line)}]
    assert err == ["error: [down] cannot reach 127.0.0.1:9 (hint: up?)"]
    assert caught.value.code == 1 and "logs failed on down of 2 hosts" in str(caught.value.message)


def test_a_failed_journalctl_is_one_error_with_its_words(run_logs: Callable[..., None]) -> None:
    """journalctl refusing the --since is the task's one error line, quoting journalctl."""
    host = FakeHost("sandbox", [], exit_code=1, stderr="Failed to parse timestamp: nope\n")
    with pytest.raises(Exit) as caught:
        run_logs([host], since="nope")
    message = str(caught.value.message)
    assert message.startswith("error: [sandbox] journalctl failed (exit 1): Failed to parse")


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        ({"lines": -1}, "--lines -1: expected 0 or more"),
        ({"follow": True, "until": "today"}, "--until with --follow"),
        ({"unit": ["ssh"]}, "--unit ssh: not a unit of the app"),
    ],
)
def test_bad_flags_are_refused_before_any_host_is_opened(
    run_logs: Callable[..., None], flags: dict[str, object], said: str
) -> None:
    """A bad --lines, --until with --follow, or a unit that is not the app's: one error line,
    exit code 1, no host opened."""
    with pytest.raises(Exit) as caught:
        run_logs(None, **flags)
    assert caught.value.code == 1 and said in str(caught.value.message)


def test_a_follow_of_several_hosts_starts_after_each_ones_newest_line(
    run_logs: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    """--follow on two hosts: the last lines of each (read newest first), then each host
    followed from just after the newest line shown of it, with the same filters."""
    newest_first = _recorded("journal_grep_newest_first.jsonl")
    newest = journal.parse("a", newest_first[0])
    a, b = FakeHost("a", newest_first), FakeHost("b", [])
    run_logs([a, b], follow=True, lines=3, grep="boom|careful|debug")
    assert newest is not None and [follow for _, follow in a.commands] == [False, True]
    assert a.commands[1][0].endswith(
        f"--after-cursor '{newest.cursor}' -f --grep 'boom|careful|debug'"
    )
    assert " -n 0 -f --grep " in b.commands[1][0]  # b showed nothing: only new lines
    lines, _ = _out(capsys)
    shown = ["boom", "careful", "debug"]  # then the fake's follow, as it comes
    assert [line.rsplit(" ", 1)[1] for line in lines] == shown + shown[::-1]


class QuietHost(FakeHost):
    """A host whose follow prints nothing until its connection is closed."""

    def __init__(self, name: str) -> None:
        super().__init__(name, [])
        self.closed = threading.Event()

    def lines(
        self, command: Command, each: Callable[[list[str]], None], *, follow: bool = False
    ) -> Result:
        self.commands.append((command.render(), follow))
        if follow:
            assert self.closed.wait(30), "never closed"
            return Result("", "", -1)
        return Result("", "", 0)

    def close(self) -> None:
        self.closed.set()


def test_stdout_closed_during_a_follow_of_several_hosts_ends_every_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`logs -f | head` on several hosts: the reader that finds stdout closed closes every
    host's connection, so a quiet host's stream ends too, and the task ends quietly."""
    from portable_deploy import logview

    def closed_stdout(self: logview.Out, texts: list[str]) -> None:
        if texts:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(logview.Out, "write", closed_stdout)
    loud = FakeHost("a", _recorded("journal_grep_newest_first.jsonl"))
    quiet = QuietHost("b")
    out = logview.Out(json=False, tagged=True, colour=False)
    commands = {h.name: Command(("journalctl", "-f")) for h in (loud, quiet)}
    started = time.monotonic()
    with pytest.raises(BrokenPipeError):
        logview.follow_all([loud, quiet], commands, out)  # type: ignore[list-item]
    assert quiet.closed.is_set() and time.monotonic() - started < 10
