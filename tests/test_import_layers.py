"""Imports run one way: models -> connectors -> the engine (apportion, apportion.steps) -> pipelines and the CLI.

Read statically from the source (every import, at module level or inside a function), so a new cycle or
an import against the direction fails here before anyone has to find it by hand.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# source folder -> its name in the installed `apportion` namespace, and its layer
PACKAGES = {"models": "apportion.models", "connectors": "apportion.connectors", "apportion": "apportion",
            "pipelines": "apportion.pipelines"}
LAYER = {"apportion.models": 0, "apportion.connectors": 1, "apportion": 2, "apportion.pipelines": 3}
TOP = {"apportion.cli"}  # the CLI drives the Dagster job: it sits with pipelines


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for f in (REPO / folder).rglob("*.py"):
            name = ".".join((package, *f.relative_to(REPO / folder).with_suffix("").parts))
            out[name.removesuffix(".__init__")] = f
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}
        edges[name] = {d for d in deps if d in mods and d != name}
    return edges


def layer(module: str) -> int:
    if module in TOP:
        return 3
    return max(v for k, v in LAYER.items() if module == k or module.startswith(k + "."))


def test_no_import_runs_against_the_layers():
    wrong = sorted(f"{m} imports {d}" for m, deps in graph().items() for d in deps if layer(d) > layer(m))
    assert not wrong, "imports against models -> connectors -> apportion -> pipelines/CLI:\n" + "\n".join(wrong)


def test_no_import_cycles():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)
