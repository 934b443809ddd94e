"""The architecture a newcomer reads in the README's code map holds in the code: each module
imports only modules of its own layer or below, and nothing imports in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "portable_deploy"

#: Layer of each module (dotted name under portable_deploy; a package name covers its modules).
#: tasks -> pipeline -> steps/preflight -> host/commands/facts/config; a module may import only
#: modules of a lower layer, or of its own layer when that is a leaf concern (see LEAF).
LAYERS: dict[str, int] = {
    "__main__": 7,
    "tasks": 6,
    "fleet": 5,
    "logview": 5,
    "pipeline": 4,
    "steps": 3,
    "transfer": 3,
    "deadman_switch": 3,
    "verify": 3,
    "preflight": 3,
    "locking": 3,
    "history": 3,
    "status": 3,
    "targets": 3,
    "release": 2,
    "secrets": 2,
    "image": 2,
    "sign": 2,
    "scaffold": 2,
    "signers": 1,
    "credentials": 1,
    "manifest": 1,
    "plan": 1,
    "chunks": 1,
    "journal": 1,
    "board": 1,
    "host": 1,
    "tls": 1,
    "failpoints": 1,
    "commands": 1,
    "facts": 1,
    "config": 1,
    "profiles": 1,
    "units": 1,
    "sandbox": 1,
    "command": 0,
    "errors": 0,
    "localenv": 0,
    "fs": 0,
    "interrupts": 0,
    "ui": 0,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _layer(module: str) -> int:
    for name in (module, module.split(".")[0]):
        if name in LAYERS:
            return LAYERS[name]
    raise AssertionError(f"portable_deploy.{module} has no layer: add it to LAYERS")


def _imports(path: Path, module: str) -> set[str]:
    """The portable_deploy modules that PATH imports (relative or absolute), at any depth."""
    parts = module.split(".") if module else []
    package = parts if path.name == "__init__.py" else parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
            elif node.module and node.module.startswith("portable_deploy"):
                base, node_module = [], node.module.split(".", 1)[1:]
                found.add(".".join(node_module) if node_module else "")
                continue
            else:
                continue
            target = base + (node.module.split(".") if node.module else [])
            if node.module:
                found.add(".".join(target))
            else:  # from . import a, b
                found.update(".".join([*target, alias.name]) for alias in node.names)
    return {m for m in found if m}


def _graph() -> dict[str, set[str]]:
    # The package's own __init__ only re-exports; it is the top, not a layer.
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"}
    graph = {}
    for name, path in modules.items():
        # `from .commands import files` names a module inside a package: keep what exists.
        graph[name] = {
            m if m in modules else m.rsplit(".", 1)[0] for m in _imports(path, name) if m != name
        }
    return graph


def test_every_module_imports_only_its_layer_or_below() -> None:
    """tasks -> pipeline -> steps/preflight -> host/commands/facts/config: never upwards."""
    upward = [
        f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})"
        for name, deps in _graph().items()
        for dep in deps
        if dep.split(".")[0] != name.split(".")[0] and _layer(dep) > _layer(name)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    """No module reaches itself through its imports."""
    graph = _graph()
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for dep in graph.get(node, ()):
                if dep == start:
                    cycles.append(" -> ".join([*path, dep]))
                elif dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*path, dep]))
    assert cycles == []


def test_the_layer_test_sees_imports() -> None:
    """The graph is not empty: pipeline is seen importing steps and preflight."""
    assert {"steps", "preflight"} <= _graph()["pipeline"]
