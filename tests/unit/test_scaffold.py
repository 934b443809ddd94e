"""`invoke init`: the files it renders load as deploy.toml and pass systemd's own checks (and the
hardening targets), and the task refuses to overwrite, asks nothing without a terminal, and
names what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portable_deploy import facts, scaffold
from portable_deploy.config import load_config
from portable_deploy.errors import DeployError
from portable_deploy.profiles import text as profile_text
from portable_deploy.scaffold import Answers, Port

from .conftest import StaticBinary

SRC = Path(__file__).resolve().parents[2] / "src"

BASIC = Answers("hello", "build/hello", "go build -o build/hello .")
FULL = Answers(
    "shop",
    "bin/shop",
    None,
    ports=(Port(80, "http"), Port(443, "https"), Port(8080, "admin")),
    litestream=True,
    domain="shop.example.org",
    email="ops@example.org",
    host="203.0.113.10",
)
LITESTREAM = Answers("notes", "build/notes", "make", litestream=True)
#: `systemd-analyze security` targets under pd-hardened, as for the reference app's units.
TARGETS = {"": 1.0, "-litestream": 2.0, "-restore": 2.0}


def _write(root: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def _child_env() -> dict[str, str]:
    """The environment of a child that runs the plugin in another directory. Under mutation
    testing the child runs the code as it is: mutmut's call recording looks for its config in
    the working directory, and that is not the repo."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    env.pop("DEPLOY_TOML", None)
    env.pop("MUTANT_UNDER_TEST", None)
    return env


def _init(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m portable_deploy init ARGS` in ROOT, stdin not a terminal (as in CI)."""
    env = _child_env()
    return subprocess.run(
        [sys.executable, "-m", "portable_deploy", "init", *args],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith("error: ") and "(hint: " in line
    return line


# --- the rendered files --------------------------------------------------------------------------


@pytest.mark.parametrize("answers", [BASIC, FULL, LITESTREAM], ids=["basic", "full", "litestream"])
def test_rendered_deploy_toml_loads_with_the_answers(tmp_path: Path, answers: Answers) -> None:
    """The deploy.toml init writes passes config.py's strict loading and says what was asked."""
    _write(tmp_path, scaffold.render(answers))
    cfg = load_config(tmp_path / "deploy.toml")
    assert cfg.app.name == answers.name
    assert cfg.image.files[f"usr/bin/{answers.name}"] == tmp_path / (answers.binary or "")
    assert ("usr/bin/litestream" in cfg.image.files) is answers.litestream
    assert (answers.build in cfg.build.commands) if answers.build else True
    [host] = cfg.hosts.values()
    assert (host.address, host.sandbox) == (answers.host, answers.host is None)
    if answers.domain:
        assert cfg.verify.tls is not None and cfg.verify.tls.name == answers.domain
    else:
        assert cfg.verify.tls is None and cfg.verify.port == answers.ports[0].number


def test_each_port_gets_a_socket_the_service_requires() -> None:
    """One NAME-SOCKET.socket per port, named for LISTEN_FDNAMES, all required by the service."""
    files = scaffold.render(FULL)
    sockets = sorted(p for p in files if p.endswith(".socket"))
    assert sockets == [
        "units/shop-admin.socket",
        "units/shop-http.socket",
        "units/shop-https.socket",
    ]
    assert "ListenStream=8080\nFileDescriptorName=admin\n" in files["units/shop-admin.socket"]
    service = files["units/shop.service"]
    assert "Sockets=shop-http.socket shop-https.socket shop-admin.socket" in service
    assert "Requires=shop-http.socket shop-https.socket shop-admin.socket" in service


def _image_root(tmp_path: Path, answers: Answers) -> tuple[Path, list[Path]]:
    """An image root holding the rendered units, stub executables where they run, and the
    system's own units (what verify resolves sockets.target and friends against)."""
    root = tmp_path / "root"
    unit_dir = root / "usr/lib/systemd/system"
    shutil.copytree("/lib/systemd/system", unit_dir, symlinks=True)
    files = scaffold.render(answers)
    _write(root, {p.removeprefix("image/"): t for p, t in files.items() if p.startswith("image/")})
    ours = []
    for path, text in files.items():
        if path.startswith("units/"):
            ours.append(unit_dir / Path(path).name)
            ours[-1].write_text(text)
    for exe in (answers.name, "litestream"):
        (root / "usr/bin").mkdir(parents=True, exist_ok=True)
        (root / "usr/bin" / exe).write_text("#!/bin/sh\n")
        (root / "usr/bin" / exe).chmod(0o755)
    return root, ours


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not Path("/lib/systemd/system").is_dir(),
    reason="systemd-analyze and the system's units are needed",
)


@needs_analyze
@pytest.mark.parametrize("answers", [BASIC, FULL, LITESTREAM], ids=["basic", "full", "litestream"])
def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path, answers: Answers) -> None:
    """systemd itself reads every unit init writes without an error or a warning."""
    root, units = _image_root(tmp_path, answers)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


#: What `portablectl attach` adds that the offline analysis must see to score as the host does:
#: RootImage= (in 20-portable.conf), which implies PrivateMounts= when the unit runs (the host's
#: online analysis reports it; offline reads only what is written).
ATTACHED = "[Service]\nRootImage=/var/lib/portables/app_1.raw\nPrivateMounts=yes\n"


def _exposure(tmp_path: Path, root: Path, unit: Path) -> float:
    """`systemd-analyze security --offline` of UNIT attached with pd-hardened."""
    profile = tmp_path / "pd-hardened.conf"
    profile.write_text(profile_text("pd-hardened"))
    dropins = Path(f"{unit}.d")
    dropins.mkdir(exist_ok=True)
    (dropins / "20-portable.conf").write_text(ATTACHED)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}",
         f"--profile={profile}", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    score = facts.exposure(result.stdout.strip().splitlines()[-1] if result.stdout else "")
    assert score is not None, result.stdout + result.stderr
    return score


@needs_analyze
def test_the_offline_scores_are_the_hosts(tmp_path: Path) -> None:
    """Calibration: the reference app's service scores offline what it scores attached on the
    VM (1.0, README "Hardening"), so the targets below mean what they mean there."""
    root, _ = _image_root(tmp_path, BASIC)
    unit = root / "usr/lib/systemd/system/scoreboard.service"
    shutil.copy(Path(__file__).resolve().parents[2] / "units/scoreboard.service", unit)
    (root / "usr/bin/scoreboard").write_text("#!/bin/sh\n")
    (root / "usr/bin/scoreboard").chmod(0o755)
    assert _exposure(tmp_path, root, unit) == 1.0


@needs_analyze
@pytest.mark.parametrize("answers", [BASIC, FULL, LITESTREAM], ids=["basic", "full", "litestream"])
def test_rendered_services_meet_the_exposure_targets(tmp_path: Path, answers: Answers) -> None:
    """Under pd-hardened the app scores <= 1.0 (0.3 without network) and the Litestream units
    <= 2.0: the reference app's targets."""
    root, _ = _image_root(tmp_path, answers)
    units = root / "usr/lib/systemd/system"
    scores = {
        suffix: _exposure(tmp_path, root, units / f"{answers.name}{suffix}.service")
        for suffix in (TARGETS if answers.litestream else [""])
    }
    assert all(scores[s] <= TARGETS[s] for s in scores), scores
    assert answers.tls or scores[""] == 0.3


def test_the_minimal_app_has_no_network_at_all() -> None:
    """Without TLS the app only serves its passed sockets: PrivateNetwork=yes."""
    assert "\nPrivateNetwork=yes\n" in scaffold.render(BASIC)["units/hello.service"]
    assert "PrivateNetwork" not in scaffold.render(FULL)["units/shop.service"]


@pytest.mark.parametrize(
    ("spec", "port"),
    [("80", Port(80, "http")), ("443", Port(443, "https")), ("8080/api", Port(8080, "api")),
     ("9000", Port(9000, "port9000"))],
)  # fmt: skip
def test_port_specs(spec: str, port: Port) -> None:
    """--port NUMBER[/NAME]; 80 and 443 are http and https, others portN."""
    assert scaffold.parse_port(spec) == port


@pytest.mark.parametrize("spec", ["0", "70000", "http", "80/Web", "80/a:b", ""])
def test_bad_port_specs_name_the_flag(spec: str) -> None:
    """A port out of range, not a number, or a bad socket name is an error naming --port."""
    with pytest.raises(DeployError, match="--port"):
        scaffold.parse_port(spec)


@pytest.mark.parametrize(
    ("answers", "flag"),
    [
        (Answers("My_App", "b"), "--name"),
        (Answers("app", None), "--binary"),
        (Answers("app", "/usr/bin/app"), "--binary"),
        (Answers("app", "b", ports=(Port(80, "http"), Port(80, "web"))), "--port"),
        (Answers("app", "b", domain="1.2.3.4"), "--domain"),
        (Answers("app", "b", host="-oProxyCommand=x"), "--host"),
    ],
)
def test_bad_answers_name_the_flag(answers: Answers, flag: str) -> None:
    """An answer init cannot use is one error that names its flag."""
    with pytest.raises(DeployError) as e:
        scaffold.render(answers)
    assert flag in str(e.value) and e.value.hint


def test_gitignore_gets_only_the_missing_lines() -> None:
    """.gitignore keeps what it has and gains dist/, build/ and .deploy/ once."""
    merged = scaffold.gitignore("node_modules\ndist/")
    assert merged is not None
    assert merged.startswith("node_modules\ndist/\n")
    assert "/build/\n/.deploy/\n" in merged and "/dist/" not in merged
    assert scaffold.gitignore(merged) is None


# --- the task --------------------------------------------------------------------------------


def test_init_writes_the_set_up_and_a_signing_key(tmp_path: Path) -> None:
    """init (no terminal, flags only) writes every file, the .gitignore lines and the key."""
    result = _init(tmp_path, "--name", "hello", "--build", "go build -o build/hello .")
    assert result.returncode == 0, result.stdout + result.stderr
    for path in scaffold.render(BASIC):
        assert (tmp_path / path).read_text() == scaffold.render(BASIC)[path]
    assert (tmp_path / ".deploy/signing_key").is_file()
    assert (tmp_path / ".deploy/signing_key.pub").read_text().startswith("ssh-ed25519 ")
    assert "/.deploy/" in (tmp_path / ".gitignore").read_text().splitlines()


def test_init_refuses_to_overwrite_and_lists_the_files(tmp_path: Path) -> None:
    """Run twice, init refuses with the files it would overwrite and changes nothing."""
    assert _init(tmp_path, "--name", "hello", "--binary", "hello").returncode == 0
    (tmp_path / "deploy.toml").write_text("# mine\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    line = _one_error_line(_init(tmp_path, "--name", "hello", "--binary", "hello"))
    assert "would overwrite 5 file(s): deploy.toml, image/usr/lib/os-release, tasks.py" in line
    assert "units/hello-http.socket, units/hello.service" in line and "--force" in line
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_force_overwrites_but_keeps_the_signing_key(tmp_path: Path) -> None:
    """--force writes the files again; the signing key the hosts trust is never replaced."""
    assert _init(tmp_path, "--name", "hello", "--binary", "hello").returncode == 0
    key = (tmp_path / ".deploy/signing_key").read_bytes()
    (tmp_path / "deploy.toml").write_text("# mine\n")
    result = _init(tmp_path, "--name", "hello", "--binary", "hello", "--force")
    assert result.returncode == 0, result.stderr
    assert "overwrote deploy.toml" in result.stdout and "kept the signing key" in result.stdout
    assert (tmp_path / "deploy.toml").read_text().startswith("# portable-deploy")
    assert (tmp_path / ".deploy/signing_key").read_bytes() == key


def test_without_a_terminal_a_missing_binary_is_one_error_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    """With stdin not a terminal init asks nothing: no --binary/--build is an error naming both."""
    line = _one_error_line(_init(tmp_path, "--name", "hello"))
    assert "--binary" in line and "--build" in line
    assert list(tmp_path.iterdir()) == []


def test_tls_without_a_domain_is_one_error(tmp_path: Path) -> None:
    """--tls needs --domain (the name the certificate is for); nothing is written."""
    line = _one_error_line(_init(tmp_path, "--name", "hello", "--binary", "b", "--tls"))
    assert "--domain" in line
    assert list(tmp_path.iterdir()) == []


def test_the_name_defaults_to_the_directory(tmp_path: Path) -> None:
    """Without --name the directory's name is the app's, when it is a valid name."""
    root = tmp_path / "my-app"
    root.mkdir()
    assert _init(root, "--binary", "bin/my-app").returncode == 0
    assert load_config(root / "deploy.toml").app.name == "my-app"


def test_the_result_builds_without_a_warning(tmp_path: Path, static_binary: StaticBinary) -> None:
    """init's set-up, plus the binary, builds an image with `invoke build`, with no warning."""
    root = tmp_path / "hello"
    root.mkdir()
    assert _init(root, "--binary", "bin/hello").returncode == 0
    (root / "bin").mkdir()
    shutil.copy(static_binary("hello"), root / "bin/hello")
    env = dict(_child_env(), DEPLOY_VERSION="1.0")
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "build"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "dist/hello_1.0.raw").is_file()
    assert " ! " not in result.stdout
