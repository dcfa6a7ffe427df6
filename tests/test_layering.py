"""The layering holds: core <- adapters <- models <- data <- engine <- tasks <- cli, with no cycle.

The import graph is read from the source (``ast``), so the test needs no import to succeed; a
second set of checks imports the package in fresh interpreters and looks at ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = {"mmix_applied": ROOT / "mmix_applied", "mmix_applied.tasks": ROOT / "tasks"}

#: Layer of each folder (or top-level module), by longest matching prefix; a module may import its own layer or lower.
LAYERS = {
    "mmix_applied._version": 0, "mmix_applied.utils": 0, "mmix_applied.errors": 0,
    "mmix_applied.core": 1,
    "mmix_applied.adapters": 2,
    "mmix_applied.models": 3,
    "mmix_applied.data": 4, "mmix_applied.metrics": 4, "mmix_applied.reports": 4, "mmix_applied.deploy": 4,
    "mmix_applied.engine": 5, "mmix_applied.lightning": 5,
    "mmix_applied.tasks": 6, "mmix_applied.compare": 6, "mmix_applied.tune": 6,
    "mmix_applied.cli": 7, "mmix_applied.config": 7, "mmix_applied": 7,
}
NAMES = {0: "utilities", 1: "core", 2: "adapters", 3: "models", 4: "data, metrics, reports, deploy", 5: "engine",
         6: "tasks (recipes)",
         7: "cli / package face"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "mmix_applied" and rel.parts[0] == "tasks":
                continue
            found[name] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path) -> tuple[set[str], set[str]]:
    """``(module_level, in_functions)``: the package modules ``module`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    base = module if is_package else module.rpartition(".")[0]
    top, nested = set(), set()

    def targets(node: ast.AST) -> set[str]:
        out = set()
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                stem = ".".join(anchor + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem for a in node.names]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
        return out

    def walk(body: list[ast.stmt], in_function: bool) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                (nested if in_function else top).update(targets(node))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                walk(node.body, True)
            elif isinstance(node, ast.ClassDef):
                walk(node.body, in_function)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node):
                    walk(node.body, in_function)
                walk(node.orelse, in_function)
            elif isinstance(node, (ast.Try, ast.With)):
                for block in ("body", "orelse", "finalbody"):
                    walk(getattr(node, block, []), in_function)
                for handler in getattr(node, "handlers", []):
                    walk(handler.body, in_function)

    walk(tree.body, False)
    return top, nested


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_the_graph_is_read():
    """Guards the reader itself: known edges must be found, or every check below passes vacuously."""
    assert "mmix_applied.engine.recipe" in GRAPH["mmix_applied.engine.config.validate"][0]
    assert "mmix_applied.core.points" in GRAPH["mmix_applied.models.timm_models"][0]
    assert "mmix_applied.engine.recipe" in GRAPH["mmix_applied.tasks.classification"][0]
    assert len(MODULES) > 40


def test_no_upward_import():
    """Module-level and function-level (a lazy import may not dodge the layering either)."""
    bad = []
    for module, (top, nested) in GRAPH.items():
        for target in top | nested:
            if _layer(target) > _layer(module):
                kind = "module-level" if target in top else "in a function"
                bad.append(f"{module} ({NAMES[_layer(module)]}) imports {target} ({NAMES[_layer(target)]}), {kind}")
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle():
    assert _cycles({m: top for m, (top, _) in GRAPH.items()}) == []


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


HEAVY = ["lightning", "timm", "segmentation_models_pytorch", "monai"]
_LOADED = "import json, sys; print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)))"


def test_the_package_imports_no_training_or_model_library_yet_knows_their_points():
    """``import mmix_applied`` loads none of them, and default_points still knows timm models (the
    resolvers registered themselves when the package root imported mmix_applied.models)."""
    code = (f"import mmix_applied\n{_LOADED.format(heavy=HEAVY)}\n"
            "import json, timm\nprint(json.dumps(mmix_applied.default_points(timm.create_model('test_resnet'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded, points = (json.loads(line) for line in out.stdout.strip().splitlines()[-2:])
    assert loaded == []
    assert points == ["input", "layer1", "layer2"]


def test_drawing_a_plot_imports_no_lightning(tmp_path):
    code = (
        "import numpy as np\nfrom mmix_applied.reports.figures import reliability_diagram\n"
        "e = np.linspace(0, 1, 6)\n"
        f"reliability_diagram({{'count': np.ones(5), 'confidence': e[1:], 'accuracy': e[1:], 'edges': e}}, "
        f"{str(tmp_path / 'r.png')!r})\n" + _LOADED.format(heavy=HEAVY)
    )
    assert _fresh(code) == []
    assert (tmp_path / "r.png").stat().st_size > 0


def test_the_recipe_registry_imports_first_in_a_fresh_interpreter():
    """A cycle that only an import order hides fails here: the registry is imported first, before
    the engine package that holds it and the config that reads it (an order that once failed)."""
    assert _fresh("import mmix_applied.engine.recipe\nprint('[]')") == []


@pytest.mark.slow
def test_every_module_imports_first_in_a_fresh_interpreter():
    failed = []
    for module in sorted(m for m in MODULES if not m.endswith(".__main__")):  # __main__ runs the CLI when imported
        out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            failed.append(f"{module}: {out.stderr.strip().splitlines()[-1]}")
    assert not failed, "\n".join(failed)
