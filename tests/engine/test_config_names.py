"""The shipped recipe configs: found by name (``-c NAME``) from any folder, inside the wheel, one comment line a key."""

import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from mmix_applied.cli import main
from mmix_applied.config import config_to_dict, load_config, recipe_configs, resolve_config
from tests.helpers import ROOT

SHIPPED = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))


def test_every_repository_config_is_a_name_and_reads_the_same_file():
    assert recipe_configs() == SHIPPED and "classification" in SHIPPED and "segmentation_3d" in SHIPPED
    for name in SHIPPED:
        assert resolve_config(name).read_bytes() == (ROOT / "configs" / f"{name}.yaml").read_bytes()
    by_name = load_config("handwriting_none", ["train.max_epochs=2"])
    by_path = load_config(ROOT / "configs" / "handwriting_none.yaml", ["train.max_epochs=2"])
    assert config_to_dict(by_name) == config_to_dict(by_path) and by_name.mix.variant == "none"


def test_docs_list_every_shipped_name():
    doc = (ROOT / "docs" / "configs.md").read_text()
    section = doc.split("## Shipped configs: `-c NAME`")[1].split("\n## ")[0]
    assert all(f"`{name}`" in section for name in SHIPPED)


def test_a_path_that_exists_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = yaml.safe_load((ROOT / "configs" / "classification.yaml").read_text())
    own["seed"] = 123
    (tmp_path / "classification").write_text(yaml.safe_dump(own))
    assert resolve_config("classification").resolve() == (tmp_path / "classification").resolve()
    assert load_config("classification").seed == 123
    assert load_config("classification_none").seed == 0  # no such file here: the shipped one


@pytest.mark.parametrize("source, close", [("clasification", "classification"),
                                           ("configs/segmentation_3d.yaml", "segmentation_3d")])
def test_neither_a_file_nor_a_name_lists_the_shipped_names(tmp_path, monkeypatch, source, close):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    with pytest.raises(FileNotFoundError) as err:
        load_config(source)
    message = str(err.value)
    assert f"config file {source!r} does not exist" in message and f"Did you mean {close!r}?" in message
    assert f"shipped names: {', '.join(SHIPPED)} (e.g. -c classification)" in message


def test_cli_reads_a_shipped_config_by_name_outside_a_clone(tmp_path):
    """A fresh interpreter in a folder with no configs/ around: ``fit -c classification`` resolves the shipped YAML."""
    done = subprocess.run([sys.executable, "-m", "mmix_applied.cli", "fit", "-c", "classification", "--print-config",
                           "train.max_epochs=3"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = config_to_dict(load_config(ROOT / "configs" / "classification.yaml", ["train.max_epochs=3"]))
    assert yaml.safe_load(done.stdout) == yaml.safe_load(yaml.safe_dump(expected, sort_keys=False))
    assert not any(tmp_path.iterdir())  # nothing written


def test_compare_names_the_closest_shipped_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "-c", "segmentaton", "--seeds", "0", "--out", str(tmp_path / "out")]) == 2
    assert "Did you mean 'segmentation'?" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_the_built_wheel_ships_the_recipe_configs(tmp_path):
    """Build the wheel from a copy of the sources (nothing written into the repository) and look inside."""
    src = tmp_path / "src"
    for folder in ("mmix_applied", "tasks", "configs"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mmix_applied-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.removeprefix("mmix_applied/configs/").removesuffix(".yaml") for n in names
                     if n.startswith("mmix_applied/configs/") and n.endswith(".yaml"))
    assert shipped == SHIPPED
    assert "mmix_applied/configs/__init__.py" in names and "mmix_applied/tasks/classification.py" in names
    assert not any(n.startswith(("configs/", "tasks/")) for n in names)  # no generic top-level names


def _continued_comments(text):
    """Line numbers of comment lines that continue a key's comment (the evidence belongs in docs/results.md).

    A continuation is a comment-only line indented past the key above it (aligned to its comment), or
    the second line of a comment block; a commented-out optional key (``# pixdim: [...]``) is neither.
    """
    found, key_indent, run = [], 0, 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if not stripped.startswith("#"):
            key_indent, run = indent, 0
        elif indent and re.match(r"#\s*[a-z_]+:\s", stripped) is None:
            run += 1
            if indent > key_indent or run > 1:
                found.append(number)
    return found


def test_config_comments_are_one_line_per_key():
    old = "  alpha: 0.2   # chosen on validation NLL:\n                # -0.022 +- 0.006 at 50 labels/class\n  mode: mixup\n"
    block = "mix:\n  prob: 1.0\n  # RegMixup clean term\n  # measured cost 1.97\n  clean_weight: 0.0\n"
    assert _continued_comments(old) == [2] and _continued_comments(block) == [4]
    assert _continued_comments("data:\n  source: brain\n  # For data.source=datalist:\n  # pixdim: [1.5, 1.5]\n  roi: 1  # one\n") == []
    for name in SHIPPED:
        assert _continued_comments((ROOT / "configs" / f"{name}.yaml").read_text()) == [], name
