"""The docs site builds with MkDocs in strict mode (a broken link or a bad API reference fails it),
and its API reference is rendered from the docstrings."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT


def _missing_tools() -> list[str]:
    missing = []
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package is absent
            found = False
        if not found:
            missing.append(module)
    return missing


needs_mkdocs = pytest.mark.skipif(bool(_missing_tools()), reason=(
    f"the docs tools are not installed ({', '.join(_missing_tools())}); install the dev extra: "
    "pip install -e '.[dev]'"))


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "--site-dir",
                           str(site)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _config() -> dict:
    # mkdocs.yml uses no YAML tags, so the safe loader reads it.
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def _nav_pages(nav) -> set[str]:
    pages = set()
    for item in nav:
        for value in (item.values() if isinstance(item, dict) else [item]):
            pages |= _nav_pages(value) if isinstance(value, list) else {value}
    return pages


def test_nav_lists_every_page():
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert _nav_pages(_config()["nav"]) == pages


@needs_mkdocs
def test_site_builds_strict_with_the_api_reference(tmp_path):
    done = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr[-4000:]
    models = (tmp_path / "site" / "api" / "models" / "index.html").read_text(encoding="utf-8")
    for anchor in ("mmix_applied.models.create_model", "mmix_applied.models.hub.resolve_weights",
                   "mmix_applied.models.weights.load_weights"):
        assert f'id="{anchor}"' in models, anchor
    assert "the model as" in models and "prints it" in models  # create_model's docstring, rendered
    mixer = (tmp_path / "site" / "api" / "mixer" / "index.html").read_text(encoding="utf-8")
    assert 'id="mmix_applied.core.mixer.ManifoldMixup.sample"' in mixer
    adapters = (tmp_path / "site" / "api" / "adapters" / "index.html").read_text(encoding="utf-8")
    for name in ("Classification", "MultiLabel", "Regression", "Segmentation", "CTC", "LineCTC", "base.Adapter"):
        assert f'id="mmix_applied.adapters.{name}.loss"' in adapters, name  # rendered only with a docstring
    assert "Soft-target cross-entropy of the logits" in adapters  # Classification.loss's docstring
    errors = (tmp_path / "site" / "api" / "errors" / "index.html").read_text(encoding="utf-8")
    assert 'id="mmix_applied.errors.MmixError"' in errors and 'id="mmix_applied.errors.MmixWarning"' in errors


@needs_mkdocs
def test_a_broken_link_fails_the_build(tmp_path):
    """The control: strict mode really turns a warning into a failed build."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    with open(tmp_path / "docs" / "index.md", "a", encoding="utf-8") as f:
        f.write("\nSee [the missing page](no_such_page.md).\n")
    config = _config()
    config["docs_dir"] = str(tmp_path / "docs")
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            plugin["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT)]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    done = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "no_such_page.md" in done.stderr, done.stderr[-2000:]
