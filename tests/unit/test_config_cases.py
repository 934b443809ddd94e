"""deploy.toml errors and values pinned exactly: each message (file, key path, expected, found),
each hint, each default and each boundary value, so that a changed validator fails a test."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from portable_deploy.config import (
    DEFAULT_FILE,
    ENV_FILE,
    ENV_VERSION,
    AppConfig,
    Compression,
    Config,
    DeployConfig,
    ImageConfig,
    SecretConfig,
    SignConfig,
    VerifyConfig,
    _default,
    _example,
    _run_git,
    check_sources,
    config_path,
    load_config,
    resolve_version,
)
from portable_deploy.errors import ConfigError

from .test_config import APP, DIR, HOST, UNIT, load_error, write

# --- every error, exactly -----------------------------------------------------------------------
# Each case: TOML text, files to create, the message after "deploy.toml: " ({root} is the project
# directory) and the hint.

EXACT = [
    pytest.param(
        'colour = "red"\n' + APP + HOST,
        {},
        "colour: unknown top-level key, expected only the tables [app], [build], [image], [sign], [hosts], [deploy], [fleet], [upload], [verify], [secrets]",
        "every key belongs in a table; is a [table] header missing above it?",
        id="top-key",
    ),
    pytest.param(
        APP + HOST + "[aap]\n",
        {},
        "[aap]: unknown table, did you mean [app]?",
        "deploy.toml has the tables [app], [build], [image], [sign], [hosts], [deploy], [fleet], [upload], [verify], [secrets]",
        id="table-typo",
    ),
    pytest.param(
        APP + HOST + "[zzz]\n",
        {},
        "[zzz]: unknown table, valid tables are [app], [build], [image], [sign], [hosts], [deploy], [fleet], [upload], [verify], [secrets]",
        "deploy.toml has the tables [app], [build], [image], [sign], [hosts], [deploy], [fleet], [upload], [verify], [secrets]",
        id="table-unknown",
    ),
    pytest.param(
        APP + HOST + '["a b"]\n',
        {},
        '["a b"]: unknown table, valid tables are [app], [build], [image], [sign], [hosts], [deploy], [fleet], [upload], [verify], [secrets]',
        "deploy.toml has the tables [app], [build], [image], [sign], [hosts], [deploy], [fleet], [upload], [verify], [secrets]",
        id="table-quoted",
    ),
    pytest.param(
        APP + HOST + "[verify\n",
        {},
        "TOML syntax error: Expected ']' at the end of a table declaration (at line 6, column 8)",
        "fix the syntax at that line and column (TOML reference: https://toml.io/en/v1.0.0)",
        id="syntax",
    ),
    pytest.param(
        APP + HOST + "x = " + "[" * 5000 + "]" * 5000 + "\n",
        {},
        "expected a configuration file, found arrays or tables nested too deeply",
        "deploy.toml needs at most three levels of nesting",
        id="nested-too-deep",
    ),
    pytest.param(
        HOST,
        {},
        "[app]: required table is missing, expected [app] with name and version",
        'add [app] with name = "scoreboard" and version = "1.4.2" (or "git")',
        id="app-missing",
    ),
    pytest.param(
        'app = "x"\n' + HOST,
        {},
        '[app]: expected a table, found "x" (string)',
        "write [app] on a line of its own, followed by its keys",
        id="app-scalar",
    ),
    pytest.param(
        APP + 'nmae = "x"\n' + HOST,
        {},
        '[app] nmae: unknown key, did you mean "name"?',
        "keys of [app]: name, version; remove or rename this one",
        id="app-key-typo",
    ),
    pytest.param(
        APP + "zzz = 1\n" + HOST,
        {},
        "[app] zzz: unknown key, valid keys are name, version",
        "keys of [app]: name, version; remove or rename this one",
        id="app-key-unknown",
    ),
    pytest.param(
        '[app]\nversion = "1"\n' + HOST,
        {},
        "[app] name: required key is missing, expected a string",
        'for example: name = "scoreboard"',
        id="name-missing",
    ),
    pytest.param(
        '[app]\nname = 3\nversion = "1"\n' + HOST,
        {},
        "[app] name: expected a string, found 3 (integer)",
        'for example: name = "scoreboard"',
        id="name-int",
    ),
    pytest.param(
        '[app]\nname = "my_app"\nversion = "1"\n' + HOST,
        {},
        '[app] name: expected lowercase letters, digits and "-" (starting with a letter or digit), at most 64 characters, found "my_app" (string)',
        'the image is NAME_VERSION.raw and portablectl splits at the first "_"; use e.g. "my-app"',
        id="name-underscore",
    ),
    pytest.param(
        '[app]\nname = "-app"\nversion = "1"\n' + HOST,
        {},
        '[app] name: expected lowercase letters, digits and "-" (starting with a letter or digit), at most 64 characters, found "-app" (string)',
        'the image is NAME_VERSION.raw and portablectl splits at the first "_"; use e.g. "my-app"',
        id="name-leading-dash",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\n' + HOST,
        {},
        "[app] version: required key is missing, expected a string",
        'for example: version = "1.4.2" (or "git")',
        id="version-missing",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = 1\n' + HOST,
        {},
        "[app] version: expected a string, found 1 (integer)",
        'for example: version = "1.4.2" (or "git")',
        id="version-int",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "1_2"\n' + HOST,
        {},
        "[app] version: expected a version of letters, digits, '.', '-', '+' and '~', found \"1_2\" (string) which contains \"_\"",
        'the image is NAME_VERSION.raw and portablectl splits at the first "_"; use "-" or "."',
        id="version-underscore",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "1/2"\n' + HOST,
        {},
        "[app] version: expected a version of letters, digits, '.', '-', '+' and '~', found \"1/2\" (string) which contains '/'",
        "the version is part of file names and unit settings on the host; use letters, digits, '.', '-', '+' and '~'",
        id="version-slash",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "1 2"\n' + HOST,
        {},
        "[app] version: expected a version of letters, digits, '.', '-', '+' and '~', found \"1 2\" (string) which contains ' '",
        "the version is part of file names and unit settings on the host; use letters, digits, '.', '-', '+' and '~'",
        id="version-space",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "1\\t2"\n' + HOST,
        {},
        "[app] version: expected a version of letters, digits, '.', '-', '+' and '~', found \"1\\t2\" (string) which contains '\\t'",
        "the version is part of file names and unit settings on the host; use letters, digits, '.', '-', '+' and '~'",
        id="version-tab",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = ""\n' + HOST,
        {},
        "[app] version: expected a version of letters, digits, '.', '-', '+' and '~', found \"\" (string) which is empty",
        'set a version such as "1.4.2", or "git"',
        id="version-empty",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "1\\u007f"\n' + HOST,
        {},
        "[app] version: expected a version of letters, digits, '.', '-', '+' and '~', found \"1\\x7f\" (string) which contains '\\x7f'",
        "the version is part of file names and unit settings on the host; use letters, digits, '.', '-', '+' and '~'",
        id="version-del",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "1\\u0001"\n' + HOST,
        {},
        "[app] version: expected a version of letters, digits, '.', '-', '+' and '~', found \"1\\u0001\" (string) which contains '\\x01'",
        "the version is part of file names and unit settings on the host; use letters, digits, '.', '-', '+' and '~'",
        id="version-control",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "1.0\u00e9"\n' + HOST,
        {},
        "[app] version: expected a version of letters, digits, '.', '-', '+' and '~', found \"1.0é\" (string) which contains 'é'",
        "the version is part of file names and unit settings on the host; use letters, digits, '.', '-', '+' and '~'",
        id="version-non-ascii",
    ),
    pytest.param(
        APP + HOST + '[build]\ncommands = "make"\n',
        {},
        '[build] commands: expected an array of strings, found "make" (string)',
        'for example: commands = ["make build"]',
        id="commands-string",
    ),
    pytest.param(
        APP + HOST + "[build]\ncommands = {a = 1}\n",
        {},
        "[build] commands: expected an array of strings, found a table",
        'for example: commands = ["make build"]',
        id="commands-table",
    ),
    pytest.param(
        APP + HOST + '[build]\ncommands = ["make", 1]\n',
        {},
        "[build] commands: expected an array of non-empty strings, found 1 (integer) at index 1",
        'for example: commands = ["make build"]',
        id="commands-int",
    ),
    pytest.param(
        APP + HOST + '[build]\ncommands = ["make", " \\t"]\n',
        {},
        '[build] commands: expected an array of non-empty strings, found " \\t" (string) at index 1',
        'for example: commands = ["make build"]',
        id="commands-blank",
    ),
    pytest.param(
        APP + HOST + "[build]\ncommands = [{a = 1}]\n",
        {},
        "[build] commands: expected an array of non-empty strings, found a table at index 0",
        'for example: commands = ["make build"]',
        id="commands-nested-table",
    ),
    pytest.param(
        APP + HOST + '[build]\ncommand = ["make"]\n',
        {},
        '[build] command: unknown key, did you mean "commands"?',
        "keys of [build]: commands; remove or rename this one",
        id="build-key-typo",
    ),
    pytest.param(
        "build = 1\n" + APP + HOST,
        {},
        "[build]: expected a table, found 1 (integer)",
        "write [build] on a line of its own, followed by its keys",
        id="build-scalar",
    ),
    pytest.param(
        APP + HOST + "[image]\ntree = 1\n",
        {},
        "[image] tree: expected a string, found 1 (integer)",
        'for example: tree = "image"',
        id="tree-int",
    ),
    pytest.param(
        APP + HOST + '[image]\ntree = ""\n',
        {},
        '[image] tree: expected a file system path, found "" (string)',
        'for example: tree = "image"',
        id="tree-empty",
    ),
    pytest.param(
        APP + HOST + '[image]\ntree = "a\\u0000b"\n',
        {},
        '[image] tree: expected a file system path, found "a\\u0000b" (string)',
        'for example: tree = "image"',
        id="tree-nul",
    ),
    pytest.param(
        APP + HOST + '[image]\ntree = "skel"\n',
        {},
        '[image] tree: expected an existing directory, found "skel" (string), and {root}/skel is not a directory',
        "create the directory, or remove tree to build without a skeleton",
        id="tree-missing",
    ),
    pytest.param(
        APP + HOST + '[image]\ntree = "skel"\n',
        {"skel": "a file"},
        '[image] tree: expected an existing directory, found "skel" (string), and {root}/skel is not a directory',
        "create the directory, or remove tree to build without a skeleton",
        id="tree-file",
    ),
    pytest.param(
        APP + HOST + "[image]\nunits = 1\n",
        {},
        "[image] units: expected a string, found 1 (integer)",
        'for example: units = "units"',
        id="units-int",
    ),
    pytest.param(
        APP + HOST + '[image]\nunits = "nope"\n',
        {},
        "[image] units: expected a directory of systemd unit files, found no directory at {root}/nope",
        "create it with scoreboard.service in it, or point units at your unit directory",
        id="units-missing",
    ),
    pytest.param(
        APP + HOST + "[image]\ndist = 1\n",
        {},
        "[image] dist: expected a string, found 1 (integer)",
        'for example: dist = "dist"',
        id="dist-int",
    ),
    pytest.param(
        APP + HOST + '[image]\ndist = ""\n',
        {},
        '[image] dist: expected a file system path, found "" (string)',
        'for example: dist = "dist"',
        id="dist-empty",
    ),
    pytest.param(
        APP + HOST + '[image]\ncompression = "bz2"\n',
        {},
        '[image] compression: expected one of zstd, gzip, xz, lz4, lzo, found "bz2" (string)',
        'for example: compression = "zstd"',
        id="compression-bz2",
    ),
    pytest.param(
        APP + HOST + '[image]\ncompression = "ZSTD"\n',
        {},
        '[image] compression: expected one of zstd, gzip, xz, lz4, lzo, found "ZSTD" (string)',
        'for example: compression = "zstd"',
        id="compression-upper",
    ),
    pytest.param(
        APP + HOST + "[image]\ncompression = 1\n",
        {},
        "[image] compression: expected a string, found 1 (integer)",
        'for example: compression = "zstd"',
        id="compression-int",
    ),
    pytest.param(
        APP + HOST + "[image]\ncompression_level = 23\n",
        {},
        "[image] compression_level: expected an integer from 1 to 22 for zstd, found 23 (integer)",
        "for example: compression_level = 3",
        id="compression-level-high",
    ),
    pytest.param(
        APP + HOST + '[image]\ncompression = "gzip"\ncompression_level = "3"\n',
        {},
        '[image] compression_level: expected an integer from 1 to 9 for gzip, found "3" (string)',
        "for example: compression_level = 3",
        id="compression-level-string",
    ),
    pytest.param(
        APP + HOST + '[image]\ncompression = "xz"\ncompression_level = 3\n',
        {},
        "[image] compression_level: xz has no level in mksquashfs; only zstd (1-22), gzip (1-9), "
        "lzo (1-9) do",
        "remove compression_level, or choose one of those compressors",
        id="compression-level-xz",
    ),
    pytest.param(
        APP + HOST + '[image]\ndsit = "x"\n',
        {},
        '[image] dsit: unknown key, did you mean "dist"?',
        "keys of [image]: tree, units, files, compression, compression_level, dist; remove or rename this one",
        id="image-key-typo",
    ),
    pytest.param(
        APP + HOST + '[image]\nfiles = ["x"]\n',
        {},
        '[image] files: expected a table of destination = source path, found ["x"] (array)',
        'for example: files = { "usr/bin/scoreboard" = "build/scoreboard" }',
        id="files-array",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"//usr/bin/x" = "x"\n',
        {},
        '[image] files."//usr/bin/x": expected a path relative to the image root, found "//usr/bin/x" (string)',
        'drop the leading "/": write "usr/bin/x"',
        id="dest-absolute",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"/X/a" = "x"\n',
        {},
        '[image] files."/X/a": expected a path relative to the image root, found "/X/a" (string)',
        'drop the leading "/": write "X/a"',
        id="dest-absolute-only-slashes-dropped",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"usr/../x.conf" = "x"\n',
        {},
        '[image] files."usr/../x.conf": expected a path inside the image, found "usr/../x.conf" (string) with ".."',
        'for example: files = { "usr/bin/scoreboard" = "build/scoreboard" }',
        id="dest-dotdot",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"" = "x"\n',
        {},
        '[image] files."": expected a file path inside the image, found "" (string)',
        'for example: files = { "usr/bin/scoreboard" = "build/scoreboard" }',
        id="dest-empty",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"./." = "x"\n',
        {},
        '[image] files."./.": expected a file path inside the image, found "./." (string)',
        'for example: files = { "usr/bin/scoreboard" = "build/scoreboard" }',
        id="dest-dot",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"a\\u0000b" = "x"\n',
        {},
        '[image] files."a\\u0000b": expected a file path inside the image, found "a\\u0000b" (string)',
        'for example: files = { "usr/bin/scoreboard" = "build/scoreboard" }',
        id="dest-nul",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"usr/bin/" = "x"\n',
        {},
        '[image] files."usr/bin/": expected a file path, found "usr/bin/" (string) ending in "/"',
        "name the file itself, e.g. usr/bin/scoreboard",
        id="dest-trailing-slash",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"usr/bin/x" = "a"\n"./usr/bin/x" = "b"\n',
        {},
        '[image] files."./usr/bin/x": expected each destination once, found "usr/bin/x" (string) and "./usr/bin/x" (string), which both mean "usr/bin/x"',
        "keep one of the two entries",
        id="dest-duplicate",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"usr/bin/x" = 1\n',
        {},
        '[image] files."usr/bin/x": expected the path of a local file, found 1 (integer)',
        'for example: "usr/bin/x" = "build/x"',
        id="source-int",
    ),
    pytest.param(
        APP + HOST + '[image.files]\nx = ""\n',
        {},
        '[image] files.x: expected the path of a local file, found "" (string)',
        'for example: "x" = "build/x"',
        id="source-empty",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"usr/bin/x" = "a\\u0000b"\n',
        {},
        '[image] files."usr/bin/x": expected the path of a local file, found "a\\u0000b" (string)',
        'for example: "usr/bin/x" = "build/x"',
        id="source-nul",
    ),
    pytest.param(
        APP + HOST + '[image.files]\na = "a"\n"a/b" = "b"\n',
        {},
        '[image] files."a/b": expected "a" to be a directory, found it is a file (files.a)',
        "a destination cannot be both a file and a directory; rename one",
        id="dest-file-and-dir",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"./a/b/c" = "c"\n"a/b" = "b"\n',
        {},
        '[image] files."./a/b/c": expected "a/b" to be a directory, found it is a file (files."a/b")',
        "a destination cannot be both a file and a directory; rename one",
        id="dest-dir-and-file",
    ),
    pytest.param(
        APP + HOST + "[sign]\nkey = 1\n",
        {},
        "[sign] key: expected a string, found 1 (integer)",
        'for example: key = "~/.ssh/deploy_ed25519"',
        id="key-int",
    ),
    pytest.param(
        APP + HOST + '[sign]\nkey = ""\n',
        {},
        '[sign] key: expected a file system path, found "" (string)',
        'for example: key = "~/.ssh/deploy_ed25519"',
        id="key-empty",
    ),
    pytest.param(
        APP + HOST + "[sign]\nallowed_signers = 1\n",
        {},
        "[sign] allowed_signers: expected a string, found 1 (integer)",
        'for example: allowed_signers = "allowed_signers"',
        id="allowed-signers-int",
    ),
    pytest.param(
        APP + HOST + '[sign]\nallowed_signers = "signers"\n',
        {},
        '[sign] allowed_signers: expected an existing file, found "signers" (string), and {root}/signers is not a file',
        "create it (one line: PRINCIPAL KEY), or remove allowed_signers to derive it from key + .pub",
        id="allowed-signers-missing",
    ),
    pytest.param(
        APP + HOST + '[sign]\nallowed_signers = "signers"\n',
        {"signers": DIR},
        '[sign] allowed_signers: expected an existing file, found "signers" (string), and {root}/signers is not a file',
        "create it (one line: PRINCIPAL KEY), or remove allowed_signers to derive it from key + .pub",
        id="allowed-signers-dir",
    ),
    pytest.param(
        APP + HOST + "[sign]\nprincipal = 1\n",
        {},
        "[sign] principal: expected a string, found 1 (integer)",
        'for example: principal = "deploy"',
        id="principal-int",
    ),
    pytest.param(
        APP + HOST + '[sign]\nprincipal = ""\n',
        {},
        '[sign] principal: expected a principal without whitespace or commas (printable ASCII), found "" (string)',
        'for example: principal = "deploy"',
        id="principal-empty",
    ),
    pytest.param(
        APP + HOST + '[sign]\nprincipal = "ci deploy"\n',
        {},
        '[sign] principal: expected a principal without whitespace or commas (printable ASCII), found "ci deploy" (string)',
        'for example: principal = "deploy"',
        id="principal-space",
    ),
    pytest.param(
        APP + HOST + '[sign]\nprincipal = "ci,deploy"\n',
        {},
        '[sign] principal: expected a principal without whitespace or commas (printable ASCII), found "ci,deploy" (string)',
        'for example: principal = "deploy"',
        id="principal-comma",
    ),
    pytest.param(
        APP + HOST + '[sign]\nprincipal = "d\u00e9ploy"\n',
        {},
        '[sign] principal: expected a principal without whitespace or commas (printable ASCII), found "déploy" (string)',
        'for example: principal = "deploy"',
        id="principal-non-ascii",
    ),
    pytest.param(
        APP + HOST + '[sign]\nprincpal = "x"\n',
        {},
        '[sign] princpal: unknown key, did you mean "principal"?',
        "keys of [sign]: key, allowed_signers, principal; remove or rename this one",
        id="sign-key-typo",
    ),
    pytest.param(
        APP,
        {},
        "[hosts]: required table is missing, expected at least one [hosts.NAME]",
        'add [hosts.prod] with address = "203.0.113.10" (or sandbox = true for the local VM)',
        id="hosts-missing",
    ),
    pytest.param(
        "hosts = 1\n" + APP,
        {},
        "[hosts]: expected at least one [hosts.NAME] table, found 1 (integer)",
        'add [hosts.prod] with address = "203.0.113.10" (or sandbox = true for the local VM)',
        id="hosts-scalar",
    ),
    pytest.param(
        APP + "[hosts]\n",
        {},
        "[hosts]: expected at least one [hosts.NAME] table, found a table",
        'add [hosts.prod] with address = "203.0.113.10" (or sandbox = true for the local VM)',
        id="hosts-empty",
    ),
    pytest.param(
        APP + '[hosts."my host"]\naddress = "h"\n',
        {},
        '[hosts."my host"]: expected a host name of letters, digits, "-" and "_", found "my host" (string)',
        "the name labels the host in commands and output, e.g. [hosts.prod]",
        id="host-name",
    ),
    pytest.param(
        APP + '[hosts]\nprod = "203.0.113.10"\n',
        {},
        '[hosts.prod]: expected a table, found "203.0.113.10" (string)',
        'write [hosts.prod] on a line of its own, then address = "..."',
        id="host-scalar",
    ),
    pytest.param(
        APP + '[hosts.prod]\nadress = "h"\n',
        {},
        '[hosts.prod] adress: unknown key, did you mean "address"?',
        "keys of [hosts.prod]: address, port, user, identity_file, sandbox, roles; remove or rename this one",
        id="host-key-typo",
    ),
    pytest.param(
        APP + HOST + "zzzz = 1\n",
        {},
        "[hosts.prod] zzzz: unknown key, valid keys are address, port, user, identity_file, sandbox, roles",
        "keys of [hosts.prod]: address, port, user, identity_file, sandbox, roles; remove or rename this one",
        id="host-key-unknown",
    ),
    pytest.param(
        APP + HOST + '"a b" = 1\n',
        {},
        '[hosts.prod] "a b": unknown key, valid keys are address, port, user, identity_file, sandbox, roles',
        "keys of [hosts.prod]: address, port, user, identity_file, sandbox, roles; remove or rename this one",
        id="host-key-quoted",
    ),
    pytest.param(
        APP + '[hosts.prod]\nuser = "deploy"\n',
        {},
        "[hosts.prod] address: required key is missing, expected a host name, IP address or ssh alias",
        'add address = "203.0.113.10", or sandbox = true for the local VM',
        id="address-missing",
    ),
    pytest.param(
        APP + "[hosts.prod]\naddress = 1\n",
        {},
        "[hosts.prod] address: expected a string, found 1 (integer)",
        'for example: address = "203.0.113.10"',
        id="address-int",
    ),
    pytest.param(
        APP + '[hosts.prod]\naddress = "-oProxyCommand=x"\n',
        {},
        '[hosts.prod] address: expected a host name, IP address or ssh alias, found "-oProxyCommand=x" (string)',
        'for example: address = "203.0.113.10"',
        id="address-option",
    ),
    pytest.param(
        APP + '[hosts.prod]\naddress = "a b"\n',
        {},
        '[hosts.prod] address: expected a host name, IP address or ssh alias, found "a b" (string)',
        'for example: address = "203.0.113.10"',
        id="address-space",
    ),
    pytest.param(
        APP + '[hosts.prod]\naddress = ""\n',
        {},
        '[hosts.prod] address: expected a host name, IP address or ssh alias, found "" (string)',
        'for example: address = "203.0.113.10"',
        id="address-empty",
    ),
    pytest.param(
        APP + HOST + "user = 1\n",
        {},
        "[hosts.prod] user: expected a string, found 1 (integer)",
        'for example: user = "deploy"',
        id="user-int",
    ),
    pytest.param(
        APP + HOST + 'user = "de ploy"\n',
        {},
        '[hosts.prod] user: expected a user name without whitespace, found "de ploy" (string)',
        'for example: user = "deploy"',
        id="user-space",
    ),
    pytest.param(
        APP + HOST + 'user = "-x"\n',
        {},
        '[hosts.prod] user: expected a user name without whitespace, found "-x" (string)',
        'for example: user = "deploy"',
        id="user-option",
    ),
    pytest.param(
        APP + HOST + 'user = ""\n',
        {},
        '[hosts.prod] user: expected a user name without whitespace, found "" (string)',
        'for example: user = "deploy"',
        id="user-empty",
    ),
    pytest.param(
        APP + HOST + "port = 0\n",
        {},
        "[hosts.prod] port: expected an integer from 1 to 65535, found 0 (integer)",
        "for example: port = 22",
        id="port-zero",
    ),
    pytest.param(
        APP + HOST + "port = 65536\n",
        {},
        "[hosts.prod] port: expected an integer from 1 to 65535, found 65536 (integer)",
        "for example: port = 22",
        id="port-high",
    ),
    pytest.param(
        APP + HOST + "port = true\n",
        {},
        "[hosts.prod] port: expected an integer from 1 to 65535, found true (boolean)",
        "for example: port = 22",
        id="port-bool",
    ),
    pytest.param(
        APP + HOST + 'port = "22"\n',
        {},
        '[hosts.prod] port: expected an integer from 1 to 65535, found "22" (string)',
        "for example: port = 22",
        id="port-string",
    ),
    pytest.param(
        APP + HOST + "identity_file = 1\n",
        {},
        "[hosts.prod] identity_file: expected a string, found 1 (integer)",
        'for example: identity_file = "~/.ssh/id_ed25519"',
        id="identity-int",
    ),
    pytest.param(
        APP + HOST + 'identity_file = ""\n',
        {},
        '[hosts.prod] identity_file: expected a file system path, found "" (string)',
        'for example: identity_file = "~/.ssh/id_ed25519"',
        id="identity-empty",
    ),
    pytest.param(
        APP + '[hosts.vm]\nsandbox = "yes"\n',
        {},
        "[hosts.vm] sandbox: expected true, false, or the number N of sandbox-N (1 to 16), "
        'found "yes" (string)',
        "for example: sandbox = true",
        id="sandbox-string",
    ),
    pytest.param(
        APP + "[hosts.vm]\nsandbox = 0\n",
        {},
        "[hosts.vm] sandbox: expected true, false, or the number N of sandbox-N (1 to 16), "
        "found 0 (integer)",
        "for example: sandbox = true",
        id="sandbox-int",
    ),
    pytest.param(
        APP + '[hosts.vm]\nsandbox = true\naddress = "h"\n',
        {},
        '[hosts.vm] address: expected no address on a sandbox host, found "h" (string)',
        "the sandbox VM provides address, port, user and key; remove the key or set sandbox = false",
        id="sandbox-address",
    ),
    pytest.param(
        APP + "[hosts.vm]\nsandbox = true\nport = 22\n",
        {},
        "[hosts.vm] port: expected no port on a sandbox host, found 22 (integer)",
        "the sandbox VM provides address, port, user and key; remove the key or set sandbox = false",
        id="sandbox-port",
    ),
    pytest.param(
        APP + '[hosts.vm]\nsandbox = true\nuser = "root"\n',
        {},
        '[hosts.vm] user: expected no user on a sandbox host, found "root" (string)',
        "the sandbox VM provides address, port, user and key; remove the key or set sandbox = false",
        id="sandbox-user",
    ),
    pytest.param(
        APP + '[hosts.vm]\nsandbox = true\nidentity_file = "k"\n',
        {},
        '[hosts.vm] identity_file: expected no identity_file on a sandbox host, found "k" (string)',
        "the sandbox VM provides address, port, user and key; remove the key or set sandbox = false",
        id="sandbox-identity",
    ),
    pytest.param(
        APP + HOST + '[hosts.b]\naddress = "-b"\n',
        {},
        '[hosts.b] address: expected a host name, IP address or ssh alias, found "-b" (string)',
        'for example: address = "203.0.113.10"',
        id="second-host-bad",
    ),
    pytest.param(
        "deploy = [1]\n" + APP + HOST,
        {},
        "[deploy]: expected a table, found [1] (array)",
        "write [deploy] on a line of its own, followed by its keys",
        id="deploy-array",
    ),
    pytest.param(
        APP + HOST + "[deploy]\nkeep_releases = 1\n",
        {},
        "[deploy] keep_releases: expected an integer of at least 2 (the current and one to roll back to), found 1 (integer)",
        "for example: keep_releases = 5",
        id="keep-one",
    ),
    pytest.param(
        APP + HOST + "[deploy]\nkeep_releases = true\n",
        {},
        "[deploy] keep_releases: expected an integer of at least 2 (the current and one to roll back to), found true (boolean)",
        "for example: keep_releases = 5",
        id="keep-bool",
    ),
    pytest.param(
        APP + HOST + "[deploy]\nkeep_releases = 5.0\n",
        {},
        "[deploy] keep_releases: expected an integer of at least 2 (the current and one to roll back to), found 5.0 (float)",
        "for example: keep_releases = 5",
        id="keep-float",
    ),
    pytest.param(
        APP + HOST + "[deploy]\nlock_ttl = 0\n",
        {},
        "[deploy] lock_ttl: expected a whole number of seconds above 0, found 0 (integer)",
        "for example: lock_ttl = 900",
        id="ttl-zero",
    ),
    pytest.param(
        APP + HOST + "[deploy]\nlock_ttl = 1.5\n",
        {},
        "[deploy] lock_ttl: expected a whole number of seconds above 0, found 1.5 (float)",
        "for example: lock_ttl = 900",
        id="ttl-float",
    ),
    pytest.param(
        APP + HOST + '[deploy]\nlock_ttl = "900"\n',
        {},
        '[deploy] lock_ttl: expected a whole number of seconds above 0, found "900" (string)',
        "for example: lock_ttl = 900",
        id="ttl-string",
    ),
    pytest.param(
        APP + HOST + "[deploy]\nkeep = 3\n",
        {},
        "[deploy] keep: unknown key, valid keys are keep_releases, lock_ttl, profile, "
        "confirm_timeout, overlap",
        "keys of [deploy]: keep_releases, lock_ttl, profile, confirm_timeout, overlap; remove or "
        "rename this one",
        id="deploy-key-typo",
    ),
    pytest.param(
        APP + HOST + '[deploy]\nprofile = "../default"\n',
        {},
        '[deploy] profile: expected a portable profile name such as "pd-hardened" or "default" '
        '(letters, digits, - and _), found "../default" (string)',
        'for example: profile = "pd-hardened"',
        id="profile-path",
    ),
    pytest.param(
        "verify = true\n" + APP + HOST,
        {},
        "[verify]: expected a table, found true (boolean)",
        "write [verify] on a line of its own, followed by its keys",
        id="verify-scalar",
    ),
    pytest.param(
        APP + HOST + "[verify]\ncolour = 1\n",
        {},
        "[verify] colour: unknown key, valid keys are port, path, status, version_path, timeout, settle, tls",
        "keys of [verify]: port, path, status, version_path, timeout, settle, tls; remove or rename this one",
        id="verify-key-unknown",
    ),
    pytest.param(
        APP + HOST + "[verify]\nport = 0\n",
        {},
        "[verify] port: expected an integer from 1 to 65535, found 0 (integer)",
        "for example: port = 80",
        id="verify-port-zero",
    ),
    pytest.param(
        APP + HOST + "[verify]\nport = 65536\n",
        {},
        "[verify] port: expected an integer from 1 to 65535, found 65536 (integer)",
        "for example: port = 80",
        id="verify-port-high",
    ),
    pytest.param(
        APP + HOST + "[verify]\nport = 80.0\n",
        {},
        "[verify] port: expected an integer from 1 to 65535, found 80.0 (float)",
        "for example: port = 80",
        id="verify-port-float",
    ),
    pytest.param(
        APP + HOST + '[verify]\npath = "healthz"\n',
        {},
        '[verify] path: expected a URL path starting with "/", without spaces, found "healthz" (string)',
        'for example: path = "/healthz"',
        id="verify-path",
    ),
    pytest.param(
        APP + HOST + '[verify]\npath = "/a b"\n',
        {},
        '[verify] path: expected a URL path starting with "/", without spaces, found "/a b" (string)',
        'for example: path = "/healthz"',
        id="verify-path-space",
    ),
    pytest.param(
        APP + HOST + '[verify]\npath = ""\n',
        {},
        '[verify] path: expected a URL path starting with "/", without spaces, found "" (string)',
        'for example: path = "/healthz"',
        id="verify-path-empty",
    ),
    pytest.param(
        APP + HOST + "[verify]\npath = 1\n",
        {},
        "[verify] path: expected a string, found 1 (integer)",
        'for example: path = "/healthz"',
        id="verify-path-int",
    ),
    pytest.param(
        APP + HOST + "[verify]\npath = 1979-05-27\n",
        {},
        "[verify] path: expected a string, found 1979-05-27 (date)",
        'for example: path = "/healthz"',
        id="verify-path-date",
    ),
    pytest.param(
        APP + HOST + "[verify]\npath = 1979-05-27T07:32:00Z\n",
        {},
        "[verify] path: expected a string, found 1979-05-27T07:32:00+00:00 (datetime)",
        'for example: path = "/healthz"',
        id="verify-path-datetime",
    ),
    pytest.param(
        APP + HOST + "[verify]\npath = 1979-05-27T07:32:00\n",
        {},
        "[verify] path: expected a string, found 1979-05-27T07:32:00 (datetime)",
        'for example: path = "/healthz"',
        id="verify-path-local-datetime",
    ),
    pytest.param(
        APP + HOST + "[verify]\npath = 07:32:00\n",
        {},
        "[verify] path: expected a string, found 07:32:00 (time)",
        'for example: path = "/healthz"',
        id="verify-path-time",
    ),
    pytest.param(
        APP + HOST + "[verify]\nstatus = 99\n",
        {},
        "[verify] status: expected an HTTP status from 100 to 599, found 99 (integer)",
        "for example: status = 200",
        id="verify-status-low",
    ),
    pytest.param(
        APP + HOST + "[verify]\nstatus = 600\n",
        {},
        "[verify] status: expected an HTTP status from 100 to 599, found 600 (integer)",
        "for example: status = 200",
        id="verify-status-high",
    ),
    pytest.param(
        APP + HOST + "[verify]\nstatus = true\n",
        {},
        "[verify] status: expected an HTTP status from 100 to 599, found true (boolean)",
        "for example: status = 200",
        id="verify-status-bool",
    ),
    pytest.param(
        APP + HOST + '[verify]\nversion_path = "version"\n',
        {},
        '[verify] version_path: expected a URL path starting with "/", without spaces, found "version" (string)',
        'for example: version_path = "/version" (or "" to skip)',
        id="verify-version-path",
    ),
    pytest.param(
        APP + HOST + "[verify]\nversion_path = 0\n",
        {},
        "[verify] version_path: expected a string, found 0 (integer)",
        'for example: version_path = "/version" (or "" to skip)',
        id="verify-version-path-int",
    ),
    pytest.param(
        APP + HOST + "[verify]\ntimeout = 0\n",
        {},
        "[verify] timeout: expected a number greater than 0, found 0 (integer)",
        "for example: timeout = 60",
        id="timeout-zero",
    ),
    pytest.param(
        APP + HOST + "[verify]\ntimeout = 0.0\n",
        {},
        "[verify] timeout: expected a number greater than 0, found 0.0 (float)",
        "for example: timeout = 60",
        id="timeout-zero-float",
    ),
    pytest.param(
        APP + HOST + "[verify]\ntimeout = -1.5\n",
        {},
        "[verify] timeout: expected a number greater than 0, found -1.5 (float)",
        "for example: timeout = 60",
        id="timeout-negative",
    ),
    pytest.param(
        APP + HOST + "[verify]\ntimeout = inf\n",
        {},
        "[verify] timeout: expected a number greater than 0, found inf (float)",
        "for example: timeout = 60",
        id="timeout-inf",
    ),
    pytest.param(
        APP + HOST + "[verify]\ntimeout = nan\n",
        {},
        "[verify] timeout: expected a number greater than 0, found nan (float)",
        "for example: timeout = 60",
        id="timeout-nan",
    ),
    pytest.param(
        APP + HOST + '[verify]\ntimeout = "60s"\n',
        {},
        '[verify] timeout: expected a number greater than 0, found "60s" (string)',
        "for example: timeout = 60",
        id="timeout-string",
    ),
    pytest.param(
        APP + HOST + "[verify]\ntimeout = true\n",
        {},
        "[verify] timeout: expected a number greater than 0, found true (boolean)",
        "for example: timeout = 60",
        id="timeout-bool",
    ),
    pytest.param(
        APP + HOST + "[verify]\nsettle = -1\n",
        {},
        "[verify] settle: expected a number of at least 0, found -1 (integer)",
        "for example: settle = 2",
        id="settle-negative",
    ),
    pytest.param(
        APP + HOST + "[verify]\nsettle = -0.001\n",
        {},
        "[verify] settle: expected a number of at least 0, found -0.001 (float)",
        "for example: settle = 2",
        id="settle-tiny-negative",
    ),
    pytest.param(
        APP + HOST + "[verify]\nsettle = inf\n",
        {},
        "[verify] settle: expected a number of at least 0, found inf (float)",
        "for example: settle = 2",
        id="settle-inf",
    ),
    pytest.param(
        APP + HOST + "[verify]\nsettle = false\n",
        {},
        "[verify] settle: expected a number of at least 0, found false (boolean)",
        "for example: settle = 2",
        id="settle-bool",
    ),
    pytest.param(
        APP + HOST + '[verify]\nsettle = "2"\n',
        {},
        '[verify] settle: expected a number of at least 0, found "2" (string)',
        "for example: settle = 2",
        id="settle-string",
    ),
    pytest.param(
        '[app]\nname = "' + "X" * 40 + '"\nversion = "1"\n' + HOST,
        {},
        '[app] name: expected lowercase letters, digits and "-" (starting with a letter or digit), at most 64 characters, found "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX" (string)',
        'the image is NAME_VERSION.raw and portablectl splits at the first "_"; use e.g. "my-app"',
        id="render-string-40",
    ),
    pytest.param(
        '[app]\nname = "' + "X" * 41 + '"\nversion = "1"\n' + HOST,
        {},
        '[app] name: expected lowercase letters, digits and "-" (starting with a letter or digit), at most 64 characters, found "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX..." (string)',
        'the image is NAME_VERSION.raw and portablectl splits at the first "_"; use e.g. "my-app"',
        id="render-string-41",
    ),
    pytest.param(
        '[app]\nname = [1, 2.5, true]\nversion = "1"\n' + HOST,
        {},
        "[app] name: expected a string, found [1, 2.5, true] (array)",
        'for example: name = "scoreboard"',
        id="render-array-3",
    ),
    pytest.param(
        '[app]\nname = [1, 2, 3, 4]\nversion = "1"\n' + HOST,
        {},
        "[app] name: expected a string, found [1, 2, 3, ...] (array)",
        'for example: name = "scoreboard"',
        id="render-array-4",
    ),
    pytest.param(
        '[app]\nname = ["' + "y" * 30 + '"]\nversion = "1"\n' + HOST,
        {},
        '[app] name: expected a string, found ["yyyyyyyyyyyyyyyyyyyy..."] (array)',
        'for example: name = "scoreboard"',
        id="render-array-long-string",
    ),
    pytest.param(
        '[app]\nname = [{a = 1}, false]\nversion = "1"\n' + HOST,
        {},
        "[app] name: expected a string, found [{...}, false] (array)",
        'for example: name = "scoreboard"',
        id="render-array-table",
    ),
    pytest.param(
        '[app]\nname = [[[["' + "z" * 10 + '"]]]]\nversion = "1"\n' + HOST,
        {},
        '[app] name: expected a string, found [[[["zz..."]]]] (array)',
        'for example: name = "scoreboard"',
        id="render-array-nested",
    ),
    pytest.param(
        '[app]\nname = [[[[[1]]]]]\nversion = "1"\n' + HOST,
        {},
        "[app] name: expected a string, found [[[[[...]]]]] (array)",
        'for example: name = "scoreboard"',
        id="render-array-deep",
    ),
    pytest.param(
        '[app]\nname = []\nversion = "1"\n' + HOST,
        {},
        "[app] name: expected a string, found [] (array)",
        'for example: name = "scoreboard"',
        id="render-array-empty",
    ),
    pytest.param(
        '[app]\nname = "\u00e9t\u00e9"\nversion = "1"\n' + HOST,
        {},
        '[app] name: expected lowercase letters, digits and "-" (starting with a letter or digit), at most 64 characters, found "été" (string)',
        'the image is NAME_VERSION.raw and portablectl splits at the first "_"; use e.g. "my-app"',
        id="render-non-ascii",
    ),
    pytest.param(
        '[app]\nname = "a\\u007f"\nversion = "1"\n' + HOST,
        {},
        '[app] name: expected lowercase letters, digits and "-" (starting with a letter or digit), at most 64 characters, found "a\\x7f" (string)',
        'the image is NAME_VERSION.raw and portablectl splits at the first "_"; use e.g. "my-app"',
        id="render-del",
    ),
    pytest.param(
        '[app]\nname = "a\\u2028"\nversion = "1"\n' + HOST,
        {},
        '[app] name: expected lowercase letters, digits and "-" (starting with a letter or digit), at most 64 characters, found "a\\u2028" (string)',
        'the image is NAME_VERSION.raw and portablectl splits at the first "_"; use e.g. "my-app"',
        id="render-line-separator",
    ),
    pytest.param(
        '[app]\nname = "a\\n"\nversion = "1"\n' + HOST,
        {},
        '[app] name: expected lowercase letters, digits and "-" (starting with a letter or digit), at most 64 characters, found "a\\n" (string)',
        'the image is NAME_VERSION.raw and portablectl splits at the first "_"; use e.g. "my-app"',
        id="render-newline",
    ),
    pytest.param(
        '[app]\nname = 1.5\nversion = "1"\n' + HOST,
        {},
        "[app] name: expected a string, found 1.5 (float)",
        'for example: name = "scoreboard"',
        id="render-float",
    ),
    pytest.param(
        '[app]\nname = {a = 1}\nversion = "1"\n' + HOST,
        {},
        "[app] name: expected a string, found a table",
        'for example: name = "scoreboard"',
        id="render-table",
    ),
    # --- [secrets.NAME] ---
    pytest.param(
        'secrets = "x"\n' + APP + HOST,
        {},
        '[secrets]: expected a table of [secrets.NAME] tables, found "x" (string)',
        'write [secrets.api-token] on a line of its own, then file = ".deploy/api-token" and units = ["scoreboard.service"]',
        id="secrets-scalar",
    ),
    pytest.param(
        APP + HOST + '[secrets]\napi-token = "x"\n',
        {},
        '[secrets.api-token]: expected a table, found "x" (string)',
        'write [secrets.api-token] on a line of its own, then a source (env, file or command) and units = ["..."]',
        id="secret-scalar",
    ),
    pytest.param(
        APP + HOST + '[secrets."-x"]\nenv = "X"\nunits = ["scoreboard.service"]\n',
        {},
        '[secrets.-x]: expected a name of 1 to 64 letters, digits, "_", "." and "-", not starting with "." or "-", found "-x" (string)',
        "the name is the systemd credential name, e.g. [secrets.api-token]",
        id="secret-name-dash",
    ),
    pytest.param(
        APP + HOST + '[secrets."a/b"]\nenv = "X"\nunits = ["scoreboard.service"]\n',
        {},
        '[secrets."a/b"]: expected a name of 1 to 64 letters, digits, "_", "." and "-", not starting with "." or "-", found "a/b" (string)',
        "the name is the systemd credential name, e.g. [secrets.api-token]",
        id="secret-name-slash",
    ),
    pytest.param(
        APP + HOST + "[secrets." + "a" * 65 + ']\nenv = "X"\nunits = ["scoreboard.service"]\n',
        {},
        "[secrets."
        + "a" * 65
        + ']: expected a name of 1 to 64 letters, digits, "_", "." and "-", not starting with "." or "-", found "'
        + "a" * 40
        + '..." (string)',
        "the name is the systemd credential name, e.g. [secrets.api-token]",
        id="secret-name-65",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nunits = ["scoreboard.service"]\n',
        {},
        "[secrets.t]: expected exactly one source (env, file or command), found none",
        'for example: file = ".deploy/api-token", or env = "SCOREBOARD_TOKEN", or command = "pass show scoreboard/api-token"',
        id="secret-no-source",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = "X"\nfile = "f"\nunits = ["scoreboard.service"]\n',
        {},
        "[secrets.t]: expected exactly one source (env, file or command), found env and file",
        'for example: file = ".deploy/api-token", or env = "SCOREBOARD_TOKEN", or command = "pass show scoreboard/api-token"',
        id="secret-two-sources",
    ),
    pytest.param(
        APP
        + HOST
        + '[secrets.t]\nenv = "X"\nfile = "f"\ncommand = "c"\nunits = ["scoreboard.service"]\n',
        {},
        "[secrets.t]: expected exactly one source (env, file or command), found env and file and command",
        'for example: file = ".deploy/api-token", or env = "SCOREBOARD_TOKEN", or command = "pass show scoreboard/api-token"',
        id="secret-three-sources",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = "X"\nunit = ["scoreboard.service"]\n',
        {},
        '[secrets.t] unit: unknown key, did you mean "units"?',
        "keys of [secrets.t]: env, file, command, units, environment; remove or rename this one",
        id="secret-key-typo",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nvalue = "hunter2"\nunits = ["scoreboard.service"]\n',
        {},
        "[secrets.t] value: unknown key, valid keys are env, file, command, units, environment",
        "keys of [secrets.t]: env, file, command, units, environment; remove or rename this one",
        id="secret-value-key",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = "X"\n',
        {},
        "[secrets.t] units: required key is missing, expected an array of the service units that receive it",
        'for example: units = ["scoreboard.service"]',
        id="secret-units-missing",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = "X"\nunits = []\n',
        {},
        "[secrets.t] units: expected a non-empty array of service unit names, found [] (array)",
        'for example: units = ["scoreboard.service"]',
        id="secret-units-empty",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = "X"\nunits = "scoreboard.service"\n',
        {},
        '[secrets.t] units: expected a non-empty array of service unit names, found "scoreboard.service" (string)',
        'for example: units = ["scoreboard.service"]',
        id="secret-units-string",
    ),
    pytest.param(
        APP
        + HOST
        + '[secrets.t]\nenv = "X"\nunits = ["scoreboard.service", "scoreboard.socket"]\n',
        {},
        '[secrets.t] units: expected service units named "scoreboard.service", "scoreboard-*.service" or "scoreboard@*.service", found "scoreboard.socket" (string) at index 1',
        "only the app's own services can receive a secret; name them as in the units directory",
        id="secret-unit-socket",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = "X"\nunits = ["scoreboardx.service"]\n',
        {},
        '[secrets.t] units: expected service units named "scoreboard.service", "scoreboard-*.service" or "scoreboard@*.service", found "scoreboardx.service" (string) at index 0',
        "only the app's own services can receive a secret; name them as in the units directory",
        id="secret-unit-foreign",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = "X"\nunits = [1]\n',
        {},
        '[secrets.t] units: expected service units named "scoreboard.service", "scoreboard-*.service" or "scoreboard@*.service", found 1 (integer) at index 0',
        "only the app's own services can receive a secret; name them as in the units directory",
        id="secret-unit-int",
    ),
    pytest.param(
        APP
        + HOST
        + '[secrets.t]\nenv = "X"\nunits = ["scoreboard.service", "scoreboard.service"]\n',
        {},
        '[secrets.t] units: expected each unit once, found "scoreboard.service" twice',
        'for example: units = ["scoreboard.service"]',
        id="secret-unit-twice",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = 1\nunits = ["scoreboard.service"]\n',
        {},
        "[secrets.t] env: expected a string, found 1 (integer)",
        'for example: env = "SCOREBOARD_TOKEN"',
        id="secret-env-int",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = "1X"\nunits = ["scoreboard.service"]\n',
        {},
        '[secrets.t] env: expected an environment variable name (letters, digits and "_", not starting with a digit), found "1X" (string)',
        'for example: env = "SCOREBOARD_TOKEN"',
        id="secret-env-digit",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = "$X"\nunits = ["scoreboard.service"]\n',
        {},
        '[secrets.t] env: expected an environment variable name (letters, digits and "_", not starting with a digit), found "$X" (string)',
        'for example: env = "SCOREBOARD_TOKEN"',
        id="secret-env-dollar",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nfile = ""\nunits = ["scoreboard.service"]\n',
        {},
        '[secrets.t] file: expected a file system path, found "" (string)',
        'for example: file = ".deploy/api-token"',
        id="secret-file-empty",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nfile = ["a"]\nunits = ["scoreboard.service"]\n',
        {},
        '[secrets.t] file: expected a string, found ["a"] (array)',
        'for example: file = ".deploy/api-token"',
        id="secret-file-array",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\ncommand = " "\nunits = ["scoreboard.service"]\n',
        {},
        '[secrets.t] command: expected a non-empty shell command line, found " " (string)',
        'for example: command = "pass show scoreboard/api-token"',
        id="secret-command-blank",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\ncommand = ["pass", "show"]\nunits = ["scoreboard.service"]\n',
        {},
        '[secrets.t] command: expected a string, found ["pass", "show"] (array)',
        'for example: command = "pass show scoreboard/api-token"',
        id="secret-command-array",
    ),
    pytest.param(
        APP
        + HOST
        + '[secrets.t]\nenv = "X"\nunits = ["scoreboard.service"]\nenvironment = "A-B"\n',
        {},
        '[secrets.t] environment: expected an environment variable name (letters, digits and "_", not starting with a digit), found "A-B" (string)',
        'for example: environment = "API_TOKEN"',
        id="secret-environment-dash",
    ),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = "X"\nunits = ["scoreboard.service"]\nenvironment = true\n',
        {},
        "[secrets.t] environment: expected a string, found true (boolean)",
        'for example: environment = "API_TOKEN"',
        id="secret-environment-bool",
    ),
    pytest.param(
        APP
        + HOST
        + '[secrets.a]\nenv = "X"\nunits = ["scoreboard.service"]\nenvironment = "TOKEN"\n'
        + '[secrets.b]\nenv = "Y"\nunits = ["scoreboard.service"]\nenvironment = "TOKEN"\n',
        {},
        '[secrets.b] environment: expected a variable no other secret gives scoreboard.service, found "TOKEN", which [secrets.a] gives it too',
        "give each secret its own variable name",
        id="secret-environment-clash",
    ),
]


@pytest.mark.parametrize(("toml", "files", "message", "hint"), EXACT)
def test_error_message_and_hint_are_exact(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    toml: str,
    files: dict[str, str | None],
    message: str,
    hint: str,
) -> None:
    """A broken deploy.toml gives exactly this message and hint, the file named as given."""
    write(tmp_path, toml, files)
    monkeypatch.chdir(tmp_path)
    error = load_error(Path("deploy.toml"))
    expected = "deploy.toml: " + message.replace("{root}", str(tmp_path))
    assert (error.message, error.hint) == (expected, hint)


@pytest.mark.parametrize(
    ("section", "key"), [("image", "tree"), ("sign", "allowed_signers")], ids=["tree", "signers"]
)
def test_name_too_long_for_the_file_system_is_not_there(
    tmp_path: Path, section: str, key: str
) -> None:
    """A path the file system refuses (ENAMETOOLONG) counts as missing, not as a crash."""
    name = "x" * 256
    error = load_error(write(tmp_path, APP + HOST + f'[{section}]\n{key} = "{name}"\n'))
    kind = "directory" if key == "tree" else "file"
    assert error.message == (
        f"{tmp_path / 'deploy.toml'}: [{section}] {key}: expected an existing {kind}, "
        f'found "{"x" * 40}..." (string), and {tmp_path / name} is not a {kind}'
    )


def test_unprintable_file_name_is_quoted(tmp_path: Path) -> None:
    """A deploy.toml whose name has a control character is named quoted and escaped."""
    error = load_error(tmp_path / "deploy\x7f.toml")
    assert error.message == f'"{tmp_path}/deploy\\x7f.toml": file not found'


def test_missing_file_message_and_hint(tmp_path: Path) -> None:
    """A missing file: `FILE: file not found`, hint to create it or set DEPLOY_TOML."""
    error = load_error(tmp_path / "deploy.toml")
    assert (error.message, error.hint) == (
        f"{tmp_path}/deploy.toml: file not found",
        "create it (see the README), or set DEPLOY_TOML to the path of your deploy.toml",
    )


def test_directory_message_and_hint(tmp_path: Path) -> None:
    """A directory: `FILE: cannot read the file: <strerror>`, hint to check or use another path."""
    error = load_error(tmp_path)
    assert (error.message, error.hint) == (
        f"{tmp_path}: cannot read the file: Is a directory",
        "check that it is a readable file, or set DEPLOY_TOML to another path",
    )


def test_nul_in_file_name_is_a_read_error(tmp_path: Path) -> None:
    """A NUL in the file name (ValueError, no strerror) is reported with the exception text."""
    error = load_error(tmp_path / "a\0b")
    assert error.message == f'"{tmp_path}/a\\u0000b": cannot read the file: embedded null byte'


def test_non_utf8_message_and_hint(tmp_path: Path) -> None:
    """A file that is not UTF-8 names the byte offset; the hint says to save it as UTF-8."""
    path = tmp_path / "deploy.toml"
    path.write_bytes(b'[app]\nname = "\xff"\n')
    error = load_error(path)
    assert (error.message, error.hint) == (
        f"{path}: expected UTF-8 text, found an invalid byte at offset 14",
        "TOML files are UTF-8; save the file with that encoding",
    )


# --- every accepted value, exactly --------------------------------------------------------------

Get = Callable[[Config], object]

ACCEPTED = [
    pytest.param(APP + HOST + "port = 1\n", lambda c: c.hosts["prod"].port, 1, id="port-1"),
    pytest.param(
        APP + HOST + "port = 65535\n", lambda c: c.hosts["prod"].port, 65535, id="port-65535"
    ),
    pytest.param(APP + HOST, lambda c: c.hosts["prod"].port, None, id="port-absent"),
    pytest.param(APP + HOST, lambda c: c.hosts["prod"].user, None, id="user-absent"),
    pytest.param(
        APP + HOST + 'user = "a-b!~"\n', lambda c: c.hosts["prod"].user, "a-b!~", id="user"
    ),
    pytest.param(APP + HOST, lambda c: c.hosts["prod"].identity_file, None, id="identity-absent"),
    pytest.param(
        APP + HOST + 'identity_file = "/k"\n',
        lambda c: c.hosts["prod"].identity_file,
        Path("/k"),
        id="identity-absolute",
    ),
    pytest.param(APP + HOST, lambda c: c.hosts["prod"].sandbox, False, id="sandbox-absent"),
    pytest.param(
        APP + '[hosts.a_B-9]\naddress = "h-1"\n',
        lambda c: c.hosts["a_B-9"].address,
        "h-1",
        id="host-name",
    ),
    pytest.param(
        APP + '[hosts.a]\naddress = "!~"\n', lambda c: c.hosts["a"].address, "!~", id="address"
    ),
    pytest.param(APP + HOST + "[verify]\nport = 1\n", lambda c: c.verify.port, 1, id="vport-1"),
    pytest.param(
        APP + HOST + "[verify]\nport = 65535\n", lambda c: c.verify.port, 65535, id="vport-65535"
    ),
    pytest.param(
        APP + HOST + "[verify]\nstatus = 100\n", lambda c: c.verify.status, 100, id="status-100"
    ),
    pytest.param(
        APP + HOST + "[verify]\nstatus = 599\n", lambda c: c.verify.status, 599, id="status-599"
    ),
    pytest.param(
        APP + HOST + '[verify]\npath = "/"\n', lambda c: c.verify.path, "/", id="path-root"
    ),
    pytest.param(
        APP + HOST + '[verify]\npath = "/a?b=~"\n', lambda c: c.verify.path, "/a?b=~", id="path"
    ),
    pytest.param(
        APP + HOST + '[verify]\nversion_path = ""\n',
        lambda c: c.verify.version_path,
        None,
        id="version-path-off",
    ),
    pytest.param(
        APP + HOST + '[verify]\nversion_path = "/v"\n',
        lambda c: c.verify.version_path,
        "/v",
        id="version-path",
    ),
    pytest.param(
        APP + HOST + "[verify]\ntimeout = 0.001\n",
        lambda c: c.verify.timeout,
        0.001,
        id="timeout-small",
    ),
    pytest.param(
        APP + HOST + "[verify]\nsettle = 0\n", lambda c: c.verify.settle, 0.0, id="settle-0"
    ),
    pytest.param(
        APP + HOST + "[verify]\nsettle = 0.5\n", lambda c: c.verify.settle, 0.5, id="settle-half"
    ),
    pytest.param(
        APP + HOST + "[deploy]\nkeep_releases = 2\n",
        lambda c: c.deploy.keep_releases,
        2,
        id="keep-2",
    ),
    pytest.param(
        APP + HOST + "[deploy]\nlock_ttl = 1\n", lambda c: c.deploy.lock_ttl, 1, id="ttl-1"
    ),
    pytest.param(
        APP + HOST + "[deploy]\nlock_ttl = 1000000000000\n",
        lambda c: c.deploy.lock_ttl,
        10**12,
        id="ttl-no-upper-bound",
    ),
    pytest.param(
        '[app]\nname = "scoreboard"\nversion = "0+a.B~z-9"\n' + HOST,
        lambda c: c.app.version,
        "0+a.B~z-9",
        id="version-every-allowed-kind",
    ),
    pytest.param(
        APP + HOST + '[sign]\nprincipal = "!~"\n', lambda c: c.sign.principal, "!~", id="principal"
    ),
    pytest.param(
        APP + HOST + '[sign]\nkey = "/abs/key"\n', lambda c: c.sign.key, Path("/abs/key"), id="key"
    ),
    pytest.param(
        APP + HOST + '[build]\ncommands = ["a", " b "]\n',
        lambda c: c.build.commands,
        ("a", " b "),
        id="commands",
    ),
    pytest.param(
        APP + HOST + '[image.files]\na = "x"\nb = "y"\n"c/d" = "z"\n',
        lambda c: list(c.image.files),
        ["a", "b", "c/d"],
        id="files-siblings",
    ),
    pytest.param(
        APP + HOST + '[image.files]\n"a/b" = "x"\n"ab/c" = "y"\n',
        lambda c: list(c.image.files),
        ["a/b", "ab/c"],
        id="files-shared-prefix",
    ),
    pytest.param(APP + HOST, lambda c: c.secrets, {}, id="secrets-absent"),
    pytest.param(
        APP + HOST + '[secrets.t]\nenv = "_X1"\nunits = ["scoreboard.service"]\n',
        lambda c: c.secrets["t"],
        SecretConfig(name="t", units=("scoreboard.service",), env="_X1"),
        id="secret-env",
    ),
    pytest.param(
        APP
        + HOST
        + '[secrets."a_B.9-z"]\ncommand = "pass show x"\nunits = ["scoreboard.service"]\n',
        lambda c: c.secrets["a_B.9-z"],
        SecretConfig(name="a_B.9-z", units=("scoreboard.service",), command="pass show x"),
        id="secret-command-name-chars",
    ),
    pytest.param(
        APP + HOST + "[secrets." + "a" * 64 + ']\nenv = "X"\nunits = ["scoreboard.service"]\n',
        lambda c: list(c.secrets),
        ["a" * 64],
        id="secret-name-64",
    ),
    pytest.param(
        APP
        + HOST
        + '[secrets.t]\nenv = "X"\nenvironment = "TOKEN"\n'
        + 'units = ["scoreboard-litestream.service", "scoreboard@1.service", "scoreboard.service"]\n',
        lambda c: (c.secrets["t"].units, c.secrets["t"].environment),
        (
            ("scoreboard-litestream.service", "scoreboard@1.service", "scoreboard.service"),
            "TOKEN",
        ),
        id="secret-units-environment",
    ),
    pytest.param(
        APP
        + HOST
        + '[secrets.a]\nenv = "X"\nunits = ["scoreboard.service"]\nenvironment = "TOKEN"\n'
        + '[secrets.b]\nenv = "Y"\nunits = ["scoreboard-x.service"]\nenvironment = "TOKEN"\n',
        lambda c: [s.environment for s in c.secrets.values()],
        ["TOKEN", "TOKEN"],
        id="secret-environment-same-name-other-unit",
    ),
    pytest.param(
        APP
        + HOST
        + '[secrets.z]\nenv = "Z"\nunits = ["scoreboard.service"]\n'
        + '[secrets.a]\nenv = "A"\nunits = ["scoreboard.service"]\n',
        lambda c: list(c.secrets),
        ["a", "z"],
        id="secrets-in-name-order",
    ),
    *(
        pytest.param(
            APP + HOST + f'[image]\ncompression = "{c.value}"\n',
            lambda cfg: cfg.image.compression,
            c,
            id=f"compression-{c.value}",
        )
        for c in Compression
    ),
    pytest.param(
        APP + HOST,
        lambda cfg: cfg.image.compression_level,
        None,
        id="compression-level-default",
    ),
    pytest.param(
        APP + HOST + '[image]\ncompression = "lzo"\ncompression_level = 9\n',
        lambda cfg: cfg.image.compression_level,
        9,
        id="compression-level-lzo",
    ),
    pytest.param(
        APP + HOST + "[image]\ncompression_level = 1\n",
        lambda cfg: cfg.image.compression_level,
        1,
        id="compression-level-zstd-lowest",
    ),
]


@pytest.mark.parametrize(("toml", "get", "expected"), ACCEPTED)
def test_accepted_value_is_loaded_exactly(
    tmp_path: Path, toml: str, get: Get, expected: object
) -> None:
    """A valid value, boundaries included, loads as exactly this value."""
    value = get(load_config(write(tmp_path, toml)))
    assert value == expected
    assert type(value) is type(expected)


def test_tree_that_exists_is_loaded(tmp_path: Path) -> None:
    """An existing tree directory is accepted and resolved against deploy.toml's directory."""
    cfg = load_config(write(tmp_path, APP + HOST + '[image]\ntree = "skel"\n', {"skel": DIR}))
    assert cfg.image.tree == tmp_path / "skel"


def test_allowed_signers_that_exists_is_loaded(tmp_path: Path) -> None:
    """An existing allowed_signers file is accepted and resolved."""
    toml = APP + HOST + '[sign]\nallowed_signers = "s"\n'
    cfg = load_config(write(tmp_path, toml, {"s": "deploy ssh-ed25519 AAAA\n"}))
    assert cfg.sign.allowed_signers == tmp_path / "s"


def test_units_and_dist_given_are_resolved(tmp_path: Path) -> None:
    """units and dist given in the file are resolved against its directory."""
    toml = APP + HOST + '[image]\nunits = "u"\ndist = "/out"\n'
    cfg = load_config(write(tmp_path, toml, {"u/scoreboard.service": UNIT}))
    assert (cfg.image.units, cfg.image.dist) == (tmp_path / "u", Path("/out"))


# --- config_path and defaults -------------------------------------------------------------------


def test_config_path_prefers_the_explicit_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit path wins over $DEPLOY_TOML."""
    monkeypatch.setenv(ENV_FILE, "env.toml")
    assert config_path("given.toml") == Path("given.toml")


def test_config_path_falls_back_to_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit path (None or ""), $DEPLOY_TOML is used."""
    monkeypatch.setenv("DEPLOY_TOML", "env.toml")
    assert (config_path(), config_path("")) == (Path("env.toml"), Path("env.toml"))


@pytest.mark.parametrize("env", [None, ""])
def test_config_path_defaults_to_deploy_toml(
    monkeypatch: pytest.MonkeyPatch, env: str | None
) -> None:
    """Without an explicit path and with $DEPLOY_TOML unset or empty: ./deploy.toml."""
    if env is None:
        monkeypatch.delenv(ENV_FILE, raising=False)
    else:
        monkeypatch.setenv(ENV_FILE, env)
    assert config_path() == Path("deploy.toml")
    assert DEFAULT_FILE == "deploy.toml"


def test_default_of_a_field_without_one_is_a_lookup_error() -> None:
    """Asking for the default of a required field is a programming error that names the field."""
    with pytest.raises(LookupError) as info:
        _default(AppConfig, "name")
    assert str(info.value) == "AppConfig.name has no default"


def test_default_of_an_unknown_field_is_a_lookup_error() -> None:
    """Asking for the default of a field that does not exist names it too."""
    with pytest.raises(LookupError) as info:
        _default(ImageConfig, "nope")
    assert str(info.value) == "ImageConfig.nope has no default"


def test_default_factory_gives_a_fresh_value() -> None:
    """A default made by a factory is built on each call, never shared."""
    first = _default(ImageConfig, "files")
    assert first == {}
    assert first is not _default(ImageConfig, "files")
    assert _default(ImageConfig, "compression") is Compression.ZSTD


@pytest.mark.parametrize(
    ("cls", "name", "line"),
    [
        (VerifyConfig, "timeout", "timeout = 60"),
        (DeployConfig, "keep_releases", "keep_releases = 5"),
        (SignConfig, "principal", 'principal = "deploy"'),
        (ImageConfig, "dist", 'dist = "dist"'),
        (ImageConfig, "compression", 'compression = "zstd"'),
    ],
)
def test_example_line_writes_the_default_as_toml(cls: type, name: str, line: str) -> None:
    """A default is shown as TOML: a whole float as an integer, a path or enum as a string."""
    assert _example(cls, name) == line


# --- check_sources, exactly ---------------------------------------------------------------------

CHECK_HINT = (
    "sources are usually made by the [build] commands; check that they ran and write this file, "
    "or fix the path"
)


def test_check_sources_messages_are_exact(tmp_path: Path) -> None:
    """Missing and non-regular sources: exact message (quoted destination) and hint."""
    toml = APP + HOST + '[image.files]\na = "build/a"\n"b\\u007f" = "build/b\\u007f"\n'
    cfg = load_config(write(tmp_path, toml, {"build/a": "x"}))
    with pytest.raises(ConfigError) as info:
        check_sources(cfg)
    assert (info.value.message, info.value.hint) == (
        f'{tmp_path}/deploy.toml: [image] files."b\\x7f": expected a regular file, '
        f'found "{tmp_path}/build/b\\x7f", which does not exist',
        CHECK_HINT,
    )
    (tmp_path / "build/b\x7f").mkdir()
    with pytest.raises(ConfigError) as info:
        check_sources(cfg)
    assert info.value.message == (
        f'{tmp_path}/deploy.toml: [image] files."b\\x7f": expected a regular file, '
        f'found "{tmp_path}/build/b\\x7f", which is not a regular file'
    )


# --- resolve_version, exactly -------------------------------------------------------------------

FALLBACK = "set a literal version in [app] version or in DEPLOY_VERSION"


def git_cfg(tmp_path: Path, version: str = "git") -> Config:
    toml = f'[app]\nname = "scoreboard"\nversion = "{version}"\n' + HOST
    return load_config(write(tmp_path, toml))


def failing(exc: BaseException) -> Callable[[list[str]], str]:
    def run(argv: list[str]) -> str:
        raise exc

    return run


def version_error(cfg: Config, git: Callable[[list[str]], str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolve_version(cfg, git=git)
    return info.value


@pytest.fixture
def no_env_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VERSION, raising=False)


@pytest.mark.usefixtures("no_env_version")
def test_git_failure_message_and_hint_are_exact(tmp_path: Path) -> None:
    """A failed describe shows the command, git's last stderr line (bytes decoded) and a hint."""
    stderr = b"warning: x\nfatal: bad \xff\n"
    error = version_error(
        git_cfg(tmp_path), failing(subprocess.CalledProcessError(128, [], "", stderr))
    )
    assert (error.message, error.hint) == (
        f'{tmp_path}/deploy.toml: [app] version = "git": '
        f"`git -C {tmp_path} describe --tags --always --dirty` failed: fatal: bad \ufffd",
        f"{tmp_path} must be a git repository with at least one commit; or {FALLBACK}",
    )


@pytest.mark.parametrize("stderr", [None, "", " \n"])
@pytest.mark.usefixtures("no_env_version")
def test_git_failure_without_stderr_shows_exit_status(tmp_path: Path, stderr: str | None) -> None:
    """A failed describe that printed nothing is reported by its exit status."""
    exc = subprocess.CalledProcessError(3, [], "", stderr)
    error = version_error(git_cfg(tmp_path), failing(exc))
    assert error.message.endswith("--dirty` failed: exit status 3")


@pytest.mark.usefixtures("no_env_version")
def test_git_not_runnable_message_and_hint_are_exact(tmp_path: Path) -> None:
    """git that cannot run (OSError) names the reason; the hint says to install git."""
    exc = FileNotFoundError(2, "No such file or directory", "git")
    error = version_error(git_cfg(tmp_path), failing(exc))
    assert (error.message, error.hint) == (
        f'{tmp_path}/deploy.toml: [app] version = "git": could not run git: '
        "[Errno 2] No such file or directory: 'git'",
        f"install git, or {FALLBACK}",
    )


@pytest.mark.usefixtures("no_env_version")
def test_git_timeout_is_a_config_error(tmp_path: Path) -> None:
    """git that times out (a SubprocessError) is reported like one that cannot run."""
    error = version_error(git_cfg(tmp_path), failing(subprocess.TimeoutExpired(["git"], 60)))
    assert error.message == (
        f'{tmp_path}/deploy.toml: [app] version = "git": could not run git: '
        "Command '['git']' timed out after 60 seconds"
    )


@pytest.mark.usefixtures("no_env_version")
def test_git_output_problem_message_and_hint_are_exact(tmp_path: Path) -> None:
    """Empty describe output is rejected with the version rule and a hint to tag the commit."""
    error = version_error(git_cfg(tmp_path), lambda argv: "\n")
    assert (error.message, error.hint) == (
        f'{tmp_path}/deploy.toml: [app] version = "git": expected a version of letters, digits, '
        "'.', '-', '+' and '~' from git describe, found \"\" (string) which is empty",
        f"tag the commit with a plain version such as v1.4.2, or {FALLBACK}",
    )


@pytest.mark.usefixtures("no_env_version")
def test_git_output_whitespace_slash_underscore_become_dashes(tmp_path: Path) -> None:
    """Each space, tab, newline, "/" and "_" inside the describe output becomes one "-"."""
    assert resolve_version(git_cfg(tmp_path), git=lambda argv: " a\tb\nc_d/e \n") == "a-b-c-d-e"


def test_env_git_failure_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DEPLOY_VERSION=git, a failure names the variable, not [app] version."""
    monkeypatch.setenv(ENV_VERSION, "git")
    cfg = git_cfg(tmp_path, version="1.0")
    error = version_error(cfg, failing(OSError("boom")))
    assert error.message == 'environment variable DEPLOY_VERSION = "git": could not run git: boom'


def test_env_version_message_and_hint_are_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad DEPLOY_VERSION: the version rule, what is wrong, and a hint to unset it."""
    monkeypatch.setenv(ENV_VERSION, "1 0")
    with pytest.raises(ConfigError) as info:
        resolve_version(git_cfg(tmp_path, version="1.0"))
    assert (info.value.message, info.value.hint) == (
        "environment variable DEPLOY_VERSION: expected a version of letters, digits, '.', '-', "
        "'+' and '~', found \"1 0\" (string) which contains ' '",
        "the version is part of file names and unit settings on the host; use letters, digits, "
        "'.', '-', '+' and '~'; or unset DEPLOY_VERSION to use [app] version",
    )


def test_env_version_of_every_allowed_kind_of_character_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEPLOY_VERSION made of letters, digits, '.', '-', '+' and '~' is used as it is."""
    monkeypatch.setenv(ENV_VERSION, "0+a.B~z-9")
    cfg = git_cfg(tmp_path, version="1.0")
    assert resolve_version(cfg, git=failing(AssertionError())) == "0+a.B~z-9"


def test_run_git_returns_stdout_as_text() -> None:
    """The default runner returns the command's stdout as text, without its stderr."""
    assert _run_git(["sh", "-c", "echo out; echo err >&2"]) == "out\n"


def test_run_git_raises_with_stderr_on_failure() -> None:
    """The default runner raises CalledProcessError carrying the exit status and stderr text."""
    with pytest.raises(subprocess.CalledProcessError) as info:
        _run_git(["sh", "-c", "echo err >&2; exit 3"])
    assert (info.value.returncode, info.value.stderr) == (3, "err\n")


def test_run_git_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default runner gives git 60 seconds, so a hung git cannot hang the build."""
    seen: dict[str, object] = {}

    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.update(kwargs)
        return subprocess.CompletedProcess(argv, 0, "v1\n", "")

    monkeypatch.setattr(subprocess, "run", run)
    assert _run_git(["git"]) == "v1\n"
    assert seen["timeout"] == 60


def test_config_root_is_the_directory_of_the_file(tmp_path: Path) -> None:
    """Config.root is the directory that holds deploy.toml."""
    cfg = load_config(write(tmp_path, APP + HOST))
    assert cfg.root == tmp_path
    assert dataclasses.replace(cfg, path=Path("/x/y.toml")).root == Path("/x")


def test_name_may_start_with_a_digit(tmp_path: Path) -> None:
    """An app name may start with a digit and contain "-"."""
    toml = '[app]\nname = "0-a"\nversion = "1"\n' + HOST
    cfg = load_config(write(tmp_path, toml, {"units/0-a.service": UNIT}, units=False))
    assert cfg.app.name == "0-a"


# --- [secrets.NAME] source, for messages ----------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "source"),
    [
        (SecretConfig("t", ("scoreboard.service",), env="TOKEN"), "env TOKEN"),
        (
            SecretConfig("t", ("scoreboard.service",), file=Path("/p/.deploy/t")),
            "file /p/.deploy/t",
        ),
        (
            SecretConfig("t", ("scoreboard.service",), command="pass show scoreboard/api-token"),
            "command `pass show scoreboard/api-token`",
        ),
        (SecretConfig("t", ("scoreboard.service",), command="a\nb"), 'command "a\\nb"'),
        (SecretConfig("t", ("scoreboard.service",)), "no source"),
    ],
    ids=["env", "file", "command", "command-multiline", "none"],
)
def test_secret_source_names_where_the_value_comes_from(secret: SecretConfig, source: str) -> None:
    """`source` is one printable line: env VAR, file PATH, command `LINE` (quoted if multi-line)."""
    assert secret.source == source


def test_secret_file_is_resolved_against_the_config_directory(tmp_path: Path) -> None:
    """A relative secret file is made absolute against deploy.toml's directory, ~ expanded."""
    cfg = load_config(
        write(
            tmp_path,
            APP
            + HOST
            + '[secrets.a]\nfile = ".deploy/a"\nunits = ["scoreboard.service"]\n'
            + '[secrets.b]\nfile = "~/b"\nunits = ["scoreboard.service"]\n',
        )
    )
    assert cfg.secrets["a"].file == tmp_path / ".deploy" / "a"
    assert cfg.secrets["b"].file == Path.home() / "b"
