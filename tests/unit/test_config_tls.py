"""[verify.tls]: every key, its default, each accepted boundary and each error exactly (file, key
path, expected, found, hint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from portable_deploy.config import TlsConfig, dns_name_problem, load_config

from .test_config import APP, DIR, HOST, load_error, write
from .test_tls import make_ca

TLS = APP + HOST + "[verify.tls]\n"
NAME = 'name = "scoreboard.example.com"\n'
LABEL_HINT = (
    'each dot-separated label is 1 to 63 letters, digits and "-", not starting or ending with "-"'
)
IP_HINT = "the certificate is checked against a DNS name: write the one it is for"
NAME_HINT = 'for example: name = "scoreboard.example.com"'


@pytest.fixture(scope="module")
def ca_pem() -> str:
    """The PEM of a throwaway CA certificate."""
    return make_ca("test CA").pem().decode()


# --- accepted ----------------------------------------------------------------------------------


def test_without_the_table_verify_is_plain_http(tmp_path: Path) -> None:
    """No [verify.tls]: verify.tls is None (the checks use plain HTTP on [verify] port)."""
    assert load_config(write(tmp_path, APP + HOST)).verify.tls is None


def test_a_name_alone_takes_every_default(tmp_path: Path) -> None:
    """[verify.tls] with only name: port 443, warn_days 14, the system's trust store."""
    cfg = load_config(write(tmp_path, TLS + NAME))
    assert cfg.verify.tls == TlsConfig(name="scoreboard.example.com")
    assert (cfg.verify.tls.port, cfg.verify.tls.warn_days, cfg.verify.tls.ca_file) == (
        443,
        14,
        None,
    )


def test_every_key_given_is_loaded_and_ca_file_resolved(tmp_path: Path, ca_pem: str) -> None:
    """A relative ca_file resolves against deploy.toml's directory, not the working directory."""
    toml = TLS + NAME + 'port = 8443\nwarn_days = 0\nca_file = "tls/ca.pem"\n'
    cfg = load_config(write(tmp_path, toml, {"tls/ca.pem": ca_pem}))
    assert cfg.verify.tls == TlsConfig(
        name="scoreboard.example.com", port=8443, warn_days=0, ca_file=tmp_path / "tls/ca.pem"
    )


def test_ca_file_expands_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca_pem: str
) -> None:
    """ca_file = "~/ca.pem" is the file in $HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_config(
        write(tmp_path, TLS + NAME + 'ca_file = "~/ca.pem"\n', {"home/ca.pem": ca_pem})
    )
    assert cfg.verify.tls is not None and cfg.verify.tls.ca_file == tmp_path / "home/ca.pem"


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("port = 1", "port", 1),
        ("port = 65535", "port", 65535),
        ("warn_days = 0", "warn_days", 0),
        ("warn_days = 3650", "warn_days", 3650),
    ],
)
def test_boundary_values_are_accepted(tmp_path: Path, line: str, field: str, value: int) -> None:
    """port 1 and 65535, warn_days 0 (never warn) and any number of days above it load as given."""
    tls = load_config(write(tmp_path, TLS + NAME + line + "\n")).verify.tls
    assert getattr(tls, field) == value


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "scoreboard.test",
        "a-b.c0",
        "xn--bcher-kva.example",
        "Scoreboard.Example.COM",
        "0a.example",
        "a" * 63 + ".example",
        ".".join(["a" * 61] * 4),  # 247 characters
    ],
)
def test_a_dns_name_is_accepted_as_written(name: str) -> None:
    """Host names of letters, digits and "-" labels, up to 63 per label, are DNS names."""
    assert dns_name_problem(name) is None


def test_the_name_is_kept_as_written(tmp_path: Path) -> None:
    """The name is sent as SNI and Host exactly as written (no case folding)."""
    cfg = load_config(write(tmp_path, TLS + 'name = "Scoreboard.Example.com"\n'))
    assert cfg.verify.tls is not None and cfg.verify.tls.name == "Scoreboard.Example.com"


# --- refused, exactly --------------------------------------------------------------------------

EXACT = [
    pytest.param(
        APP + HOST + "[verify]\ntls = true\n",
        {},
        "[verify] tls: expected a table, found true (boolean)",
        'write [verify.tls] on a line of its own, followed by name = "scoreboard.example.com"',
        id="tls-scalar",
    ),
    pytest.param(
        APP + HOST + "[verify]\ntsl = {}\n",
        {},
        '[verify] tsl: unknown key, did you mean "tls"?',
        "keys of [verify]: port, path, status, version_path, timeout, settle, tls; "
        "remove or rename this one",
        id="tls-typo",
    ),
    pytest.param(
        TLS + "port = 443\n",
        {},
        "[verify.tls] name: required key is missing, "
        "expected the DNS name the certificate must be valid for",
        NAME_HINT,
        id="name-missing",
    ),
    pytest.param(
        TLS + NAME + 'cafile = "ca.pem"\n',
        {},
        '[verify.tls] cafile: unknown key, did you mean "ca_file"?',
        "keys of [verify.tls]: name, port, warn_days, ca_file; remove or rename this one",
        id="key-typo",
    ),
    pytest.param(
        TLS + NAME + "sni = 1\n",
        {},
        "[verify.tls] sni: unknown key, valid keys are name, port, warn_days, ca_file",
        "keys of [verify.tls]: name, port, warn_days, ca_file; remove or rename this one",
        id="key-unknown",
    ),
    pytest.param(
        TLS + "name = 1\n",
        {},
        "[verify.tls] name: expected a string, found 1 (integer)",
        NAME_HINT,
        id="name-int",
    ),
    pytest.param(
        TLS + "port = 0\n" + NAME,
        {},
        "[verify.tls] port: expected an integer from 1 to 65535, found 0 (integer)",
        "for example: port = 443",
        id="port-zero",
    ),
    pytest.param(
        TLS + NAME + "port = 65536\n",
        {},
        "[verify.tls] port: expected an integer from 1 to 65535, found 65536 (integer)",
        "for example: port = 443",
        id="port-high",
    ),
    pytest.param(
        TLS + NAME + 'port = "443"\n',
        {},
        '[verify.tls] port: expected an integer from 1 to 65535, found "443" (string)',
        "for example: port = 443",
        id="port-string",
    ),
    pytest.param(
        TLS + NAME + "port = true\n",
        {},
        "[verify.tls] port: expected an integer from 1 to 65535, found true (boolean)",
        "for example: port = 443",
        id="port-bool",
    ),
    pytest.param(
        TLS + NAME + "warn_days = -1\n",
        {},
        "[verify.tls] warn_days: expected a whole number of days of at least 0, found -1 (integer)",
        "for example: warn_days = 14",
        id="warn-negative",
    ),
    pytest.param(
        TLS + NAME + "warn_days = 1.5\n",
        {},
        "[verify.tls] warn_days: expected a whole number of days of at least 0, found 1.5 (float)",
        "for example: warn_days = 14",
        id="warn-float",
    ),
    pytest.param(
        TLS + NAME + "warn_days = false\n",
        {},
        "[verify.tls] warn_days: expected a whole number of days of at least 0, "
        "found false (boolean)",
        "for example: warn_days = 14",
        id="warn-bool",
    ),
    pytest.param(
        TLS + NAME + 'ca_file = "tls/ca.pem"\n',
        {},
        '[verify.tls] ca_file: expected an existing file, found "tls/ca.pem" (string), '
        "and {root}/tls/ca.pem is not a file",
        "point it at the PEM certificate of the CA that signs the app's certificate, "
        "or remove ca_file to trust the system's CAs",
        id="ca-missing",
    ),
    pytest.param(
        TLS + NAME + 'ca_file = "tls"\n',
        {"tls": DIR},
        '[verify.tls] ca_file: expected an existing file, found "tls" (string), '
        "and {root}/tls is not a file",
        "point it at the PEM certificate of the CA that signs the app's certificate, "
        "or remove ca_file to trust the system's CAs",
        id="ca-directory",
    ),
    pytest.param(
        TLS + NAME + 'ca_file = "ca.pem"\n',
        {"ca.pem": "not a certificate\n"},
        '[verify.tls] ca_file: expected PEM CA certificates, found "ca.pem" (string), '
        "which Python's ssl cannot load (NO_CERTIFICATE_OR_CRL_FOUND)",
        "it must hold one or more -----BEGIN CERTIFICATE----- blocks",
        id="ca-not-pem",
    ),
    pytest.param(
        TLS + NAME + 'ca_file = ""\n',
        {},
        '[verify.tls] ca_file: expected a file system path, found "" (string)',
        'for example: ca_file = "tls/test-ca.pem"',
        id="ca-empty",
    ),
    pytest.param(
        TLS + NAME + "ca_file = 1\n",
        {},
        "[verify.tls] ca_file: expected a string, found 1 (integer)",
        'for example: ca_file = "tls/test-ca.pem"',
        id="ca-int",
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
    """A broken [verify.tls] gives exactly this message and hint."""
    write(tmp_path, toml, files)
    monkeypatch.chdir(tmp_path)
    error = load_error(Path("deploy.toml"))
    expected = "deploy.toml: " + message.replace("{root}", str(tmp_path))
    assert (error.message, error.hint) == (expected, hint)


@pytest.mark.parametrize(
    ("name", "problem", "hint"),
    [
        ("", "is empty", "write the server's name alone, e.g. scoreboard.example.com"),
        (
            "bücher.example",
            "is not ASCII",
            "write an internationalised name in its xn-- form (punycode)",
        ),
        ("127.0.0.1", "is an IP address", IP_HINT),
        ("2001:db8::1", "is an IP address", IP_HINT),
        ("a.b.300", "ends in an all-numeric label, like an IP address", IP_HINT),
        *(
            (
                text,
                "is not a name alone",
                "write the server's name alone, e.g. scoreboard.example.com: "
                "no scheme, port (that is port =) or path",
            )
            for text in ("https://a.example", "a.example:443", "a.example/healthz", "u@a.example")
        ),
        ("a.example.", 'ends with "."', "drop the trailing dot"),
        (
            "*.example.com",
            "is a wildcard",
            "write the name the app answers to: the server's name alone, "
            "e.g. scoreboard.example.com",
        ),
        (
            ".".join(["a" * 61] * 4) + ".abcdef",
            "is longer than 253 characters",
            "a DNS name has at most 253 characters",
        ),
        (".a.example", "has an empty label", 'a name has no leading dot and no ".." in it'),
        ("a..example", "has an empty label", 'a name has no leading dot and no ".." in it'),
        ("a_b.example", 'has the label "a_b"', LABEL_HINT),
        ("-a.example", 'has the label "-a"', LABEL_HINT),
        ("a-.example", 'has the label "a-"', LABEL_HINT),
        ("a b.example", 'has the label "a b"', LABEL_HINT),
        ("a" * 64 + ".example", f'has the label "{"a" * 64}"', LABEL_HINT),
    ],
)
def test_a_name_that_is_no_dns_name_is_refused(name: str, problem: str, hint: str) -> None:
    """Each way a name is not a DNS host name has its own words and hint."""
    assert dns_name_problem(name) == (problem, hint)


def test_a_bad_name_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    """The name's problem is reported at [verify.tls] name with what was found."""
    error = load_error(write(tmp_path, TLS + 'name = "127.0.0.1"\n'))
    assert (error.message, error.hint) == (
        f'{tmp_path}/deploy.toml: [verify.tls] name: expected a DNS name, found "127.0.0.1" '
        "(string) which is an IP address",
        IP_HINT,
    )
