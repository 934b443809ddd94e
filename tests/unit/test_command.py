"""Commands are data: rendering, quoting, masking, composition."""

from portable_deploy.command import Op, Raw, Secret, cmd, sh, sh_args


def test_render_quotes_each_argument() -> None:
    """Arguments with spaces or shell characters are quoted one by one."""
    assert cmd("echo", "a b", "$HOME", "it's").render() == "echo 'a b' '$HOME' 'it'\"'\"'s'"


def test_plain_arguments_stay_bare() -> None:
    """Simple arguments are not quoted, so the shown line reads naturally."""
    assert cmd("portablectl", "reattach", "/var/lib/portables/app_1.raw").render() == (
        "portablectl reattach /var/lib/portables/app_1.raw"
    )


def test_secret_is_masked_when_shown_and_revealed_when_run() -> None:
    """str() masks a secret; render(reveal=True) gives the real value for execution."""
    c = cmd("curl", "-H", Secret("token abc"))
    assert str(c) == "curl -H ***"
    assert c.render(reveal=True) == "curl -H 'token abc'"


def test_iterables_flatten_so_optional_flags_read_naturally() -> None:
    """An empty list adds nothing, a list adds its items."""
    assert cmd("ls", [], ["-l", "-a"], "/").render() == "ls -l -a /"


def test_then_joins_with_and_and_keeps_mutation() -> None:
    """`a.then(b)` renders `a && b` and mutates if either side does."""
    c = cmd("test", "-f", "x").then(cmd("rm", "x", mutates=True))
    assert c.render() == "test -f x && rm x"
    assert c.mutates


def test_compound_sides_are_grouped() -> None:
    """A compound on one side of a new operator keeps its precedence with braces."""
    c = cmd("a").otherwise(cmd("b")).then(cmd("c"))
    assert c.render() == "{ a || b ; } && c"


def test_pipe_and_redirect() -> None:
    """pipe() and into() place unquoted operators."""
    assert cmd("cat", "f").pipe(cmd("sha256sum")).into("out").render() == "cat f | sha256sum > out"


def test_op_and_raw_are_not_quoted() -> None:
    """Op and Raw tokens pass through verbatim."""
    assert cmd("echo", Raw("$HOME"), Op(">"), "f").render() == "echo $HOME > f"


def test_sh_args_passes_inputs_as_positional_parameters() -> None:
    """sh_args keeps the script fixed and quotes its inputs separately."""
    c = sh_args('cat "$1"', "/tmp/a b")
    assert c.render() == "sh -c 'cat \"$1\"' sh '/tmp/a b'"


def test_sh_wraps_a_script() -> None:
    """sh() renders `sh -c SCRIPT`."""
    assert sh("true", mutates=True).render() == "sh -c true"


def test_read_only_by_default() -> None:
    """A command is read-only unless its builder says it mutates."""
    assert not cmd("cat", "x").mutates
