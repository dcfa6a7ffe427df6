"""The search space: each recipe's default (the family's own point names), the YAML that overrides
it, and every bad entry named with what was received and what is valid."""

import pytest

from mmix_applied.tune.space import TUNABLE, SpaceError, default_space, point_choices, read_space
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
TINY = ["model.name=test_resnet", "data.labels_per_class=2"]


class FixedTrial:
    """What the space asks of an ``optuna.Trial``, answering from a dict (and recording the calls)."""

    def __init__(self, values):
        self.values, self.calls = values, []

    def suggest_float(self, name, low, high, *, log=False, step=None):
        self.calls.append(("float", name, low, high, log, step))
        return self.values[name]

    def suggest_int(self, name, low, high, *, log=False, step=1):
        self.calls.append(("int", name, low, high, log, step))
        return self.values[name]

    def suggest_categorical(self, name, choices):
        self.calls.append(("categorical", name, tuple(choices)))
        return self.values[name]


def _space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return read_space(path, config_path=CONFIG, overrides=TINY)


def test_default_space_uses_the_models_own_point_names():
    space = read_space(None, config_path=CONFIG, overrides=TINY)
    # test_resnet's feature_info: act1, layer1..layer4; auto = the paper's {input, layer1, layer2}
    assert space.params["mix.points"].choices == ("auto", "all", "input", "act1", "layer1", "layer2", "layer3",
                                                  "layer4")
    alpha = space.params["mix.alpha"]
    assert (alpha.low, alpha.high, alpha.log) == (0.05, 4.0, True)
    assert set(space.params) == {"mix.alpha", "mix.points", "mix.prob", "mix.clean_weight"}
    trial = FixedTrial({"mix.alpha": 0.3, "mix.points": "layer2", "mix.prob": 0.5, "mix.clean_weight": 0.0})
    params = space.suggest(trial)
    assert ("float", "mix.alpha", 0.05, 4.0, True, None) in trial.calls
    assert space.overrides(params) == ["mix.alpha=0.3", 'mix.points=["layer2"]', "mix.prob=0.5",
                                       "mix.clean_weight=0.0"]
    assert space.digest(params) == space.digest(dict(reversed(list(params.items()))))  # order-free name
    assert space.digest(params) != space.digest({**params, "mix.alpha": 0.31})


def test_handwriting_searches_the_warmup_and_the_crnn_points():
    from mmix_applied.config import load_config

    config = load_config(ROOT / "configs" / "handwriting.yaml", ["train.max_epochs=8"])
    space = default_space(config)
    warmup = space.params["mix.warmup_epochs"]
    assert (warmup.kind, warmup.low, warmup.high) == ("int", 0, 2)
    choices = point_choices(config)
    assert choices[:1] == ["auto"] and "input" in choices and any("rnn" in c for c in choices)


def test_a_yaml_overrides_fixes_and_drops_entries(tmp_path):
    space = _space(tmp_path, "mix.alpha: {low: 0.1, high: 2.0, log: true}\n"
                             "mix:\n  points: [auto, [input, layer1]]\n  off_last_epochs: 5\n"
                             "mix.clean_weight: null\nmix.prob: {low: 0.5, high: 1.0, step: 0.25}\n")
    assert set(space.params) == {"mix.alpha", "mix.points", "mix.prob"} and space.fixed == {"mix.off_last_epochs": 5}
    assert space.params["mix.points"].choices == ("auto", "input,layer1")
    params = space.suggest(FixedTrial({"mix.alpha": 1.0, "mix.points": "input,layer1", "mix.prob": 0.75}))
    assert space.overrides(params) == ["mix.off_last_epochs=5", "mix.alpha=1.0", 'mix.points=["input", "layer1"]',
                                       "mix.prob=0.75"]


@pytest.mark.parametrize("text, words", [
    ("mix.alpah: {low: 0.1, high: 1}\n", ["unknown parameter 'mix.alpah'", "Did you mean 'mix.alpha'?",
                                          "Tunable: " + ", ".join(TUNABLE)]),
    ("optim.lr: {low: 0.0001, high: 0.01}\n", ["'optim.lr' is a config key but not tunable", "fair",
                                               "Tunable: mix.alpha"]),
    ("mix.variant: [none, manifold]\n", ["'mix.variant' is a config key but not tunable"]),
    ("mix.alpha: {low: 2.0, high: 0.5}\n", ["mix.alpha: the range is empty (low 2.0 > high 0.5)"]),
    ("mix.points: []\n", ["mix.points: the list of choices is empty"]),
    ("mix.alpha: {low: 0, high: 1, log: true}\n", ["a log range needs low > 0; received low 0"]),
    ("mix.alpha: {low: 0.1}\n", ["a range is {low: ..., high: ...}", "received {'low': 0.1}"]),
    ("mix.warmup_epochs: {low: 0, high: 2.5}\n", ["takes whole numbers, received 2.5"]),
    ("mix.points: [auto, layer9]\n", ["choice 'layer9'", "unknown mix point 'layer9'", "Did you mean"]),
    ("mix.prob: {low: 0.5, high: 1.5}\n", ["mix.prob = 1.5 is not a valid value", "mix.prob"]),
    ("mix.alpha: 0.2\nmix.points: auto\nmix.prob: 1.0\nmix.clean_weight: 0.0\n", ["searches no key"]),
])
def test_bad_entries_say_what_was_received_and_what_is_valid(tmp_path, text, words):
    with pytest.raises(SpaceError) as err:
        _space(tmp_path, text)
    message = str(err.value)
    assert str(tmp_path / "space.yaml") in message
    for word in words:
        assert word in message, message
