"""Secret values read on the deploying machine: each source, its failures (never showing the
value), the keyed digest, and masking."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from portable_deploy import secrets
from portable_deploy.command import Secret
from portable_deploy.config import (
    AppConfig,
    BuildConfig,
    Config,
    ImageConfig,
    SecretConfig,
    SignConfig,
)
from portable_deploy.secrets import SecretSourceError, SecretValue, check_sources, mask, resolve

UNITS = ("scoreboard.service",)
SALT = b"salt"
VALUE = "s3cr3t-Value"


def config(root: Path, *items: SecretConfig) -> Config:
    return Config(
        path=root / "deploy.toml",
        app=AppConfig(name="scoreboard", version="1"),
        build=BuildConfig(),
        image=ImageConfig(),
        sign=SignConfig(),
        hosts={},
        secrets={s.name: s for s in items},
    )


def one(root: Path, **source: str | Path) -> str:
    """The value of one secret named t with SOURCE."""
    values = resolve(config(root, SecretConfig("t", UNITS, **source)), SALT)  # type: ignore[arg-type]
    return values[0].value.value


def error(root: Path, timeout: float = 30.0, **source: str | Path) -> SecretSourceError:
    cfg = config(root, SecretConfig("t", UNITS, **source))  # type: ignore[arg-type]
    with pytest.raises(SecretSourceError) as info:
        resolve(cfg, SALT, timeout=timeout)
    return info.value


def secret_file(root: Path, content: bytes, mode: int = 0o600) -> Path:
    path = root / ".deploy" / "t"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    return path


# --- environment variable ----------------------------------------------------------------------


def test_env_source_gives_the_variable_as_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An env source is the variable's value exactly, trailing newline and spaces kept."""
    monkeypatch.setenv("PD_T", VALUE + " \n")
    assert one(tmp_path, env="PD_T") == VALUE + " \n"


def test_unset_env_is_an_error_with_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset variable: one line naming secret and variable, hint to export it."""
    monkeypatch.delenv("PD_T", raising=False)
    assert str(error(tmp_path, env="PD_T")) == (
        "secret t: environment variable PD_T is not set "
        "(hint: export it, or change [secrets.t] env)"
    )


def test_empty_env_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty variable counts as missing."""
    monkeypatch.setenv("PD_T", "")
    assert error(tmp_path, env="PD_T").message == "secret t: environment variable PD_T is empty"


# --- file --------------------------------------------------------------------------------------


def test_file_source_drops_exactly_one_trailing_newline(tmp_path: Path) -> None:
    """A file's value loses one trailing newline; other whitespace and newlines stay."""
    path = secret_file(tmp_path, f" {VALUE}\n\n".encode())
    assert one(tmp_path, file=path) == f" {VALUE}\n"


def test_file_without_newline_is_taken_whole(tmp_path: Path) -> None:
    """A file without a trailing newline is the value byte for byte."""
    path = secret_file(tmp_path, b"line1\nline2\r")
    assert one(tmp_path, file=path) == "line1\nline2\r"


def test_missing_file_is_an_error_with_hint(tmp_path: Path) -> None:
    """An absent file is named, with a hint to create it readable by its owner only."""
    path = tmp_path / ".deploy" / "t"
    assert str(error(tmp_path, file=path)) == (
        f"secret t: file {path} does not exist "
        "(hint: write the value to it (chmod 600), or change [secrets.t] file)"
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o601])
def test_file_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    """A file with any group or world permission is refused with a chmod 600 hint, not read."""
    path = secret_file(tmp_path, VALUE.encode(), mode)
    exc = error(tmp_path, file=path)
    assert exc.message == f"secret t: file {path} is accessible to others (mode {mode:04o})"
    assert exc.hint == f"chmod 600 {path}: a secret file is readable by its owner only"


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    """A file holding nothing but one newline is empty."""
    path = secret_file(tmp_path, b"\n")
    assert error(tmp_path, file=path).message == f"secret t: file {path} is empty"


def test_directory_is_not_a_secret_file(tmp_path: Path) -> None:
    """A directory at the path is refused as not a regular file."""
    assert error(tmp_path, file=tmp_path).message == f"secret t: {tmp_path} is not a regular file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    """A file its owner cannot read says so."""
    path = secret_file(tmp_path, VALUE.encode(), 0o000)
    assert error(tmp_path, file=path).message.startswith(f"secret t: cannot read file {path}")


def test_nul_byte_is_refused_without_the_value(tmp_path: Path) -> None:
    """A value with a NUL byte is refused, and the message does not show it."""
    path = secret_file(tmp_path, VALUE.encode() + b"\0x")
    exc = error(tmp_path, file=path)
    assert exc.message == f"secret t: file {path} gives a value with a NUL byte"
    assert VALUE not in str(exc)


def test_non_utf8_is_refused(tmp_path: Path) -> None:
    """A value that is not UTF-8 is refused, naming the offset of the bad byte."""
    path = secret_file(tmp_path, b"ab\xff")
    assert error(tmp_path, file=path).message == (
        f"secret t: file {path} gives a value that is not UTF-8 (invalid byte at 2)"
    )


def test_value_of_64_kib_is_accepted_and_one_byte_more_refused(tmp_path: Path) -> None:
    """64 KiB (plus the dropped newline) is the largest value."""
    path = secret_file(tmp_path, b"a" * 65536 + b"\n")
    assert len(one(tmp_path, file=path)) == 65536
    path = secret_file(tmp_path, b"a" * 65537)
    assert error(tmp_path, file=path).message == f"secret t: file {path} gives more than 64 KiB"


# --- command -----------------------------------------------------------------------------------


def test_command_stdout_is_the_value_minus_one_newline(tmp_path: Path) -> None:
    """A command's stdout, one trailing newline dropped, is the value; it runs in the project dir."""
    (tmp_path / "v").write_text(VALUE)
    assert one(tmp_path, command="cat v; printf '\\n\\n'") == VALUE + "\n"


def test_failing_command_shows_exit_code_and_first_stderr_line(tmp_path: Path) -> None:
    """A failing command: its exit code and the first line of its stderr, with a hint."""
    command = "echo out; echo 'no such entry' >&2; echo more >&2; exit 3"
    assert str(error(tmp_path, command=command)) == (
        f"secret t: command `{command}` failed (exit 3): no such entry "
        "(hint: run it by hand to see why, or change [secrets.t] command)"
    )


def test_failing_command_without_stderr(tmp_path: Path) -> None:
    """A command failing silently shows its exit code alone."""
    assert error(tmp_path, command="exit 1").message == "secret t: command `exit 1` failed (exit 1)"


def test_command_printing_nothing_is_an_error(tmp_path: Path) -> None:
    """A command that succeeds with an empty stdout (a newline only) gives no value."""
    assert error(tmp_path, command="echo").message == "secret t: command `echo` printed nothing"


def test_command_past_its_timeout_is_an_error(tmp_path: Path) -> None:
    """A command that runs too long is stopped and reported."""
    exc = error(tmp_path, timeout=0.2, command="sleep 5")
    assert exc.message == "secret t: command `sleep 5` did not finish within 0.2s"


def test_command_cannot_read_the_terminal_on_stdin(tmp_path: Path) -> None:
    """Stdin is empty: a command waiting on it ends at once instead of hanging the deploy."""
    assert error(tmp_path, command="cat").message == "secret t: command `cat` printed nothing"


# --- all of them -------------------------------------------------------------------------------


def test_resolve_reads_every_secret_in_name_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resolve gives one SecretValue per secret, by name, with its units and delivery."""
    monkeypatch.setenv("PD_B", "b-value")
    cfg = config(
        tmp_path,
        SecretConfig("b", UNITS, env="PD_B", environment="B_TOKEN"),
        SecretConfig("a", ("scoreboard-x.service",), command="echo a-value"),
    )
    values = resolve(cfg, SALT)
    assert [(v.name, v.value.value, v.units, v.environment) for v in values] == [
        ("a", "a-value", ("scoreboard-x.service",), None),
        ("b", "b-value", UNITS, "B_TOKEN"),
    ]


def test_check_sources_fails_on_the_first_missing_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_sources raises the same error resolve would, and passes when every source resolves."""
    monkeypatch.delenv("PD_MISSING", raising=False)
    check_sources(config(tmp_path, SecretConfig("a", UNITS, command="echo x")))
    with pytest.raises(SecretSourceError, match="PD_MISSING is not set"):
        check_sources(config(tmp_path, SecretConfig("z", UNITS, env="PD_MISSING")))


def test_no_secrets_resolve_to_nothing(tmp_path: Path) -> None:
    """A config without [secrets] resolves to an empty list."""
    assert resolve(config(tmp_path), SALT) == []


# --- digest ------------------------------------------------------------------------------------


def test_digest_changes_with_salt_value_and_name() -> None:
    """The digest depends on the salt, the value and the name."""
    base = secrets.digest("t", VALUE, SALT)
    assert base == secrets.digest("t", VALUE, SALT)
    assert base != secrets.digest("t", VALUE, b"other salt")
    assert base != secrets.digest("t", VALUE + "x", SALT)
    assert base != secrets.digest("u", VALUE, SALT)


def test_digest_is_not_a_plain_hash_of_the_value() -> None:
    """The digest is keyed: not sha256 of the value, nor of name NUL value."""
    got = secrets.digest("t", VALUE, SALT)
    assert got not in {
        hashlib.sha256(VALUE.encode()).hexdigest(),
        hashlib.sha256(f"t\0{VALUE}".encode()).hexdigest(),
    }
    assert len(got) == 64


def test_resolved_digest_is_the_keyed_digest(tmp_path: Path) -> None:
    """resolve fills in digest(name, value, salt)."""
    (value,) = resolve(config(tmp_path, SecretConfig("t", UNITS, command="echo v")), SALT)
    assert value.digest == secrets.digest("t", "v", SALT)


def test_secret_value_repr_hides_the_value() -> None:
    """repr of a SecretValue (as a traceback or assertion would print it) holds no value."""
    value = SecretValue("t", Secret(VALUE), UNITS, None, "d")
    assert VALUE not in repr(value)
    assert VALUE not in str(value)


# --- masking -----------------------------------------------------------------------------------


def sv(value: str) -> SecretValue:
    return SecretValue("t", Secret(value), UNITS, None, "d")


def test_mask_replaces_every_occurrence() -> None:
    """Each occurrence of a value becomes ***."""
    assert mask(f"a {VALUE} b {VALUE}", [sv(VALUE)]) == "a *** b ***"


def test_mask_replaces_each_line_of_a_multiline_value() -> None:
    """Lines of a multi-line value are masked one by one wherever they appear."""
    key = "-----BEGIN KEY-----\nAAAA1234\n\n-----END KEY-----\n"
    assert mask("got AAAA1234 here", [sv(key)]) == "got *** here"
    assert mask(f"x{key}y", [sv(key)]) == "x***y"


def test_mask_prefers_the_longer_of_overlapping_values() -> None:
    """A value containing another is masked whole, not around the shorter one."""
    assert mask("abcdef", [sv("cd"), sv("abcdef")]) == "***"


def test_mask_leaves_text_without_values_alone() -> None:
    """Text without any value, and blank lines of a value, are not touched."""
    assert mask("nothing  here\n", [sv("x1\n \n")]) == "nothing  here\n"


def test_env_value_that_is_not_utf8_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable holding bytes that are not UTF-8 is refused, naming the variable."""
    monkeypatch.setenv("PD_T", "ab\udcff")  # how Python holds the byte 0xff of the environment
    assert error(tmp_path, env="PD_T").message == (
        "secret t: environment variable PD_T gives a value that is not UTF-8 (invalid byte at 2)"
    )
