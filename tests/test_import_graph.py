"""The package's import graph: no cycles, and imports only go downward through the layers.

Every module under src/rlhf_trust is parsed with `ast`; each `import` and `from ... import`
(module level and inside functions alike, relative ones resolved) that names a project module is an
edge. A module's layer is its top-level component (`rlhf_trust.<component>`). Modules found by name
at run time (`importlib`: the CLI's command table, the vertical registry) are not edges: that is how
a lower layer reaches plugins without depending on them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = "rlhf_trust"
SRC = Path(__file__).resolve().parents[1] / "src" / PKG

# Lowest first; a component may import its own modules, and components of lower layers only (two
# components of one layer are peers: neither imports the other).
# - errors, then paths and fileio (which raises errors): what every layer stands on.
# - quiet (warning filters), runinfo (which record keys are metrics, which settings) and
#   preload_client (a stage's side of the fork server) import nothing of the project and are used
#   by tracking, cli and the stages, so they sit at the bottom too, as does progress (`make repro`'s
#   stage counter, standard library only); so does the vertical registry
#   (verticals), which data and evals both read and which finds the vertical modules by name.
# - pipeline (the stage DAG) is a declaration, like the params sections: it sits with config, below
#   every stage that reads it.
# - cli dispatches to every stage; team (team mode's servers) is a command of its own beside it;
#   study (a grid of runs fanned out to submitit or Ray, then pooled) is one too;
#   preload (the fork server) runs cli in its children, so it sits above it.
LAYERS: list[set[str]] = [
    {"errors"},
    {"paths", "fileio", "quiet", "runinfo", "preload_client", "verticals", "progress"},
    {"config", "pipeline"},
    {"tracking"},
    {"data"},
    {"models"},
    {"train", "evals"},
    {"attribution"},
    {"report"},
    {"cli", "team", "study"},
    {"preload"},
]
LAYER = {component: i for i, layer in enumerate(LAYERS) for component in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that module `name` (at `path`) imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, the module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def component(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path a -> b -> ... -> a, or None (depth-first search)."""
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def upward(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(edges.items()):
        a = component(src)
        for dst in sorted(targets):
            b = component(dst)
            if a and b and a != b and LAYER[b] >= LAYER[a]:
                kind = "a peer" if LAYER[b] == LAYER[a] else "a higher layer"
                bad.append(f"{src} imports {dst} ({kind})")
    return bad


def test_the_graph_is_read_from_the_source():
    edges = graph()
    assert len(edges) > 50
    # known edges of each kind: module-level, inside a function, and a relative-free `from pkg import mod`
    assert "rlhf_trust.errors" in edges["rlhf_trust.fileio"]
    assert "rlhf_trust.config" in edges["rlhf_trust.train.stage_cli"]       # inside run_cli
    assert "rlhf_trust.tracking.store" in edges["rlhf_trust.tracking.runs"]


def test_every_component_has_a_layer():
    missing = sorted({component(m) for m in modules()} - set(LAYER) - {""})
    assert not missing, f"place these in LAYERS: {missing}"


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_only_go_downward():
    bad = upward(graph())
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a2"}, "a2": {"b"}, "b": {"a2"}}, ["a2", "b", "a2"]),
])
def test_find_cycle_reports_the_path(edges, expected):
    assert find_cycle(edges) == expected


def test_upward_names_the_import_and_its_kind():
    edges = {"rlhf_trust.data.x": {"rlhf_trust.report.y", "rlhf_trust.config"},
             "rlhf_trust.train.a": {"rlhf_trust.evals.b"}}
    assert upward(edges) == ["rlhf_trust.data.x imports rlhf_trust.report.y (a higher layer)",
                             "rlhf_trust.train.a imports rlhf_trust.evals.b (a peer)"]
