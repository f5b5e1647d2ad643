"""The layout rules of psdistill/ (issue 23), read from the source with `ast`: nothing is imported.

- no import cycle between modules; a package's __init__ is a module, imports inside functions count
  (they run too, just later), `if TYPE_CHECKING:` blocks do not;
- no module imports a package above its own in LAYERS (the root psdistill/__init__.py is on top);
- no module over MAX_MODULE_LINES lines, no function over MAX_FUNCTION_LINES.

What an import statement reaches: `from pkg import name` reaches pkg (its __init__, even from inside
pkg, as the project's imports tool counts it) and the submodule pkg.name when there is one; `import
a.b.c` reaches a.b.c. Either also runs the __init__ of every package on the way that does not already
hold the importer, as Python does (so `data.manifest` importing `data.loaders.common` runs
`data/loaders/__init__.py`, and a cycle through that file is a cycle).
"""
from __future__ import annotations

import ast
from pathlib import Path
from textwrap import dedent

LAYERS = ("core", "models", "data", "ranking", "judge", "scoring", "distill", "evaluation", "baselines",
          "generation", "pipeline", "cli")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
ROOT = Path(__file__).resolve().parents[1]


def module_files(root: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file}; a package is named by its folder (its __init__.py)."""
    out = {}
    for f in sorted((root / package).rglob("*.py")):
        parts = f.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _statements(tree: ast.AST):
    """Every import statement, skipping `if TYPE_CHECKING:` bodies (their else branches run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield from _statements(ast.Module(body=[child], type_ignores=[]))
        else:
            yield from _statements(node)


def _reached(target: str, importer: str, modules: dict) -> list[str]:
    """`target` and the packages above it whose __init__ runs first (those not holding `importer`)."""
    out, parts = [target], target.split(".")
    for n in range(1, len(parts)):
        pkg = ".".join(parts[:n])
        if pkg in modules and not (importer == pkg or importer.startswith(pkg + ".")):
            out.append(pkg)
    return out


def import_graph(modules: dict[str, Path], package: str) -> dict[str, dict[str, int]]:
    """{module: {module it reaches: line of the first import that does}}, inside `package` only."""

    def resolve(name: str):  # the deepest module that a dotted name lies in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for m, f in modules.items():
        here = m if f.name == "__init__.py" else m.rpartition(".")[0]
        edges = graph[m] = {}
        for node in _statements(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names if a.name.split(".")[0] == package]
            else:
                base = node.module or ""
                if node.level:
                    up = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                if base.split(".")[0] != package:
                    continue
                targets = [resolve(base)] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            for t in targets:
                for reached in _reached(t, m, modules) if t else ():
                    if reached != m:
                        edges.setdefault(reached, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start), on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w), on_stack.add(w)
                    work.append((w, iter(graph.get(w, {}))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w), comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(_path_back(min(comp), graph, comp))
    return comps


def _path_back(start: str, graph: dict, comp: set) -> list[str]:
    """The shortest import path from `start` back to itself inside `comp` (breadth first)."""
    prev, frontier = {}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start] + path[::-1][1:] + [start] if v != start else [start, start]
                if w in comp and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in a cycle but no path leads back")


def layer(module: str) -> int:
    """Index in LAYERS; the root package ranks above them all, a module outside every layer is -1."""
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS)
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else -1


def upward_imports(graph: dict, modules: dict, root: Path) -> list[str]:
    return [f"{modules[m].relative_to(root).as_posix()}:{line}: "
            f"{m} ({_layer_name(m)}) imports {t} ({_layer_name(t)})"
            for m, edges in sorted(graph.items()) for t, line in sorted(edges.items())
            if layer(t) > layer(m) >= 0]


def _layer_name(module: str) -> str:
    n = layer(module)
    return "root" if n == len(LAYERS) else LAYERS[n] if n >= 0 else "no layer"


def long_modules(modules: dict, limit: int = MAX_MODULE_LINES) -> list[str]:
    return [f"{m}: {n} lines" for m, f in modules.items()
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > limit]


def long_functions(modules: dict, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    return [f"{m}.{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
            for m, f in modules.items() for node in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def _describe(cycle: list[str], graph: dict) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


# ---- psdistill/ itself ---------------------------------------------------------------------------

MODULES = module_files(ROOT, "psdistill")
GRAPH = import_graph(MODULES, "psdistill")


def test_no_import_cycle():
    found = cycles(GRAPH)
    assert not found, "import cycles:\n" + "\n".join(_describe(c, GRAPH) for c in found)


def test_every_module_in_a_layer_and_no_upward_import():
    outside = [m for m in MODULES if layer(m) < 0]
    assert not outside, f"modules outside the layers {LAYERS}: {outside}"
    up = upward_imports(GRAPH, MODULES, ROOT)
    assert not up, f"imports of a higher layer (order: {' < '.join(LAYERS)} < root):\n" + "\n".join(up)


def test_module_and_function_sizes():
    too_long = long_modules(MODULES) + long_functions(MODULES)
    assert not too_long, (f"over {MAX_MODULE_LINES} lines per module or {MAX_FUNCTION_LINES} per function:\n"
                          + "\n".join(too_long))


# ---- the walker finds what is planted ------------------------------------------------------------

def _plant(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(dedent(text), encoding="utf-8")
    return module_files(root, "pkg")


def test_walker_finds_planted_cycles_and_upward_imports(tmp_path):
    modules = _plant(tmp_path, {
        "pkg/__init__.py": "from pkg.cli import main\n",
        "pkg/core/__init__.py": "",
        "pkg/core/errors.py": "import os\n",
        # upward: core reaching ranking, inside a function
        "pkg/core/config.py": "def f():\n    from pkg.ranking.fit import fit\n    return fit\n",
        # a cycle through a package __init__: fit -> pkg.ranking (the name is not a submodule) -> fit
        "pkg/ranking/__init__.py": "from pkg.ranking.fit import fit\n",
        "pkg/ranking/fit.py": "from pkg.core import errors\n\ndef fit():\n    from pkg.ranking import other\n",
        # a relative-import cycle: a -> b -> a
        "pkg/data/__init__.py": "",
        "pkg/data/a.py": "from . import b\n",
        "pkg/data/b.py": "from .a import x\n",
        # entering data.loaders runs its __init__, which imports c: c -> loaders -> c
        "pkg/data/c.py": "from pkg.data.loaders.common import y\n",
        "pkg/data/loaders/__init__.py": "from pkg.data.c import z\n",
        "pkg/data/loaders/common.py": "y = 1\n",
        # neither a cycle nor upward: TYPE_CHECKING only, and a lower layer
        "pkg/cli.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import x\n"
                      "from pkg.core.errors import E\n\ndef main():\n" + "    pass\n" * MAX_FUNCTION_LINES,
        "pkg/core/long.py": "x = 1\n" * (MAX_MODULE_LINES + 1),
    })
    graph = import_graph(modules, "pkg")
    assert graph["pkg.data.a"] == {"pkg.data": 1, "pkg.data.b": 1} and graph["pkg.data.b"] == {"pkg.data.a": 1}
    assert graph["pkg.data.c"] == {"pkg.data.loaders.common": 1, "pkg.data.loaders": 1}
    assert graph["pkg.cli"] == {"pkg.core.errors": 4, "pkg.core": 4}  # the TYPE_CHECKING import is left out
    assert sorted(cycles(graph)) == [["pkg.data.a", "pkg.data.b", "pkg.data.a"],
                                     ["pkg.data.c", "pkg.data.loaders", "pkg.data.c"],
                                     ["pkg.ranking", "pkg.ranking.fit", "pkg.ranking"]]
    assert upward_imports(graph, modules, tmp_path) == [
        "pkg/core/config.py:2: pkg.core.config (core) imports pkg.ranking (ranking)",
        "pkg/core/config.py:2: pkg.core.config (core) imports pkg.ranking.fit (ranking)"]
    assert long_modules(modules) == [f"pkg.core.long: {MAX_MODULE_LINES + 1} lines"]
    assert long_functions(modules) == [f"pkg.cli.main (line 6): {MAX_FUNCTION_LINES + 1} lines"]
