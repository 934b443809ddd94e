"""Commands are data: rendering, quoting, masking, composition."""

import dataclasses
import importlib
import pkgutil

import portable_deploy.commands
from portable_deploy.command import Command, Op, Raw, Secret, cmd, sh, sh_args
from portable_deploy.commands import files, lock, portablectl, systemctl, trust


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


# --- sources: which builder made a command ----------------------------------------------------


def test_a_builder_names_itself_in_its_command() -> None:
    """A command made by trust.verify_signature carries that builder's name, as does the builder."""
    made = trust.verify_signature("m.json", "m.json.sig", "deploy", "/a")
    assert made.sources == ("trust.verify_signature",)
    assert trust.verify_signature.source == "trust.verify_signature"  # type: ignore[attr-defined]


def test_a_builder_wrapping_another_names_only_itself() -> None:
    """lock.break_ is built from lock.release but is known as lock.break_."""
    assert lock.break_("/l", "t").sources == ("lock.break_",)


def test_chained_commands_keep_the_sources_of_both_parts() -> None:
    """then/otherwise/pipe keep every part's builder, in order; into keeps its own."""
    swap = portablectl.reattach("/i.raw", "default").then(systemctl.restart(["a.service"]))
    assert swap.then(systemctl.start(["b.service"])).sources == (
        "portablectl.reattach",
        "systemctl.restart",
        "systemctl.start",
    )
    assert files.cat("/x").otherwise(files.remove("/x")).sources == ("files.cat", "files.remove")
    assert files.cat("/x").pipe(files.sha256("/y")).sources == ("files.cat", "files.sha256")
    assert files.cat("/x").into("/y").sources == ("files.cat",)


def test_sources_are_neither_rendered_nor_compared() -> None:
    """Two commands with the same argv are equal and render alike whoever built them."""
    plain = cmd("rm", "-f", "/x", mutates=True)
    assert files.remove("/x") == plain
    assert files.remove("/x").render() == plain.render() == "rm -f /x"


def test_dataclass_replace_keeps_the_sources() -> None:
    """A check shown but not run in a dry run (replace(mutates=...)) is still that check."""
    check = dataclasses.replace(trust.image_matches_manifest("/i", "/m", "a_1"), mutates=True)
    assert check.sources == ("trust.image_matches_manifest",)


def test_every_public_builder_is_stamped() -> None:
    """Each public function in portable_deploy.commands that returns a Command is a @builder."""
    unstamped = []
    for info in pkgutil.iter_modules(portable_deploy.commands.__path__):
        module = importlib.import_module(f"portable_deploy.commands.{info.name}")
        for name, fn in vars(module).items():
            if (
                callable(fn)
                and not name.startswith("_")
                and getattr(fn, "__module__", "") == module.__name__
                and getattr(fn, "__annotations__", {}).get("return") in ("Command", Command)
                and getattr(fn, "source", None) != f"{info.name}.{name}"
            ):
                unstamped.append(f"{info.name}.{name}")
    assert unstamped == []


def test_secret_value_never_in_the_shown_command() -> None:
    """render(), str() and repr() of a command with a Secret never hold its value."""
    c = cmd("x", Secret("s3cr3t"))
    assert c.render() == "x ***"
    for shown in (c.render(), str(c), repr(c), repr(Secret("s3cr3t"))):
        assert "s3cr3t" not in shown


def test_secrets_lists_the_values_of_secret_arguments() -> None:
    """Command.secrets() gives the values output about the command must mask."""
    c = cmd("a", Secret("one")).then(cmd("b", "plain", Secret("two")))
    assert c.secrets() == ("one", "two")
