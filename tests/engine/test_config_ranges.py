"""Config ranges and config files: every numeric key is range-checked and finite before anything runs;
empty, aliased, non-UTF-8 and directory config paths are errors that name the file and the fix.

Each case checks the error type, that the message names the key (or file), the value received and
the fix, and that no input file is touched. The CLI cases run out-of-range options end to end.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest
import yaml

from mmix_applied.config import ConfigError, load_config
from mmix_applied.engine.config.memory import ACTIVATION_FACTOR, check_memory
from mmix_applied.engine.config.ranges import RULES, rules_for
from mmix_applied.engine.recipe import RECIPES, DataConfig, Recipe, get_recipe, list_recipes
from mmix_applied.utils.rules import at_least
from tests.helpers import ROOT
from tests.helpers.bad_inputs import no_network, says, snapshot  # noqa: F401  (autouse fixture)

CLS = ROOT / "configs" / "classification.yaml"
SEG = ROOT / "configs" / "segmentation.yaml"
SEG3D = ROOT / "configs" / "segmentation_3d.yaml"
HW = ROOT / "configs" / "handwriting.yaml"
B = ["model.name=test_resnet", "train.accelerator=cpu", "train.devices=1", "data.labels_per_class=2",
     "data.batch_size=4", "train.max_epochs=1", "train.limit_train_batches=2", "train.limit_val_batches=1",
     "train.limit_test_batches=1"]


def _numeric(tp: typing.Any) -> bool:
    if tp in (int, float):
        return True
    return any(_numeric(a) for a in typing.get_args(tp) if a is not bool)


def _numeric_fields(cls: type, prefix: str):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, key)
        elif _numeric(tp):
            yield key


def test_every_numeric_key_of_every_schema_has_a_range_rule():
    """The engine's sections in RULES; each recipe's data/options keys in its own ``range_rules``."""
    from mmix_applied.engine.config.schema import Config

    fixed = set(_numeric_fields(Config, ""))
    assert "mix.alpha" in fixed and sorted(fixed - set(RULES)) == []
    walked = set()
    for name in list_recipes():
        recipe = get_recipe(name)
        keys = set(_numeric_fields(recipe.data_schema, "data")) | set(_numeric_fields(recipe.options_schema, "options"))
        walked |= keys
        assert sorted(keys - set(rules_for(recipe))) == [], name
        assert sorted(set(recipe.range_rules) - keys) == [], name  # no rule for a key the recipe does not have
    assert {"data.image_size", "options.sw_overlap", "data.digits.space_prob"} <= walked  # the walk works
    assert not any(k.startswith(("data.image_size", "options.")) for k in RULES)  # the engine holds no recipe's rule


def test_the_core_owns_the_rules_of_alpha_and_prob():
    from mmix_applied.core.mixer import ALPHA, PROB

    assert RULES["mix.alpha"] is ALPHA and RULES["mix.prob"] is PROB


@dataclasses.dataclass
class _ProbeData(DataConfig):
    width: int = 8


class _Probe(Recipe):
    name = "range_probe"
    data_schema = _ProbeData
    range_rules = {"data.width": at_least(2, " (e.g. 8; the probe's own rule)")}


def test_a_new_recipe_declares_its_own_range_rules(monkeypatch):
    """A recipe's rules come with the recipe: no engine file names its keys."""
    monkeypatch.setitem(RECIPES, "range_probe", _Probe)
    assert load_config({"recipe": "range_probe", "data": {"width": 2}}).data.width == 2
    with pytest.raises(ConfigError) as err:
        load_config({"recipe": "range_probe", "data": {"width": 1}})
    says(err, "'data.width'", "must be >= 2 (e.g. 8; the probe's own rule)", "(received 1)")
    with pytest.raises(ConfigError) as err:  # the engine's shared keys keep the engine's rules
        load_config({"recipe": "range_probe", "data": {"batch_size": 0}})
    says(err, "'data.batch_size'", "must be >= 1", "(received 0)")
    monkeypatch.setattr(_Probe, "range_rules", {"data.width": at_least(2), "optim.lr": at_least(1)})
    with pytest.raises(ValueError, match=r"range_probe.*\['optim.lr'\].*data.\* and options.\* keys only"):
        load_config({"recipe": "range_probe"})


@pytest.mark.parametrize("config, override, needles", [
    (CLS, "scheduler.min_lr_ratio=-5", ["'scheduler.min_lr_ratio'", "[0, 1]", "(received -5.0)"]),
    (CLS, "scheduler.gamma=-1", ["'scheduler.gamma'", "must be > 0", "(received -1.0)"]),
    (CLS, "data.test_fraction=-0.5", ["'data.test_fraction'", "[0, 1)", "(received -0.5)"]),
    (CLS, "data.val_fraction=1.0", ["'data.val_fraction'", "[0, 1)", "(received 1.0)"]),
    (CLS, "data.image_size=0", ["'data.image_size'", "must be >= 1", "(received 0)"]),
    (CLS, "train.limit_train_batches=0", ["'train.limit_train_batches'", "batch count >= 1", "(received 0)"]),
    (CLS, "train.limit_train_batches=1.5", ["'train.limit_train_batches'", "(0, 1]", "(received 1.5)"]),
    (CLS, "optim.momentum=1.2", ["'optim.momentum'", "[0, 1)", "(received 1.2)"]),
    (CLS, "seed=-3", ["'seed'", "[0, 4294967295]", "(received -3)"]),
    (CLS, "data.channels=2", ["'data.channels'", "one of 1, 3", "(received 2)"]),
    (CLS, "data.std=[0.5, 0]", ["'data.std[1]'", "must be > 0", "(received 0.0)"]),
    (SEG3D, "data.patch_size=[0,0,0]", ["'data.patch_size[0]'", "must be >= 1", "(received 0)"]),
    (SEG, "data.pad_divisor=0", ["'data.pad_divisor'", "must be >= 1", "the network's total stride", "(received 0)"]),
    (SEG, "options.sw_overlap=1.5", ["'options.sw_overlap'", "[0, 1)", "(received 1.5)"]),
    (SEG, "options.sw_overlap=1", ["'options.sw_overlap'", "never advance the window", "(received 1.0)"]),
    (HW, "data.digits.space_prob=2", ["'data.digits.space_prob'", "[0, 1]", "(received 2.0)"]),
])
def test_out_of_range_values_name_the_key_the_range_and_the_value(config, override, needles):
    with pytest.raises(ConfigError) as err:
        load_config(config, [override])
    says(err, *needles)


@pytest.mark.parametrize("config, override", [
    (CLS, "data.test_fraction=0"), (CLS, "train.limit_val_batches=0"), (CLS, "train.limit_train_batches=0.5"),
    (CLS, "scheduler.min_lr_ratio=1"), (SEG, "options.sw_overlap=0"), (CLS, "train.devices=[0]"),
])
def test_boundary_values_inside_the_range_pass(config, override):
    load_config(config, [override])


@pytest.mark.parametrize("config, overrides, needles", [
    (CLS, ["data.val_fraction=0.5", "data.test_fraction=0.5"], ["sum to 1.0", "must be < 1"]),
    (HW, ["data.min_width=64", "data.max_width=32"], ["'data.max_width'", "data.min_width=64", "(received 32)"]),
    (HW, ["data.digits.min_digits=5", "data.digits.max_digits=3"], ["'data.digits.max_digits'", "(received 3)"]),
    (HW, ["data.charset=''"], ["'data.charset'", "at least one character", "null"]),
    (SEG3D, ["data.intensity_range=[100, -100]"], ["'data.intensity_range'", "a_min < a_max", "[100.0, -100.0]"]),
    (SEG, ["options.dice_weight=0", "options.ce_weight=0"], ["no loss to train on", "at least one > 0"]),
    (CLS, ["mix.off_last_epochs=3", "train.max_epochs=3"], ["'mix.off_last_epochs'", "no epoch would mix",
                                                             "(received 3)"]),
    (SEG, ["data.crop_size=[64]"], ["'data.crop_size'", "must have 2 entries", "(received [64])"]),
    (SEG3D, ["data.patch_size=[8, 8]"], ["'data.patch_size'", "must have 3 entries", "(received [8, 8])"]),
    (SEG3D, ["options.roi_size=[8, 8]"], ["'options.roi_size'", "must have 3 entries"]),
    (SEG, ["data.class_names=[a, b]"], ["'data.class_names'", "4 entries", "data.num_classes=4"]),
    (CLS, ["data.mean=[0.5, 0.5]"], ["'data.mean'", "1 entry,", "one value per channel"]),
])
def test_keys_that_bound_each_other(config, overrides, needles):
    with pytest.raises(ConfigError) as err:
        load_config(config, overrides)
    says(err, *needles)


def test_fractions_summing_to_one_pass_when_a_split_has_its_own_path(tmp_path):
    cfg = load_config(CLS, ["data.val_fraction=0.5", "data.test_fraction=0.5", f"data.test_path={tmp_path}"])
    assert cfg.data.test_fraction == 0.5


@pytest.mark.parametrize("override, key", [
    ("mix.alpha=.inf", "'mix.alpha'"), ("optim.lr=.nan", "'optim.lr'"), ("optim.lr=inf", "'optim.lr'"),
    ("data.val_fraction=-.inf", "'data.val_fraction'"), ("model.backbone_lr_mult=.nan", "'model.backbone_lr_mult'"),
    ("train.gradient_clip_val=.inf", "'train.gradient_clip_val'"), ("data.mean=[0.5, .nan, 0.5]", "'data.mean[1]'"),
    ("model.options={drop_rate: .nan}", "'model.options.drop_rate'"),
])
def test_non_finite_numbers_are_refused_wherever_they_are(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(CLS, [override])
    says(err, key, "must be finite", "write the value you mean")


def test_infinite_alpha_in_the_mixer_is_refused_not_a_hang():
    from torch import nn

    from mmix_applied import ManifoldMixup

    with pytest.raises(ValueError) as err:
        ManifoldMixup(nn.Sequential(nn.Linear(2, 2)), points=["input"], alpha=math.inf)
    says(err, "finite", "received inf", "typical 0.2 to 2.0")


def test_image_size_beyond_the_machines_memory_names_the_estimate():
    with pytest.raises(ConfigError) as err:
        load_config(CLS, ["data.image_size=20000", "data.batch_size=4"])
    need = 4 * 20000 * 20000 * 4 * ACTIVATION_FACTOR / 2**30  # 4 x 1 x 20000 x 20000 float32, x the factor
    says(err, "'data.image_size'", "4 x 1 x 20000 x 20000", f"{need:.1f} GiB", "lower data.image_size or data.batch_size")


def test_memory_bound_compares_against_the_given_memory():
    cfg = load_config(SEG3D, ["data.patch_size=[64, 64, 64]", "data.batch_size=2", "data.num_samples=2"])
    need = 2 * 2 * 1 * 64**3 * 4 * ACTIVATION_FACTOR  # batch x num_samples x in_channels x patch, float32
    check_memory(cfg, available=need)  # exactly enough
    with pytest.raises(ConfigError) as err:
        check_memory(cfg, available=need - 1)
    says(err, "'data.patch_size'", "4 x 1 x 64 x 64 x 64", "lower data.patch_size")


# --------------------------------------------------------------------------- config files
def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("content", [b"", b"# only a comment\n\n", b"---\n"])
def test_empty_config_file_is_an_error_not_all_defaults(tmp_path, content):
    path = _write(tmp_path, "run.yaml", content)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    says(err, str(path), "is empty", "see configs/", "leave out -c")
    assert snapshot(tmp_path) == before


def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["model:", "  options:", "    l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = _write(tmp_path, "bomb.yaml", ("\n".join(lines) + "\n").encode())
    assert len(path.read_bytes()) < 1024  # 9**9 strings once expanded
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    says(err, str(path), "alias *l0", "line 4", "write the values out")
    assert snapshot(tmp_path) == before


def test_alias_in_an_override_is_refused():
    with pytest.raises(ConfigError) as err:
        load_config(CLS, ["model.options={a: &x [1], b: *x}"])
    says(err, "override", "alias *x")


def test_plain_yaml_still_loads_like_safe_load(tmp_path):
    text = CLS.read_text()
    assert load_config(_write(tmp_path, "c.yaml", text.encode())) == load_config(yaml.safe_load(text))


def test_config_path_that_is_a_directory(tmp_path):
    (tmp_path / "cfg").mkdir()
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "cfg")
    says(err, str(tmp_path / "cfg"), "is a directory", "holds no .yaml file", "pass a file")
    (tmp_path / "cfg" / "b.yaml").write_text("seed: 1\n")
    (tmp_path / "cfg" / "a.yml").write_text("seed: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "cfg")
    says(err, "it holds a.yml, b.yaml", f"-c {str(tmp_path / 'cfg' / 'a.yml')!r}")


def test_latin1_config_names_the_file_and_the_encoding(tmp_path):
    path = _write(tmp_path, "run.yaml", "run:\n  name: caf\xe9\n".encode("latin-1"))
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    says(err, str(path), "not UTF-8", "0xe9", "line 2", "save the file as UTF-8")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- CLI
def _cli(capsys, *args):
    from mmix_applied.cli import main

    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" not in err
    return code, err


@pytest.mark.parametrize("override, needles", [
    ("train.limit_train_batches=0", ["'train.limit_train_batches'", "(received 0)"]),
    ("options.sw_overlap=1.5", ["'options.sw_overlap'", "(received 1.5)"]),
    ("mix.alpha=.inf", ["'mix.alpha'", "must be finite"]),
])
def test_cli_refuses_before_anything_runs_or_is_written(tmp_path, capsys, override, needles):
    config, base = (SEG, [o for o in B if "labels_per_class" not in o]) if "sw_" in override else (CLS, B)
    code, err = _cli(capsys, "fit", "-c", config, *base, override, f"run.dir={tmp_path / 'runs'}", "run.name=r")
    assert code == 2
    says(err, "error: ", *needles)
    assert not (tmp_path / "runs").exists()


def test_cli_config_directory(tmp_path, capsys):
    (tmp_path / "cfg").mkdir()
    code, err = _cli(capsys, "fit", "-c", tmp_path / "cfg", *B)
    assert code == 2
    says(err, "is a directory")


@pytest.mark.parametrize("limit, expected_gib", [("1073741824\n", 1.0), ("max\n", None)])
def test_machine_memory_honours_a_container_limit(tmp_path, monkeypatch, limit, expected_gib):
    import os

    from mmix_applied.engine.config import memory

    (tmp_path / "memory.max").write_text(limit)
    monkeypatch.setattr(memory, "_CGROUP_LIMITS", (str(tmp_path / "memory.max"),))
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memory.machine_memory_bytes() == (physical if expected_gib is None else int(expected_gib * 2**30))
