"""deploy.toml loading: strict validation with file + key path messages, defaults, path resolution,
build-output checks and version resolution."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portable_deploy.config import (
    ENV_VERSION,
    Compression,
    Config,
    HostConfig,
    check_sources,
    load_config,
    resolve_version,
)
from portable_deploy.errors import ConfigError

APP = '[app]\nname = "scoreboard"\nversion = "1.4.2"\n'
HOST = '[hosts.prod]\naddress = "203.0.113.10"\n'
UNIT = "[Service]\nExecStart=/usr/bin/true\n"

#: Marks a path to create as a directory in `write`.
DIR = None


def write(
    tmp_path: Path, toml: str, files: dict[str, str | None] | None = None, units: bool = True
) -> Path:
    """Write deploy.toml (plus a valid units/ dir unless told not to) and return its path."""
    if units:
        (tmp_path / "units").mkdir()
        (tmp_path / "units" / "scoreboard.service").write_text(UNIT)
    for rel, content in (files or {}).items():
        target = tmp_path / rel
        if content is DIR:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    path = tmp_path / "deploy.toml"
    path.write_text(toml)
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# --- broken configs ---------------------------------------------------------------------------
# Each case: TOML text, files to create, the key path and the expected/found wording.

BROKEN = [
    pytest.param(
        APP + HOST + "[verify\n", {}, "TOML syntax error", "(at line 6, column 8)", id="syntax"
    ),
    pytest.param(
        APP + HOST + "[app]\n", {}, "TOML syntax error", "Cannot declare ('app',) twice", id="dup"
    ),
    pytest.param(APP + HOST + "[aap]\n", {}, "[aap]", "did you mean [app]?", id="table-typo"),
    pytest.param(
        APP + HOST + "[zzz]\n", {}, "[zzz]", "valid tables are [app], [build]", id="table-unknown"
    ),
    pytest.param(
        'colour = "red"\n' + APP + HOST,
        {},
        "colour",
        "unknown top-level key, expected only the tables [app]",
        id="top-key",
    ),
    pytest.param(
        APP + 'nmae = "x"\n' + HOST, {}, "[app] nmae", 'did you mean "name"?', id="app-key-typo"
    ),
    pytest.param(
        APP + '[hosts.prod]\nadress = "h"\n',
        {},
        "[hosts.prod] adress",
        'did you mean "address"?',
        id="host-key-typo",
    ),
    pytest.param(
        APP + HOST + "[verify]\ncolour = 1\n",
        {},
        "[verify] colour",
        "valid keys are port, path, status",
        id="verify-key-unknown",
    ),
    pytest.param(HOST, {}, "[app]", "required table is missing", id="app-missing"),
    pytest.param(
        'app = "x"\n' + HOST, {}, "[app]", 'expected a table, found "x" (string)', id="app-scalar"
    ),
    pytest.param(
        '[app]\nversion = "1"\n' + HOST,
        {},
        "[app] name",
        "required key is missing, expected a string",
        id="name-missing",
    ),
    pytest.param(
        '[app]\nname = 3\nversion = "1"\n' + HOST,
        {},
        "[app] name",
        "expected a string, found 3 (integer)",
        id="name-int",
    ),
    pytest.param(
        '[app]\nname = "my_app"\nversion = "1"\n' + HOST,
        {},
        "[app] name",
        'expected lowercase letters, digits and "-" (starting with a letter or digit), '
        'at most 64 characters, found "my_app" (string)',
        id="name-underscore",
    ),
    pytest.param(
        '[app]\nname = "Scoreboard"\nversion = "1"\n' + HOST,
        {},
        "[app] name",
        'found "Scoreboard" (string)',
        id="name-upper",
    ),
    pytest.param(
        '[app]\nname = "scoreboard\\n"\nversion = "1"\n' + HOST,
        {},
        "[app] name",
        'found "scoreboard\\n" (string)',
        id="name-newline",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "1_2"\n' + HOST,
        {},
        "[app] version",
        'found "1_2" (string) which contains "_"',
        id="version-underscore",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "1/2"\n' + HOST,
        {},
        "[app] version",
        "found \"1/2\" (string) which contains '/'",
        id="version-slash",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "1 2"\n' + HOST,
        {},
        "[app] version",
        "found \"1 2\" (string) which contains ' '",
        id="version-space",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = ""\n' + HOST,
        {},
        "[app] version",
        'found "" (string) which is empty',
        id="version-empty",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "1.0\u00e9"\n' + HOST,
        {},
        "[app] version",
        "which contains 'é'",
        id="version-non-ascii",
    ),
    pytest.param(
        APP + HOST + '[build]\ncommands = "make"\n',
        {},
        "[build] commands",
        'expected an array of strings, found "make" (string)',
        id="commands-string",
    ),
    pytest.param(
        APP + HOST + '[build]\ncommands = ["make", 1]\n',
        {},
        "[build] commands",
        "expected an array of non-empty strings, found 1 (integer) at index 1",
        id="commands-int",
    ),
    pytest.param(
        APP + HOST + '[image]\ncompression = "bz2"\n',
        {},
        "[image] compression",
        'expected one of zstd, gzip, xz, lz4, lzo, found "bz2" (string)',
        id="compression",
    ),
    pytest.param(
        APP + HOST + '[image]\nunits = "nope"\n',
        {},
        "[image] units",
        "expected a directory of systemd unit files, found no directory at",
        id="units-missing",
    ),
    pytest.param(
        APP + HOST,
        {"units/other.service": UNIT},
        "[image] units",
        'expected unit names starting with "scoreboard." "scoreboard-" or "scoreboard@", '
        "found other.service",
        id="unit-foreign",
    ),
    pytest.param(
        APP + HOST,
        {"units/scoreboardx.service": UNIT},
        "[image] units",
        "found scoreboardx.service",
        id="unit-prefix-no-separator",
    ),
    pytest.param(
        APP + HOST,
        {"units/README.md": "hi"},
        "[image] units",
        "expected only unit files (.service .socket .target .timer .path) in ",
        id="units-non-unit",
    ),
    pytest.param(
        APP + HOST,
        {"units/scoreboard.service.d": DIR},
        "[image] units",
        "found scoreboard.service.d",
        id="units-subdir",
    ),
    pytest.param(
        APP + HOST + '[image]\nunits = "empty"\n',
        {"empty": DIR},
        "[image] units",
        "expected at least one unit file, found an empty directory",
        id="units-empty",
    ),
    pytest.param(
        APP + HOST + '[image]\ntree = "skel"\n',
        {},
        "[image] tree",
        'expected an existing directory, found "skel" (string)',
        id="tree-missing",
    ),
    pytest.param(
        APP + HOST + '[image]\ntree = "skel"\n',
        {"skel": "a file"},
        "[image] tree",
        "is not a directory",
        id="tree-file",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"/usr/bin/x" = "x"\n',
        {},
        '[image] files."/usr/bin/x"',
        'expected a path relative to the image root, found "/usr/bin/x" (string)',
        id="dest-absolute",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"usr/../../x" = "x"\n',
        {},
        '[image] files."usr/../../x"',
        'expected a path inside the image, found "usr/../../x" (string) with ".."',
        id="dest-dotdot",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"" = "x"\n',
        {},
        '[image] files.""',
        'expected a file path inside the image, found "" (string)',
        id="dest-empty",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"./" = "x"\n',
        {},
        '[image] files."./"',
        'expected a file path inside the image, found "./" (string)',
        id="dest-dot",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"usr/bin/" = "x"\n',
        {},
        '[image] files."usr/bin/"',
        'expected a file path, found "usr/bin/" (string) ending in "/"',
        id="dest-trailing-slash",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"usr/bin/x" = "a"\n"./usr/bin/x" = "b"\n',
        {},
        '[image] files."./usr/bin/x"',
        'expected each destination once, found "usr/bin/x" (string) and "./usr/bin/x" (string), '
        'which both mean "usr/bin/x"',
        id="dest-duplicate-dot",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"usr/bin/x" = "a"\n"usr//bin/x" = "b"\n',
        {},
        '[image] files."usr//bin/x"',
        'found "usr/bin/x" (string) and "usr//bin/x" (string), which both mean "usr/bin/x"',
        id="dest-duplicate-slashes",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"usr/bin/x" = "a"\n"usr/bin/x/y" = "b"\n',
        {},
        '[image] files."usr/bin/x/y"',
        'expected "usr/bin/x" to be a directory, found it is a file (files."usr/bin/x")',
        id="dest-file-and-dir",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"usr/bin/x" = 1\n',
        {},
        '[image] files."usr/bin/x"',
        "expected the path of a local file, found 1 (integer)",
        id="source-int",
    ),
    pytest.param(
        APP + HOST + '[image]\nfiles = ["x"]\n',
        {},
        "[image] files",
        'expected a table of destination = source path, found ["x"] (array)',
        id="files-array",
    ),
    pytest.param(
        APP + HOST + '[sign]\nallowed_signers = "signers"\n',
        {},
        "[sign] allowed_signers",
        'expected an existing file, found "signers" (string)',
        id="allowed-signers-missing",
    ),
    pytest.param(
        APP + HOST + '[sign]\nprincipal = "ci deploy"\n',
        {},
        "[sign] principal",
        "expected a principal without whitespace or commas (printable ASCII), "
        'found "ci deploy" (string)',
        id="principal-space",
    ),
    pytest.param(APP, {}, "[hosts]", "required table is missing", id="hosts-missing"),
    pytest.param(
        APP + "[hosts]\n",
        {},
        "[hosts]",
        "expected at least one [hosts.NAME] table, found a table",
        id="hosts-empty",
    ),
    pytest.param(
        APP + '[hosts."my host"]\naddress = "h"\n',
        {},
        '[hosts."my host"]',
        'expected a host name of letters, digits, "-" and "_", found "my host" (string)',
        id="host-name",
    ),
    pytest.param(
        APP + '[hosts]\nprod = "203.0.113.10"\n',
        {},
        "[hosts.prod]",
        'expected a table, found "203.0.113.10" (string)',
        id="host-scalar",
    ),
    pytest.param(
        APP + HOST + "port = 0\n",
        {},
        "[hosts.prod] port",
        "expected an integer from 1 to 65535, found 0 (integer)",
        id="port-zero",
    ),
    pytest.param(
        APP + HOST + "port = 65536\n",
        {},
        "[hosts.prod] port",
        "found 65536 (integer)",
        id="port-high",
    ),
    pytest.param(
        APP + HOST + "port = true\n",
        {},
        "[hosts.prod] port",
        "expected an integer from 1 to 65535, found true (boolean)",
        id="port-bool",
    ),
    pytest.param(
        APP + '[hosts.prod]\nuser = "deploy"\n',
        {},
        "[hosts.prod] address",
        "required key is missing, expected a host name, IP address or ssh alias",
        id="address-missing",
    ),
    pytest.param(
        APP + '[hosts.prod]\naddress = "-oProxyCommand=x"\n',
        {},
        "[hosts.prod] address",
        'expected a host name, IP address or ssh alias, found "-oProxyCommand=x" (string)',
        id="address-option",
    ),
    pytest.param(
        APP + HOST + 'user = "de ploy"\n',
        {},
        "[hosts.prod] user",
        'expected a user name without whitespace, found "de ploy" (string)',
        id="user-space",
    ),
    pytest.param(
        APP + HOST + 'identity_file = ""\n',
        {},
        "[hosts.prod] identity_file",
        'expected a file system path, found "" (string)',
        id="identity-empty",
    ),
    pytest.param(
        APP + '[hosts.vm]\nsandbox = true\naddress = "h"\n',
        {},
        "[hosts.vm] address",
        'expected no address on a sandbox host, found "h" (string)',
        id="sandbox-address",
    ),
    pytest.param(
        APP + '[hosts.vm]\nsandbox = "yes"\n',
        {},
        "[hosts.vm] sandbox",
        'expected true, false, or the number N of sandbox-N (1 to 16), found "yes" (string)',
        id="sandbox-string",
    ),
    pytest.param(
        APP + HOST + "[deploy]\nkeep_releases = 1\n",
        {},
        "[deploy] keep_releases",
        "expected an integer of at least 2",
        id="keep-one",
    ),
    pytest.param(
        APP + HOST + "[deploy]\nlock_ttl = 0\n",
        {},
        "[deploy] lock_ttl",
        "expected a whole number of seconds above 0, found 0 (integer)",
        id="ttl-zero",
    ),
    pytest.param(
        APP + HOST + "[deploy]\nlock_ttl = 1.5\n",
        {},
        "[deploy] lock_ttl",
        "found 1.5 (float)",
        id="ttl-float",
    ),
    pytest.param(
        APP + HOST + "deploy = [1]\n",
        {},
        "[hosts.prod] deploy",
        "unknown key, valid keys are address, port",
        id="key-after-table-lands-in-host",
    ),
    pytest.param(
        "deploy = [1]\n" + APP + HOST,
        {},
        "[deploy]",
        "expected a table, found [1] (array)",
        id="deploy-array",
    ),
    pytest.param(
        APP + HOST + "[verify]\nport = 0\n",
        {},
        "[verify] port",
        "expected an integer from 1 to 65535, found 0 (integer)",
        id="verify-port",
    ),
    pytest.param(
        APP + HOST + '[verify]\npath = "healthz"\n',
        {},
        "[verify] path",
        'expected a URL path starting with "/", without spaces, found "healthz" (string)',
        id="verify-path",
    ),
    pytest.param(
        APP + HOST + "[verify]\npath = 1979-05-27\n",
        {},
        "[verify] path",
        "expected a string, found 1979-05-27 (date)",
        id="verify-path-date",
    ),
    pytest.param(
        APP + HOST + "[verify]\nstatus = 600\n",
        {},
        "[verify] status",
        "expected an HTTP status from 100 to 599, found 600 (integer)",
        id="verify-status",
    ),
    pytest.param(
        APP + HOST + '[verify]\nversion_path = "version"\n',
        {},
        "[verify] version_path",
        'expected a URL path starting with "/", without spaces, found "version" (string)',
        id="verify-version-path",
    ),
    pytest.param(
        APP + HOST + "[verify]\ntimeout = 0\n",
        {},
        "[verify] timeout",
        "expected a number greater than 0, found 0 (integer)",
        id="timeout-zero",
    ),
    pytest.param(
        APP + HOST + "[verify]\ntimeout = inf\n",
        {},
        "[verify] timeout",
        "expected a number greater than 0, found inf (float)",
        id="timeout-inf",
    ),
    pytest.param(
        APP + HOST + "[verify]\ntimeout = nan\n",
        {},
        "[verify] timeout",
        "found nan (float)",
        id="timeout-nan",
    ),
    pytest.param(
        APP + HOST + '[verify]\ntimeout = "60s"\n',
        {},
        "[verify] timeout",
        'expected a number greater than 0, found "60s" (string)',
        id="timeout-string",
    ),
    pytest.param(
        APP + HOST + "[verify]\nsettle = -1\n",
        {},
        "[verify] settle",
        "expected a number of at least 0, found -1 (integer)",
        id="settle-negative",
    ),
    pytest.param(
        APP + HOST + "[verify]\nsettle = false\n",
        {},
        "[verify] settle",
        "found false (boolean)",
        id="settle-bool",
    ),
]


@pytest.mark.parametrize(("toml", "files", "where", "wording"), BROKEN)
def test_broken_config_names_file_key_and_problem(
    tmp_path: Path, toml: str, files: dict[str, str | None], where: str, wording: str
) -> None:
    """A broken deploy.toml raises one-line ConfigError: file, key path, expected/found, hint."""
    path = write(tmp_path, toml, files)
    error = load_error(path)
    assert error.message.startswith(f"{path}: {where}"), error.message
    assert wording in error.message
    assert len(error.message.splitlines()) == 1
    assert error.hint


def test_port_message_has_the_documented_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message is exactly `FILE: [table] key: expected ..., found VALUE (type)`, FILE as given."""
    write(tmp_path, APP + HOST + 'port = "22x"\n')
    monkeypatch.chdir(tmp_path)
    error = load_error(Path("deploy.toml"))
    assert error.message == (
        'deploy.toml: [hosts.prod] port: expected an integer from 1 to 65535, found "22x" (string)'
    )
    assert error.hint == "for example: port = 22"


def test_missing_file_hints_at_deploy_toml_variable(tmp_path: Path) -> None:
    """A missing file is named and the hint says to create it or set DEPLOY_TOML."""
    error = load_error(tmp_path / "nope.toml")
    assert error.message == f"{tmp_path / 'nope.toml'}: file not found"
    assert error.hint is not None
    assert "create it" in error.hint
    assert "DEPLOY_TOML" in error.hint


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    """Pointing at a directory gives a ConfigError, not an OSError."""
    error = load_error(tmp_path)
    assert error.message.startswith(f"{tmp_path}: cannot read the file")
    assert error.hint


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not UTF-8 names the offending byte offset."""
    path = tmp_path / "deploy.toml"
    path.write_bytes(b'[app]\nname = "\xff"\n')
    error = load_error(path)
    assert "expected UTF-8 text, found an invalid byte at offset 14" in error.message
    assert error.hint


def test_unknown_key_without_close_match_lists_valid_keys_in_hint(tmp_path: Path) -> None:
    """Without a close match the valid keys are listed (message and hint)."""
    error = load_error(write(tmp_path, APP + HOST + "zzzz = 1\n"))
    assert "[hosts.prod] zzzz: unknown key, valid keys are address, port, user" in error.message
    assert error.hint == (
        "keys of [hosts.prod]: address, port, user, identity_file, sandbox, roles; "
        "remove or rename this one"
    )


def test_unit_error_hint_says_portablectl_ignores_foreign_units(tmp_path: Path) -> None:
    """A unit not named after the app is reported with why it matters."""
    error = load_error(write(tmp_path, APP + HOST, {"units/web.service": UNIT}))
    assert error.hint is not None
    assert "portablectl silently ignores" in error.hint


def test_readme_in_units_is_refused_with_a_hint(tmp_path: Path) -> None:
    """A README in units/ is an error naming it, whose hint says which files belong there."""
    error = load_error(write(tmp_path, APP + HOST, {"units/README.md": "notes"}))
    assert error.message.endswith("found README.md, which is not a unit file")
    assert error.hint == (
        "only unit files belong there: keep unit files named scoreboard.*, scoreboard-* or "
        "scoreboard@* in it, move notes elsewhere, and put image files in [image] tree or files"
    )


@pytest.mark.parametrize("name", ["scoreboard.mount", "scoreboard.slice", "scoreboard.swap"])
def test_units_portablectl_does_not_attach_are_refused(tmp_path: Path, name: str) -> None:
    """Unit types other than .service .socket .target .timer .path are refused by name."""
    error = load_error(write(tmp_path, APP + HOST, {f"units/{name}": UNIT}))
    assert f"found {name}: portablectl attaches no other types" in error.message


def test_non_unit_file_hint_says_only_units_belong(tmp_path: Path) -> None:
    """A stray file in the units directory gets a hint that only unit files belong there."""
    error = load_error(write(tmp_path, APP + HOST, {"units/.gitkeep": ""}))
    assert "found .gitkeep" in error.message
    assert error.hint is not None
    assert "only unit files belong there" in error.hint


def test_leading_slash_hint_shows_relative_form(tmp_path: Path) -> None:
    """An absolute destination's hint shows it without the leading slash."""
    error = load_error(write(tmp_path, APP + HOST + '[image.files]\n"/usr/bin/x" = "x"\n'))
    assert error.hint == 'drop the leading "/": write "usr/bin/x"'


# --- good configs -----------------------------------------------------------------------------


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    """Only [app] and one host: every other value takes its documented default."""
    cfg = load_config(write(tmp_path, APP + HOST))
    assert cfg.path == tmp_path / "deploy.toml"
    assert cfg.root == tmp_path
    assert cfg.app.name == "scoreboard"
    assert cfg.app.version == "1.4.2"
    assert cfg.build.commands == ()
    assert cfg.image.tree is None
    assert cfg.image.units == tmp_path / "units"
    assert cfg.image.files == {}
    assert cfg.image.compression is Compression.ZSTD
    assert cfg.image.dist == tmp_path / "dist"
    assert (cfg.sign.key, cfg.sign.allowed_signers, cfg.sign.principal) == (None, None, "deploy")
    assert cfg.hosts == {"prod": HostConfig(name="prod", address="203.0.113.10")}
    assert (cfg.deploy.keep_releases, cfg.deploy.lock_ttl) == (5, 900)
    v = cfg.verify
    assert (v.port, v.path, v.status, v.version_path) == (80, "/healthz", 200, "/version")
    assert (v.timeout, v.settle) == (60.0, 2.0)


def _readme_defaults() -> list[tuple[str, str, str]]:
    """(section, key, default cell) of each row of the deploy.toml reference in README.md."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = []
    section = ""
    for line in readme.splitlines():
        if line.startswith("#"):
            section = ""
            if line.startswith("### `["):
                section = line.split("`[", 1)[1].split("]", 1)[0]
                section = section.split(".", 1)[0] if section.endswith(".NAME") else section
        elif section and line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows.append((section, cells[0].strip("`"), cells[2]))
    return rows


def test_readme_defaults_are_the_loaded_defaults(tmp_path: Path) -> None:
    """Every default the README's deploy.toml reference shows is what load_config gives."""
    secret = '[secrets.t]\nenv = "X"\nunits = ["scoreboard.service"]\n'
    cfg = load_config(write(tmp_path, APP + HOST + '[verify.tls]\nname = "a.example"\n' + secret))
    checked = 0
    for section, key, cell in _readme_defaults():
        if section == "hosts":
            table: object = cfg.hosts["prod"]
        elif section == "secrets":
            table = cfg.secrets["t"]
        elif section == "verify.tls":
            table = cfg.verify.tls
        else:
            table = getattr(cfg, section)
        loaded = getattr(table, key)
        if cell == "none":
            assert loaded is None, (section, key)
        elif cell.startswith("`") and cell.endswith("`"):
            documented = tomllib.loads(f"x = {cell.strip('`')}")["x"]
            if isinstance(loaded, Path):
                documented = tmp_path / documented
            elif isinstance(loaded, tuple | Compression):
                loaded = list(loaded) if isinstance(loaded, tuple) else str(loaded)
            assert loaded == documented, (section, key)
        else:
            continue
        checked += 1
    assert checked == 30


def test_relative_path_given_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Config.path is absolute even when load_config got a relative path."""
    write(tmp_path, APP + HOST)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("deploy.toml"))
    assert cfg.path == tmp_path / "deploy.toml"
    assert cfg.image.units == tmp_path / "units"


FULL = (
    APP
    + """
[build]
commands = ["make build", "make test"]

[image]
tree = "skel"
units = "systemd"
compression = "xz"
dist = "../out"

[image.files]
"usr/bin/scoreboard" = "build/scoreboard"

[sign]
key = "~/.ssh/deploy_ed25519"
allowed_signers = "keys/allowed_signers"
principal = "ci"

[hosts.prod]
address = "203.0.113.10"
port = 2222
user = "deploy"
identity_file = "~/.ssh/id_ed25519"

[hosts.vm]
sandbox = true

[deploy]
keep_releases = 2
lock_ttl = 60

[verify]
port = 8080
path = "/ready"
status = 204
version_path = ""
timeout = 5
settle = 0
"""
)


def test_full_config_resolves_paths_against_the_file_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths resolve against deploy.toml's directory (not the cwd) and ~ is expanded."""
    project = tmp_path / "project"
    project.mkdir()
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    files = {
        "skel": DIR,
        "systemd/scoreboard.service": UNIT,
        "systemd/scoreboard-worker@.service": UNIT,
        "systemd/scoreboard.socket": UNIT,
        "systemd/scoreboard-nightly.timer": UNIT,
        "keys/allowed_signers": "ci ssh-ed25519 AAAA\n",
    }
    cfg = load_config(write(project, FULL, files, units=False))
    assert cfg.build.commands == ("make build", "make test")
    assert cfg.image.tree == project / "skel"
    assert cfg.image.units == project / "systemd"
    assert cfg.image.compression is Compression.XZ
    assert cfg.image.dist == project / "../out"
    assert cfg.image.files == {"usr/bin/scoreboard": project / "build/scoreboard"}
    assert cfg.sign.key == home / ".ssh/deploy_ed25519"
    assert cfg.sign.allowed_signers == project / "keys/allowed_signers"
    assert cfg.sign.principal == "ci"
    assert cfg.hosts["prod"] == HostConfig(
        name="prod",
        address="203.0.113.10",
        port=2222,
        user="deploy",
        identity_file=home / ".ssh/id_ed25519",
    )
    assert list(cfg.hosts) == ["prod", "vm"]
    assert (cfg.deploy.keep_releases, cfg.deploy.lock_ttl) == (2, 60)
    assert cfg.verify.version_path is None
    assert (cfg.verify.port, cfg.verify.path, cfg.verify.status) == (8080, "/ready", 204)


def test_integers_are_accepted_as_numbers(tmp_path: Path) -> None:
    """timeout/settle written as integers become floats."""
    cfg = load_config(write(tmp_path, APP + HOST + "[verify]\ntimeout = 5\nsettle = 1\n"))
    assert cfg.verify.timeout == 5.0
    assert isinstance(cfg.verify.timeout, float)
    assert isinstance(cfg.verify.settle, float)


def test_sandbox_host_has_no_connection_details(tmp_path: Path) -> None:
    """A `sandbox = true` host is valid on its own and carries no address, port, user or key."""
    cfg = load_config(write(tmp_path, APP + "[hosts.vm]\nsandbox = true\n"))
    assert cfg.hosts == {"vm": HostConfig(name="vm", sandbox=True)}


def test_sandbox_false_host_is_an_ordinary_host(tmp_path: Path) -> None:
    """`sandbox = false` with an address is an ordinary SSH host."""
    cfg = load_config(write(tmp_path, APP + HOST + "sandbox = false\n"))
    assert cfg.hosts["prod"].sandbox is False
    assert cfg.hosts["prod"].address == "203.0.113.10"


def test_file_destinations_are_normalised(tmp_path: Path) -> None:
    """Destinations become clean relative POSIX paths; sources resolve against the file's dir."""
    toml = APP + HOST + '[image.files]\n"./usr//bin/x" = "build/x"\n"etc/./app.conf" = "/abs/c"\n'
    cfg = load_config(write(tmp_path, toml))
    assert cfg.image.files == {
        "usr/bin/x": tmp_path / "build/x",
        "etc/app.conf": Path("/abs/c"),
    }


def test_git_version_is_accepted_at_load(tmp_path: Path) -> None:
    """version = "git" is kept as the literal "git" until resolve_version."""
    cfg = load_config(write(tmp_path, '[app]\nname = "scoreboard"\nversion = "git"\n' + HOST))
    assert cfg.app.version == "git"


def test_missing_sign_key_is_not_checked_at_load(tmp_path: Path) -> None:
    """sign.key may not exist yet when loading; signing checks it."""
    cfg = load_config(write(tmp_path, APP + HOST + '[sign]\nkey = "absent_key"\n'))
    assert cfg.sign.key == tmp_path / "absent_key"


def test_config_is_frozen(tmp_path: Path) -> None:
    """The loaded Config cannot be modified."""
    cfg = load_config(write(tmp_path, APP + HOST))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.app = cfg.app  # type: ignore[misc]


# --- check_sources ----------------------------------------------------------------------------


def files_config(tmp_path: Path) -> Config:
    return load_config(write(tmp_path, APP + HOST + '[image.files]\n"usr/bin/x" = "build/x"\n'))


def test_check_sources_accepts_existing_files(tmp_path: Path) -> None:
    """Sources that exist as regular files pass: no error, nothing returned."""
    cfg = files_config(tmp_path)
    (tmp_path / "build").mkdir()
    (tmp_path / "build/x").write_text("bin")
    assert cfg.image.files == {"usr/bin/x": tmp_path / "build/x"}
    assert check_sources(cfg) is None


def test_check_sources_names_missing_source_and_build_commands(tmp_path: Path) -> None:
    """A missing source names the files key and the path, and the hint points at [build]."""
    cfg = files_config(tmp_path)
    with pytest.raises(ConfigError) as info:
        check_sources(cfg)
    assert info.value.message == (
        f'{tmp_path / "deploy.toml"}: [image] files."usr/bin/x": expected a regular file, '
        f"found {tmp_path / 'build/x'}, which does not exist"
    )
    assert info.value.hint is not None
    assert "[build] commands" in info.value.hint


def test_check_sources_rejects_a_directory(tmp_path: Path) -> None:
    """A source that is a directory is not a regular file."""
    cfg = files_config(tmp_path)
    (tmp_path / "build/x").mkdir(parents=True)
    with pytest.raises(ConfigError, match="which is not a regular file"):
        check_sources(cfg)


# --- resolve_version --------------------------------------------------------------------------


@pytest.fixture
def no_env_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VERSION, raising=False)


def git_config(tmp_path: Path) -> Config:
    return load_config(write(tmp_path, '[app]\nname = "scoreboard"\nversion = "git"\n' + HOST))


def fail_runner(argv: list[str]) -> str:
    raise AssertionError(f"git must not run: {argv}")


@pytest.mark.usefixtures("no_env_version")
def test_literal_version_is_returned_without_git(tmp_path: Path) -> None:
    """A literal version is returned as is and git is not run."""
    cfg = load_config(write(tmp_path, APP + HOST))
    assert resolve_version(cfg, git=fail_runner) == "1.4.2"


@pytest.mark.usefixtures("no_env_version")
def test_git_version_runs_describe_in_root_and_sanitises(tmp_path: Path) -> None:
    """ "git" runs describe --tags --always --dirty in the root; "/", "_", spaces become "-"."""
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> str:
        calls.append(argv)
        return "release/1.0_rc1 x-dirty\n"

    assert resolve_version(git_config(tmp_path), git=runner) == "release-1.0-rc1-x-dirty"
    assert calls == [["git", "-C", str(tmp_path), "describe", "--tags", "--always", "--dirty"]]


@pytest.mark.usefixtures("no_env_version")
def test_git_failure_is_a_config_error_with_hint(tmp_path: Path) -> None:
    """git describe failing (not a repository) becomes a ConfigError with git's last line."""

    def runner(argv: list[str]) -> str:
        raise subprocess.CalledProcessError(128, argv, "", "fatal: not a git repository\n")

    with pytest.raises(ConfigError) as info:
        resolve_version(git_config(tmp_path), git=runner)
    assert '[app] version = "git": `git -C' in info.value.message
    assert "failed: fatal: not a git repository" in info.value.message
    assert info.value.hint is not None
    assert "must be a git repository" in info.value.hint


@pytest.mark.usefixtures("no_env_version")
def test_git_missing_is_a_config_error(tmp_path: Path) -> None:
    """git not installed becomes a ConfigError whose hint says to install it."""

    def runner(argv: list[str]) -> str:
        raise FileNotFoundError(2, "No such file or directory", "git")

    with pytest.raises(ConfigError) as info:
        resolve_version(git_config(tmp_path), git=runner)
    assert info.value.hint is not None
    assert "install git" in info.value.hint


@pytest.mark.usefixtures("no_env_version")
def test_git_output_that_is_no_version_is_rejected(tmp_path: Path) -> None:
    """A describe result with non-ASCII characters is rejected, not silently used."""
    with pytest.raises(ConfigError, match="which contains 'é'"):
        resolve_version(git_config(tmp_path), git=lambda argv: "v1.0-\u00e9\n")


def test_env_version_overrides_literal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DEPLOY_VERSION, when set, wins over [app] version."""
    monkeypatch.setenv(ENV_VERSION, "2.0.0-rc1")
    cfg = load_config(write(tmp_path, APP + HOST))
    assert resolve_version(cfg, git=fail_runner) == "2.0.0-rc1"


def test_empty_env_version_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty DEPLOY_VERSION counts as unset."""
    monkeypatch.setenv(ENV_VERSION, "")
    cfg = load_config(write(tmp_path, APP + HOST))
    assert resolve_version(cfg, git=fail_runner) == "1.4.2"


def test_env_version_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad DEPLOY_VERSION is a ConfigError that names the variable."""
    monkeypatch.setenv(ENV_VERSION, "1_0")
    cfg = load_config(write(tmp_path, APP + HOST))
    with pytest.raises(ConfigError) as info:
        resolve_version(cfg)
    assert info.value.message.startswith("environment variable DEPLOY_VERSION: expected a version")
    assert 'found "1_0" (string) which contains "_"' in info.value.message
    assert info.value.hint


def test_env_version_git_runs_describe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DEPLOY_VERSION=git asks git even when [app] version is literal."""
    monkeypatch.setenv(ENV_VERSION, "git")
    cfg = load_config(write(tmp_path, APP + HOST))
    assert resolve_version(cfg, git=lambda argv: "v3\n") == "v3"


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def run_git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user/system git config and no repository above tmp_path."""
    monkeypatch.delenv(ENV_VERSION, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))


@needs_git
@pytest.mark.usefixtures("isolated_git")
def test_real_git_repository_tag_and_dirty(tmp_path: Path) -> None:
    """In a real repo the tag is used (sanitised) and uncommitted changes add "-dirty"."""
    cfg = git_config(tmp_path)
    run_git(tmp_path, "init", "-q")
    run_git(tmp_path, "add", ".")
    run_git(tmp_path, "commit", "-q", "-m", "init")
    run_git(tmp_path, "tag", "release/1.0_rc1")
    assert resolve_version(cfg) == "release-1.0-rc1"
    (tmp_path / "deploy.toml").write_text((tmp_path / "deploy.toml").read_text() + "\n")
    assert resolve_version(cfg) == "release-1.0-rc1-dirty"


@needs_git
@pytest.mark.usefixtures("isolated_git")
def test_real_directory_without_git_is_a_config_error(tmp_path: Path) -> None:
    """Outside a git repository, "git" fails with a ConfigError and a hint."""
    with pytest.raises(ConfigError) as info:
        resolve_version(git_config(tmp_path))
    assert "not a git repository" in info.value.message
    assert info.value.hint


# --- property: nothing but ConfigError --------------------------------------------------------

SECTIONS = ["app", "build", "image", "sign", "deploy", "verify", "secrets"]
KEY_NAMES = [
    "app", "build", "image", "sign", "hosts", "deploy", "verify", "files", "name", "version",
    "commands", "tree", "units", "compression", "compression_level", "dist", "key", "allowed_signers", "principal",
    "address", "port", "user", "identity_file", "sandbox", "keep_releases", "lock_ttl", "path",
    "status", "version_path", "timeout", "settle", "prod", "vm", "usr/bin/x", "./usr/bin/x",
    "secrets", "env", "command", "environment", "api-token",
]  # fmt: skip
PLAUSIBLE = [
    "scoreboard", "1.4.2", "git", "units", "zstd", "/healthz", "", ".", "..", "/", "~",
    "usr/bin/x", "usr//bin/x", "/usr/bin/x", "203.0.113.10", "deploy.toml", "a\x00b", "x" * 300,
]  # fmt: skip

keys = st.sampled_from(KEY_NAMES) | st.text(max_size=8)
scalars = (
    st.sampled_from(PLAUSIBLE)
    | st.text(max_size=12)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([0, 1, 2, 22, 80, 65535, 65536])
    | st.floats()
    | st.booleans()
    | st.dates()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=12,
)


def toml_string(text: str) -> str:
    """A TOML basic string (escapes quote, backslash, controls and DEL)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: object) -> str:
    """An inline TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    return str(value.isoformat())  # type: ignore[attr-defined]


def toml_document(doc: dict[str, object]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


#: Per key, values that pass or nearly pass, so examples get past the first check.
NEAR: dict[str, list[object]] = {
    "name": ["scoreboard", "scoreboard", "scoreboard", "score_board"],
    "version": ["1.4.2", "git", "1.0", "1_2"],
    "commands": [["make"], []],
    "tree": [".", "units", "nope"],
    "units": ["units", "units", "units", ".", "nope", "deploy.toml"],
    "files": [{"usr/bin/x": "x"}, {"./usr/bin/x": "a", "usr/bin/x": "b"}, {"a": "b", "a/c": "d"}],
    "compression": ["zstd", "bz2"],
    "compression_level": [3, 0, 23],
    "dist": ["dist"],
    "key": ["k"],
    "allowed_signers": ["deploy.toml", "nope"],
    "principal": ["deploy", "a b"],
    "address": ["h", "h", "203.0.113.10", "-x"],
    "port": [22, 0],
    "user": ["u"],
    "identity_file": ["~/.ssh/id"],
    "sandbox": [True, False],
    "keep_releases": [5, 1],
    "lock_ttl": [900],
    "path": ["/healthz"],
    "status": [200],
    "version_path": ["", "/version"],
    "timeout": [60, 0.5],
    "settle": [0],
}


def table(names: list[str]) -> st.SearchStrategy[dict[str, object]]:
    """A table with some of the real keys, each holding a valid or nearly valid value."""
    return st.fixed_dictionaries({}, optional={name: st.sampled_from(NEAR[name]) for name in names})


near_valid = st.fixed_dictionaries(
    {
        "app": st.fixed_dictionaries(
            {"name": st.sampled_from(NEAR["name"]), "version": st.sampled_from(NEAR["version"])}
        ),
        "hosts": st.fixed_dictionaries(
            {},
            optional={
                "prod": st.fixed_dictionaries(
                    {"address": st.sampled_from(NEAR["address"])},
                    optional={k: st.sampled_from(NEAR[k]) for k in ["port", "user", "sandbox"]},
                ),
                "vm": st.just({"sandbox": True}),
                "my host": st.just({"address": "h"}),
            },
        ),
    },
    optional={
        "build": table(["commands"]),
        "image": table(["tree", "units", "files", "compression", "compression_level", "dist"]),
        "sign": table(["key", "allowed_signers", "principal"]),
        "deploy": table(["keep_releases", "lock_ttl"]),
        "verify": table(["port", "path", "status", "version_path", "timeout", "settle"]),
        "secrets": st.dictionaries(
            st.sampled_from(["api-token", "t", ".x", "a b"]),
            st.fixed_dictionaries(
                {},
                optional={
                    "env": st.sampled_from(["TOKEN", "1X", ""]),
                    "file": st.sampled_from([".deploy/t", ""]),
                    "command": st.sampled_from(["pass show t", " "]),
                    "units": st.sampled_from(
                        [["scoreboard.service"], [], ["x.service"], "scoreboard.service"]
                    ),
                    "environment": st.sampled_from(["TOKEN", "A-B"]),
                },
            ),
            max_size=2,
        ),
    },
)
#: A few (key path, value) replacements that break a near-valid document in random places.
damage = st.lists(
    st.tuples(
        st.tuples(st.sampled_from([*SECTIONS, "hosts"]) | keys, st.sampled_from(KEY_NAMES) | keys)
        | st.tuples(st.just("hosts"), st.sampled_from(["prod", "vm"]), keys),
        values,
    ),
    max_size=2,
)


def damaged(
    doc: dict[str, object], changes: list[tuple[tuple[str, ...], object]]
) -> dict[str, object]:
    for path, value in changes:
        table: dict[str, object] = doc
        for key in path[:-1]:
            inner = table.get(key)
            if not isinstance(inner, dict):
                inner = table[key] = {}
            table = inner
        table[path[-1]] = value
    return doc


shapeless = st.dictionaries(
    st.sampled_from(["app", "build", "image", "sign", "hosts", "deploy", "verify", "secrets"])
    | keys,
    st.dictionaries(keys, values, max_size=6) | values,
    max_size=7,
)
documents = st.builds(damaged, near_valid, damage) | shapeless


def test_toml_writer_round_trips() -> None:
    """The test's tiny TOML writer produces what tomllib reads back."""
    import tomllib

    doc: dict[str, object] = {'a\x7f"': {"b": [1, 2.5, "x\n", True, {"": -3}]}, "c": "é"}
    assert tomllib.loads(toml_document(doc)) == doc


@settings(
    deadline=None, max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=documents)
def test_random_documents_raise_only_config_error(tmp_path: Path, doc: dict[str, object]) -> None:
    """Any TOML document is either a Config or a one-line ConfigError with a hint, never a crash."""
    units = tmp_path / "units"
    units.mkdir(exist_ok=True)
    (units / "scoreboard.service").write_text(UNIT)
    path = tmp_path / "deploy.toml"
    path.write_text(toml_document(doc))
    try:
        load_config(path)
    except ConfigError as error:
        assert len(error.message.splitlines()) == 1
        assert error.hint


def test_deeply_nested_toml_is_a_config_error(tmp_path: Path) -> None:
    """Nesting deep enough to exhaust tomllib's recursion is reported, not a RecursionError."""
    depth = 5000
    error = load_error(write(tmp_path, APP + HOST + "x = " + "[" * depth + "]" * depth + "\n"))
    assert "nested too deeply" in error.message
    assert error.hint


def test_nested_array_in_message_is_abbreviated(tmp_path: Path) -> None:
    """A found value is shown briefly, however deep or long it is."""
    depth = 300
    toml = '[app]\nname = "scoreboard"\nversion = ' + "[" * depth + "]" * depth + "\n" + HOST
    error = load_error(write(tmp_path, toml))
    assert "[app] version: expected a string, found [[[[[...]]]]] (array)" in error.message


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ("1.0\\2", "contains '\\\\'"),
        ("1%n", "contains '%'"),
        ("1;reboot", "contains ';'"),
        ("9" * 129, "is longer than 128 characters"),
    ],
)
def test_versions_outside_the_safe_characters_are_refused(
    tmp_path: Path, version: str, problem: str
) -> None:
    """Only letters, digits, '.', '-', '+' and '~': "\\" breaks sha256sum's output, "%" is a
    systemd specifier in RootImage=, and a long version makes file names too long."""
    path = write(tmp_path, f'[app]\nname = "scoreboard"\nversion = {json.dumps(version)}\n' + HOST)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.message.endswith(f"which {problem}")


def test_a_name_longer_than_64_characters_is_refused(tmp_path: Path) -> None:
    """NAME_VERSION.manifest.json.sig must fit a file name: names are capped at 64 characters."""
    path = write(tmp_path, f'[app]\nname = "{"a" * 65}"\nversion = "1"\n' + HOST)
    with pytest.raises(ConfigError, match="at most 64 characters"):
        load_config(path)


def test_a_config_file_larger_than_a_mebibyte_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEPLOY_TOML=/dev/zero (or any huge file) is refused after reading a bounded amount."""
    with pytest.raises(ConfigError) as error:
        load_config(Path("/dev/zero"))
    assert (error.value.message, error.value.hint) == (
        "/dev/zero: expected a TOML file of at most 1024 KiB, found a larger one",
        "point DEPLOY_TOML (or ./deploy.toml) at your deploy.toml",
    )


def test_the_longest_name_and_version_are_accepted(tmp_path: Path) -> None:
    """A 64-character name and a 128-character version are the limits, not over them."""
    name = "a" * 64
    path = write(
        tmp_path,
        f'[app]\nname = "{name}"\nversion = "{"9" * 128}"\n' + HOST,
        {f"units/{name}.service": UNIT},
        units=False,
    )
    cfg = load_config(path)
    assert (len(cfg.app.name), len(cfg.app.version)) == (64, 128)


def test_a_too_long_version_has_a_hint(tmp_path: Path) -> None:
    """A version over 128 characters is refused with the hint to shorten it."""
    path = write(tmp_path, f'[app]\nname = "a"\nversion = "{"9" * 129}"\n' + HOST)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.hint == "use a shorter version"


def test_a_config_file_of_exactly_a_mebibyte_is_read(tmp_path: Path) -> None:
    """The size limit is 1 MiB: a file of exactly that size (padded with a comment) loads."""
    text = APP + HOST
    path = write(tmp_path, text + "#" * (1024 * 1024 - len(text.encode()) - 1) + "\n")
    assert path.stat().st_size == 1024 * 1024
    assert load_config(path).app.name == "scoreboard"
