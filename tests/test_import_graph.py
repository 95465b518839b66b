"""The import graph runs one way: the CLI on top, build steps in the middle, the runtime (`handler/`) at
the bottom; no module imports its way back to itself, lazily or not."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
# Lower may never import higher; a package may import its own layer only when named here.
LAYERS = {
    "handler": 0,
    "model_export": 1,
    "index_build": 1,
    "evaluation": 2,
    "training": 3,
    "benchmarks": 4,
    "twostage": 5,
}


def modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every project module this file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def test_no_import_runs_up_the_layers():
    upward = [
        f"{src} → {dst}"
        for src, targets in graph().items()
        for dst in targets
        if LAYERS[dst.split(".")[0]] > LAYERS[src.split(".")[0]]
    ]
    assert not upward, upward


def test_same_layer_packages_do_not_import_each_other():
    across = [
        f"{src} → {dst}"
        for src, targets in graph().items()
        for dst in targets
        if src.split(".")[0] != dst.split(".")[0] and LAYERS[dst.split(".")[0]] == LAYERS[src.split(".")[0]]
    ]
    assert not across, across


def test_no_import_circle():
    edges = graph()
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                circles.append(" → ".join(path[path.index(nxt) :] + [node, nxt]) if nxt in path else f"{node} → {nxt}")
            elif nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not circles, circles
