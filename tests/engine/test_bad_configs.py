"""Bad configs: misspelled keys and model options, values of the wrong type, alpha out of range,
batches of one with mixing. Each error names the dotted key, what was received and the fix; no
config file is modified.
"""

from __future__ import annotations

import pytest

from mmix_applied.config import ConfigError, ConfigKeyError, ConfigTypeError, load_config
from tests.helpers import ROOT
from tests.helpers.bad_inputs import no_network, says, snapshot, write_yaml  # noqa: F401  (autouse fixture)

CONFIG = ROOT / "configs" / "classification.yaml"


@pytest.mark.parametrize("raw, key, suggestion", [
    ({"mix": {"alpah": 0.4}}, "'mix.alpah'", "Did you mean 'alpha'?"),
    ({"recipe": "handwriting", "data": {"tain": "lines.tsv"}}, "'data.tain'", "Did you mean 'train'?"),
    ({"recipe": "segmentation", "options": {"dice_wieght": 0.5}}, "'options.dice_wieght'", "Did you mean 'dice_weight'?"),
])
def test_misspelled_config_keys_in_every_recipe(tmp_path, raw, key, suggestion):
    path = write_yaml(tmp_path, raw)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigKeyError) as err:
        load_config(path)
    says(err, key, suggestion, "Valid keys in section")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("raw, key, expected", [
    ({"recipe": "segmentation", "data": {"num_classes": "four"}}, "'data.num_classes'", "expected int, received str 'four'"),
    ({"recipe": "segmentation", "data": {"patch_size": 64}}, "'data.patch_size'", "expected list[int], received int 64"),
    ({"recipe": "handwriting", "data": {"height": "32px"}}, "'data.height'", "expected int, received str '32px'"),
])
def test_wrong_types_in_recipe_sections(tmp_path, raw, key, expected):
    path = write_yaml(tmp_path, raw)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigTypeError) as err:
        load_config(path)
    says(err, key, expected)
    assert snapshot(tmp_path) == before


def test_negative_alpha_in_config():
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG, ["mix.alpha=-0.5"])
    # the core's own rule and words (mmix_applied.core.mixer.ALPHA), with the config key
    says(err, "'mix.alpha'", "must be a number > 0 and finite", "(received -0.5)", "typical 0.2 to 2.0")


@pytest.mark.parametrize("recipe", ["segmentation", "handwriting"])
def test_batch_size_one_with_mixing_in_config(recipe):
    with pytest.raises(ConfigError) as err:
        load_config({"recipe": recipe, "data": {"batch_size": 1}})
    says(err, "'data.batch_size'", "received 1", "raise it or set mix.variant=none")


def test_misspelled_model_option_names_the_config_key():
    from mmix_applied.engine.modelzoo import build_model

    cfg = load_config(CONFIG, ["model.name=test_resnet", "model.options={drop_rat: 0.1}"])
    with pytest.raises(ConfigTypeError) as err:
        build_model(cfg.model, num_classes=3, in_channels=1)
    says(err, "'model.options'", "drop_rat", "remove or rename it")
