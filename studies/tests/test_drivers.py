"""Every study driver uses the package as a user would: public modules and names only, no ``sys.path`` edits."""

import ast
import importlib
from pathlib import Path

import pytest

STUDIES = Path(__file__).resolve().parents[1]
DRIVERS = sorted(p for p in STUDIES.glob("*.py") if p.name != "conftest.py")


def _private_uses(path: Path) -> list[str]:
    """``line: what`` for each private module or name of ``mmix_applied`` the file reaches, and each ``sys.path`` use."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bound, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mmix_applied":
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"{node.lineno}: from {node.module}")
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{node.lineno}: {node.module}.{alias.name}")
                bound.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mmix_applied":
                    if any(part.startswith("_") for part in alias.name.split(".")):
                        found.append(f"{node.lineno}: import {alias.name}")
                    bound.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in bound and node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
            if node.value.id == "sys" and node.attr == "path":
                found.append(f"{node.lineno}: sys.path")
    return sorted(found, key=lambda f: int(f.split(':')[0]))


def test_the_check_catches_what_the_drivers_did_before(tmp_path):
    old = tmp_path / "old.py"
    old.write_text("import sys\nsys.path.insert(0, 'x')\nfrom mmix_applied.engine import runner\n"
                   "from mmix_applied._version import __version__\nfrom mmix_applied.engine.runner import _setup\nrecipe, module = runner._setup(cfg)\n")
    assert _private_uses(old) == ["2: sys.path", "4: from mmix_applied._version", "5: mmix_applied.engine.runner._setup",
                                   "6: runner._setup"]


@pytest.mark.parametrize("path", DRIVERS, ids=lambda p: p.name)
def test_drivers_use_public_names_only(path):
    assert _private_uses(path) == []


@pytest.mark.parametrize("path", DRIVERS, ids=lambda p: p.name)
def test_drivers_import(path):
    """Each driver imports (its public names exist) without running anything."""
    module = importlib.import_module(path.stem)
    assert Path(module.__file__).resolve() == path and module.__all__
