"""Strict config validation, dotted overrides and the shipped YAML files."""


import pytest
import yaml

from mmix_applied.config import (
    Config,
    ConfigError,
    ConfigKeyError,
    ConfigTypeError,
    apply_overrides,
    config_to_dict,
    dump_config,
    load_config,
    parse_config,
    save_config,
)
from tests.helpers import ROOT

CONFIGS = ROOT / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("classification*.yaml")))
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.recipe == "classification"
    assert cfg.mix.variant == {"classification.yaml": "manifold", "classification_input.yaml": "input",
                               "classification_none.yaml": "none"}[name]


def test_all_three_variants_ship():
    names = {p.name for p in CONFIGS.glob("classification*.yaml")}
    assert {"classification.yaml", "classification_input.yaml", "classification_none.yaml"} <= names


def test_one_library_default_for_alpha_and_every_recipe_config_sets_its_own():
    """``mix.alpha`` and ``ManifoldMixup(alpha=...)`` share one default (docs/core.md says why it is 0.2);
    no recipe YAML leans on it, so changing it changes no recipe's run."""
    import inspect

    from mmix_applied import ManifoldMixup
    from mmix_applied.core.mixer import DEFAULT_ALPHA

    assert DEFAULT_ALPHA == 0.2 and parse_config({}).mix.alpha == DEFAULT_ALPHA
    assert inspect.signature(ManifoldMixup).parameters["alpha"].default == DEFAULT_ALPHA
    for path in sorted(CONFIGS.glob("*.yaml")):
        assert "alpha" in (yaml.safe_load(path.read_text()).get("mix") or {}), path.name


def test_defaults_and_recipe_sections():
    cfg = parse_config({})
    assert isinstance(cfg, Config)
    assert cfg.train.max_epochs == 10 and cfg.mix.alpha == 0.2
    assert type(cfg.data).__name__ == "ClassificationData" and cfg.data.source == "mnist"
    assert type(cfg.options).__name__ == "ClassificationOptions"


def test_unknown_key_names_it_lists_valid_keys_and_suggests():
    with pytest.raises(ConfigKeyError) as err:
        parse_config({"train": {"max_epoch": 3}})
    msg = str(err.value)
    assert "'train.max_epoch'" in msg and "Did you mean 'max_epochs'" in msg and "accumulate_grad_batches" in msg
    assert isinstance(err.value, KeyError) and isinstance(err.value, ConfigError)


def test_unknown_key_in_recipe_section_and_top_level():
    with pytest.raises(ConfigKeyError, match=r"'data.labels_per_clas'.*labels_per_class"):
        parse_config({"data": {"labels_per_clas": 3}})
    with pytest.raises(ConfigKeyError, match=r"'trian'.*Did you mean 'train'"):
        parse_config({"trian": {}})


@pytest.mark.parametrize("raw, key, expected", [
    ({"train": {"max_epochs": "three"}}, "train.max_epochs", "int"),
    ({"train": {"max_epochs": 2.5}}, "train.max_epochs", "int"),
    ({"train": {"deterministic": "yes"}}, "train.deterministic", "bool"),
    ({"mix": {"alpha": True}}, "mix.alpha", "float"),
    ({"optim": {"lr": [1, 2]}}, "optim.lr", "float"),
    ({"mix": {"points": 3}}, "mix.points", "str | list[str]"),
    ({"data": {"batch_size": "32"}}, "data.batch_size", "int"),
    ({"model": "resnet18"}, "model", "mapping"),
])
def test_wrong_type_names_key_and_expected_type(raw, key, expected):
    with pytest.raises(ConfigTypeError) as err:
        parse_config(raw)
    assert repr(key) in str(err.value) and expected in str(err.value)
    assert isinstance(err.value, TypeError)


def test_choices_and_ranges():
    with pytest.raises(ConfigError, match=r"'mix.variant'.*Did you mean 'manifold'"):
        parse_config({"mix": {"variant": "manifld"}})
    with pytest.raises(ConfigError, match=r"'mix.alpha'.*> 0"):
        parse_config({"mix": {"alpha": 0}})
    with pytest.raises(ConfigError, match=r"'mix.prob'"):
        parse_config({"mix": {"prob": 1.5}})
    with pytest.raises(ConfigError, match=r"'data.batch_size'.*at least 2"):
        parse_config({"data": {"batch_size": 1}})
    assert parse_config({"data": {"batch_size": 1}, "mix": {"variant": "none"}}).data.batch_size == 1
    with pytest.raises(ConfigKeyError, match=r"unknown recipe 'clasification'.*Did you mean 'classification'"):
        parse_config({"recipe": "clasification"})


def test_yaml_exponent_floats_and_int_to_float():
    cfg = load_config(yaml.safe_load("optim: {lr: 1e-3, weight_decay: 0}"))
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.weight_decay, float)


def test_dotted_overrides_parse_yaml_values():
    raw = apply_overrides({"train": {"max_epochs": 5}}, ["train.max_epochs=3", "mix.points=[input, layer1]",
                                                         "model.pretrained=null", "run.name=abc"])
    assert raw == {"train": {"max_epochs": 3}, "mix": {"points": ["input", "layer1"]},
                   "model": {"pretrained": None}, "run": {"name": "abc"}}
    cfg = load_config(CONFIGS / "classification.yaml", ["train.max_epochs=3", "mix.points=[input,layer1]"])
    assert cfg.train.max_epochs == 3 and cfg.mix.points == ["input", "layer1"]
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.max_epochs"])
    with pytest.raises(ConfigKeyError, match="'train.max_epoch'"):
        load_config(CONFIGS / "classification.yaml", ["train.max_epoch=3"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(CONFIGS / "classification_input.yaml", ["data.mean=[0.1]", "data.std=[0.3]"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert yaml.safe_load(dump_config(cfg))["mix"]["variant"] == "input"
    assert not list(path.parent.glob(".*.tmp"))


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigTypeError, match="mapping"):
        load_config(listy)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("seed: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError):
        load_config(unsafe)


def test_docs_list_every_key_with_its_default():
    import dataclasses

    from mmix_applied import config as C
    from mmix_applied.tasks.classification import ClassificationData, ClassificationOptions

    doc = (CONFIGS.parent / "docs" / "configs.md").read_text()
    sections = {"run": C.RunConfig, "model": C.ModelConfig, "mix": C.MixConfig, "optim": C.OptimConfig,
                "scheduler": C.SchedulerConfig, "train": C.TrainConfig, "data": ClassificationData,
                "options": ClassificationOptions}
    for name, cls in sections.items():
        for field in dataclasses.fields(cls):
            assert f"`{name}.{field.name}`" in doc, f"docs/configs.md misses {name}.{field.name}"


def test_the_old_task_section_names_its_new_name():
    with pytest.raises(ConfigKeyError, match=r"'task' is now called 'options'.*'options\.<key>='"):
        load_config({"recipe": "classification", "task": {"label_smoothing": 0.1}})
    with pytest.raises(ConfigKeyError, match="now called 'options'"):
        load_config(None, ["task.label_smoothing=0.1"])
    assert load_config(None, ["options.label_smoothing=0.1"]).options.label_smoothing == 0.1


def test_model_name_in_the_printed_family_slash_name_form():
    """``model.name: smp/unet`` is the form ``list_models()`` prints; it sets the family too."""
    cfg = load_config({"recipe": "segmentation", "model": {"name": "smp/unet"}})
    assert (cfg.model.family, cfg.model.name) == ("smp", "unet")
    cfg = load_config({"recipe": "segmentation", "model": {"family": "smp", "name": "smp/unet"}})
    assert (cfg.model.family, cfg.model.name) == ("smp", "unet")
    with pytest.raises(ConfigError, match="disagree"):
        load_config({"recipe": "segmentation", "model": {"family": "monai", "name": "smp/unet"}})
    with pytest.raises(ConfigError, match="FAMILY/NAME"):
        load_config({"model": {"name": "timm/"}})
