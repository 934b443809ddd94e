"""Commands as data: an argv that quotes itself, masks secrets when shown, and never runs itself.

Builders in ``portable_deploy.commands`` return these values; only ``host.py`` executes them.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ParamSpec

P = ParamSpec("P")


MASK = "***"


@dataclass(frozen=True)
class Secret:
    """An argument whose value is hidden when a command is shown (its repr hides it too)."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return MASK


def mask_text(text: str, values: Iterable[str]) -> str:
    """TEXT with each value, and each non-blank line of a multi-line value, replaced by ``***``.

    Longest first, so a whole value goes before a line of it could split it.
    """
    needles: set[str] = set()
    for value in values:
        needles.add(value)
        needles.update(line for line in value.splitlines() if line.strip())
    for needle in sorted((n for n in needles if n.strip()), key=len, reverse=True):
        text = text.replace(needle, MASK)
    return text


@dataclass(frozen=True)
class Op:
    """A shell operator (``&&``, ``||``, ``|``, ``>``, ``<``) placed between arguments unquoted."""

    text: str


@dataclass(frozen=True)
class Raw:
    """Shell text passed through verbatim (for ``$(...)`` and variables); use sparingly."""

    text: str


Token = str | Secret | Op | Raw


def _render_token(token: Token, reveal: bool) -> str:
    if isinstance(token, Op | Raw):
        return token.text
    if isinstance(token, Secret):
        return shlex.quote(token.value) if reveal else MASK
    return shlex.quote(token)


@dataclass(frozen=True)
class Command:
    """A remote (or local) command line.

    ``mutates`` tells whether running it changes the host: a dry run shows such commands
    and runs only the read-only ones. ``sources`` names the builders that made it (``@builder``),
    so a test can answer or fail a command by what it is rather than by its text; it is never
    rendered and never compared.
    """

    tokens: tuple[Token, ...]
    mutates: bool = False
    sources: tuple[str, ...] = field(default=(), compare=False)
    #: What the command reads on its standard input: a secret value, sent over the SSH channel,
    #: never in the command line (where `ps` on the host would show it) and never rendered.
    stdin: Secret | None = None

    def render(self, reveal: bool = False) -> str:
        """The command as it can be pasted into a shell; secrets shown as ``***`` unless revealed."""
        return " ".join(_render_token(t, reveal) for t in self.tokens)

    def __str__(self) -> str:
        return self.render()

    def secrets(self) -> tuple[str, ...]:
        """The values of its ``Secret`` arguments: what output about this command must not show."""
        return tuple(t.value for t in self.tokens if isinstance(t, Secret))

    def then(self, other: Command) -> Command:
        """``self && other``."""
        return self._join("&&", other)

    def otherwise(self, other: Command) -> Command:
        """``self || other``."""
        return self._join("||", other)

    def pipe(self, other: Command) -> Command:
        """``self | other``."""
        return self._join("|", other)

    def into(self, path: str) -> Command:
        """``self > path``."""
        return Command(
            (*self.tokens, Op(">"), path), mutates=True, sources=self.sources, stdin=self.stdin
        )

    def _join(self, op: str, other: Command) -> Command:
        if self.stdin is not None and other.stdin is not None:
            raise ValueError("only one part of a compound command can read the secret input")
        return Command(
            (*self._grouped(), Op(op), *other._grouped()),
            mutates=self.mutates or other.mutates,
            sources=(*self.sources, *other.sources),
            stdin=self.stdin or other.stdin,
        )

    def _grouped(self) -> tuple[Token, ...]:
        # A compound on either side of a new operator keeps its own precedence: `{ a || b; }`.
        if any(isinstance(t, Op) and t.text in {"&&", "||", ";"} for t in self.tokens):
            return (Op("{"), *self.tokens, Op(";"), Op("}"))
        return self.tokens


def cmd(*args: Token | Iterable[Token], mutates: bool = False) -> Command:
    """Build a command; iterables among ``args`` are flattened, so optional flags read naturally."""
    tokens: list[Token] = []
    for arg in args:
        if isinstance(arg, str | Secret | Op | Raw):
            tokens.append(arg)
        else:
            tokens.extend(arg)
    return Command(tuple(tokens), mutates=mutates)


def sh(script: str, *, mutates: bool = False) -> Command:
    """A shell snippet run as ``sh -c SCRIPT``: for the few steps that need shell logic on the host."""
    return Command(("sh", "-c", script), mutates=mutates)


def sh_args(script: str, *args: Token, mutates: bool = False) -> Command:
    """``sh -c SCRIPT sh ARGS...``: shell logic with its inputs passed as quoted positional args."""
    return Command(("sh", "-c", script, "sh", *args), mutates=mutates)


def builder(fn: Callable[P, Command]) -> Callable[P, Command]:
    """Mark FN as a command builder: every Command it returns names it in ``sources``.

    The name is ``module.function`` under ``portable_deploy.commands`` (``trust.verify_signature``)
    and is also set as ``FN.source``. A builder that wraps another one names only itself: the
    command is what the outer builder says it is.
    """
    name = f"{fn.__module__.removeprefix('portable_deploy.commands.')}.{fn.__name__}"

    @functools.wraps(fn)
    def stamped(*args: P.args, **kwargs: P.kwargs) -> Command:
        return dataclasses.replace(fn(*args, **kwargs), sources=(name,))

    stamped.source = name  # type: ignore[attr-defined]
    return stamped
