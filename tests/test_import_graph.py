"""The import graph of our apps has no circle, and it runs the way the design says.

Read from the source with `ast`, so it sees every import: module level, inside functions, and under
`TYPE_CHECKING`. An import names the module it loads: `from training.services import runs` is an edge to
`training.services.runs`, `from training.trainers import train_dpo` one to the package `training.trainers`.
Importing `a.b.c` also runs the package `a.b`'s `__init__` first; that implicit step is not counted, so a
package that re-exports its submodules is not taken for a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ("training", "labeling")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for app in APPS
        for path in sorted((ROOT / app).rglob("*.py"))
        if "migrations" not in path.parts
    }


def _imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The first-party modules the tree's import statements load (relative imports made absolute)."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(_nearest_known(alias.name, known) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from a.b import c`: c is a submodule when a.b.c exists, else a name defined in a.b.
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else _nearest_known(base, known))
    return found - {"", module}


def _nearest_known(name: str, known: set[str]) -> str:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """{module: the first-party modules it imports}, over training/ and labeling/ (migrations aside)."""
    modules = _modules()
    known = set(modules)
    return {
        module: _imported_modules(
            ast.parse(path.read_text(), filename=str(path)), module, path.name == "__init__.py", known
        )
        for module, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports (its modules in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the DFS path, "done" after
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_apps_import_graph_has_no_circle():
    """No module of training/ or labeling/ imports itself back, directly or through others."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle or [])


def test_labeling_never_imports_training():
    """Collecting preferences works without the training app (and without any ML installed)."""
    offenders = {
        module: sorted(t for t in targets if t.split(".")[0] == "training")
        for module, targets in import_graph().items()
        if module.split(".")[0] == "labeling"
    }
    assert not {m: t for m, t in offenders.items() if t}


def test_services_never_import_the_tasks():
    """Services enqueue by task name through training.services.dispatch; only the worker side imports tasks."""
    graph = import_graph()
    importers = sorted(module for module, targets in graph.items() if "training.tasks" in targets)
    assert importers == [], importers


def test_training_services_reach_labeling_only_through_its_selectors_and_services():
    """Training never queries or writes labeling's tables itself: it asks labeling's selectors and services."""
    allowed = ("labeling.selectors", "labeling.services.")
    offenders = {}
    for module, path in _modules().items():
        if not (module.startswith("training.services.") or module == "training.tasks"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labeling"):
                if node.module == "labeling.models":
                    # Model classes only as types and pure helpers; querying them is the selectors' job.
                    names = {alias.name for alias in node.names} - {"PromptSet", "prompt_as_text"}
                    if names:
                        offenders[module] = sorted(names)
                elif not (node.module == allowed[0] or node.module.startswith(allowed[1])):
                    offenders[module] = [node.module]
    assert offenders == {}


def test_the_checker_finds_a_circle_when_there_is_one():
    """Guard for the guard: a known circle is reported with its path."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
