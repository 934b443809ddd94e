"""``portable-deploy TASK`` (or ``python -m portable_deploy TASK``): the tasks without a tasks.py,
for ``init`` in a repo that has none yet; elsewhere ``invoke TASK`` is the same."""

from __future__ import annotations

from invoke.program import Program

from .tasks import ns


def main() -> None:
    Program(namespace=ns, name="portable-deploy", binary="portable-deploy").run()


if __name__ == "__main__":
    main()
