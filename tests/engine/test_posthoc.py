"""Temperature scaling in the engine, on a tiny timm model and a few MNIST digits.

After ``fit`` every checkpoint holds a temperature fitted on the validation split; ``test``
reports raw and scaled figures; ``predict`` writes ``softmax(logits / T)``. Each figure is checked
against an independent computation: the logits recomputed by hand from the checkpoint's weights,
then ``fit_temperature`` / ``scaled_nll`` / ``torch.softmax`` / torchmetrics on them.
"""

import csv
import json
import logging
from itertools import islice

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from mmix_applied.cli import main
from mmix_applied.compare import validation_figures
from mmix_applied.config import load_config
from mmix_applied.data.ood import photo_patches
from mmix_applied.engine import MixupModule, fit, get_recipe, load_checkpoint, predict
from mmix_applied.engine import test as run_test
from mmix_applied.metrics.ood import ood_metrics
from mmix_applied.metrics.temperature import scaled_nll, temperature_fit
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
# the embedded splits are sorted by class: validation and test run whole (500 and 1000 digits, 28 x 28)
TINY = ["model.name=test_resnet", "train.max_epochs=2", "train.limit_train_batches=5", "train.limit_val_batches=1.0",
        "train.limit_test_batches=1.0", "train.limit_predict_batches=1", "data.labels_per_class=5",
        "data.batch_size=10", "data.eval_batch_size=250", "train.accelerator=cpu", "train.devices=1",
        "train.enable_progress_bar=false", "train.loggers=[csv]", "train.log_every_n_steps=1"]
CALIBRATION = ("nll", "ece", "adaptive_ece", "brier")


def _config(root, *extra, name="cal"):
    return load_config(CONFIG, [*TINY, f"run.dir={root}", f"run.name={name}", *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    return root, fit(_config(root))


def _logits(root, ckpt, split, batches=None):
    """The split's logits and targets by hand: the checkpoint's weights, eval mode, no engine."""
    config = _config(root)
    recipe = get_recipe(config.recipe)(config)
    module = MixupModule(config, recipe)
    module.load_state_dict(load_checkpoint(ckpt)["state_dict"])
    module.model.eval()
    loader = getattr(recipe.build_datamodule(), f"{split}_dataloader")()
    zs, ys = [], []
    with torch.no_grad():
        for batch in islice(loader, batches):
            x, y = recipe.split_batch(batch)
            zs.append(module.model(x).float())
            ys.append(y)
    if module.mixer is not None:
        module.mixer.close()
    return torch.cat(zs), torch.cat(ys)


def test_every_checkpoint_holds_its_own_fitted_temperature(run):
    root, run_dir = run
    saved = json.loads((run_dir / "temperature.json").read_text())
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert len(ckpts) >= 2 and set(saved["checkpoints"]) == {p.name for p in ckpts}
    fitted = 0
    for ckpt in ckpts:
        state = load_checkpoint(ckpt)["mmix"]
        t = state["temperature"]
        assert t == saved["checkpoints"][ckpt.name]
        z, y = _logits(root, ckpt, "val")  # the whole validation split
        found = temperature_fit(z, y)
        assert state["temperature_fitted"] == pytest.approx(found.temperature, rel=1e-6)
        # a fit on a bound (or on degenerate data) is not used: T = 1 with the reason
        assert t == (1.0 if found.degenerate else pytest.approx(found.temperature, rel=1e-6))
        assert (state["temperature_note"] is not None) == found.degenerate == (ckpt.name in saved["notes"])
        fitted += not found.degenerate
        assert scaled_nll(z, y, t) <= scaled_nll(z, y, 1.0) + 1e-12  # scaling never raises the fitting NLL
        # the validation NLL raw and at T (what settings are chosen on), against the logits by hand
        assert saved["val_nll"][ckpt.name] == pytest.approx(scaled_nll(z, y, 1.0), rel=1e-5)
        assert saved["val_nll_scaled"][ckpt.name] == pytest.approx(scaled_nll(z, y, t), rel=1e-5)
    assert fitted >= 1  # at least one checkpoint exercises a real temperature
    assert saved["temperature"] == saved["checkpoints"]["last.ckpt"]
    figures = validation_figures(run_dir)  # compare's row: the last epoch's metrics and the scaled NLL
    assert figures["val/nll_scaled"] == saved["val_nll_scaled"]["last.ckpt"]
    assert figures["val/nll"] == pytest.approx(saved["val_nll"]["last.ckpt"], rel=1e-4)
    assert 0 <= figures["val/acc"] <= 1
    summary = json.loads((run_dir / "fit_summary.json").read_text())
    assert summary["temperature"] == saved["temperature"] and summary["last"]["epoch"] == 1
    assert summary["last"]["metrics"]["val/nll"] > 0 and summary["best"]["checkpoint"].endswith(".ckpt")


def test_temperature_restored_from_the_checkpoint_exactly(run):
    root, run_dir = run
    config = _config(root)
    module = MixupModule(config, get_recipe(config.recipe)(config))
    assert module.temperature is None
    module.on_load_checkpoint(load_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    assert module.temperature == json.loads((run_dir / "temperature.json").read_text())["temperature"]


def test_test_reports_raw_and_scaled_against_independent_figures(run):
    root, run_dir = run
    metrics = run_test(_config(root), checkpoint=f"{run_dir}:last")  # a run alone means its best checkpoint
    assert json.loads((run_dir / "test_metrics.json").read_text()) == metrics
    t = metrics["temperature"]
    for name in CALIBRATION:
        assert f"test/{name}" in metrics and f"test/{name}_scaled" in metrics
    assert "test/acc_scaled" not in metrics  # accuracy does not move under a temperature
    z, y = _logits(root, run_dir / "checkpoints" / "last.ckpt", "test")
    assert metrics["test/nll"] == pytest.approx(scaled_nll(z, y, 1.0), rel=1e-5)
    assert metrics["test/nll_scaled"] == pytest.approx(scaled_nll(z, y, t), rel=1e-5)
    ece = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")
    assert metrics["test/ece_scaled"] == pytest.approx(float(ece(torch.softmax(z / t, 1), y)), abs=1e-5)
    p = torch.softmax(z / t, 1)
    brier = ((p - torch.nn.functional.one_hot(y, 10)) ** 2).sum(1).mean()
    assert metrics["test/brier_scaled"] == pytest.approx(float(brier), rel=1e-5)


def test_predict_writes_softmax_of_logits_over_t_and_says_so(run, tmp_path):
    root, run_dir = run
    t = json.loads((run_dir / "temperature.json").read_text())["temperature"]
    z, _ = _logits(root, run_dir / "checkpoints" / "last.ckpt", "test", 1)
    for raw, expected, column in ((False, torch.softmax(z / t, 1), f"{t:.6g}"), (True, torch.softmax(z, 1), "1")):
        path = predict(_config(root), checkpoint=f"{run_dir}:last", output=tmp_path / f"p{raw}.csv", raw=raw)
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        probs = torch.tensor([[float(r[f"p_{c}"]) for c in range(10)] for r in rows])
        assert torch.allclose(probs, expected, atol=2e-6) and {r["temperature"] for r in rows} == {column}


def test_ood_in_test_against_the_scores_by_hand(run):
    root, run_dir = run
    metrics = run_test(_config(root, "options.ood=photos", "options.ood_samples=60"), checkpoint=f"{run_dir}:last")
    t = metrics["temperature"]
    z, _ = _logits(root, run_dir / "checkpoints" / "last.ckpt", "test")
    config = _config(root)
    recipe = get_recipe(config.recipe)(config)
    module = MixupModule(config, recipe)
    module.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"])
    with torch.no_grad():
        z_out = module.model.eval()(photo_patches(60, image_size=28, channels=1, seed=config.seed)).float()
    raw = ood_metrics(torch.softmax(z, 1).max(1).values, torch.softmax(z_out, 1).max(1).values)
    scaled = ood_metrics(torch.softmax(z / t, 1).max(1).values, torch.softmax(z_out / t, 1).max(1).values)
    assert metrics["test/ood_auroc"] == pytest.approx(raw["auroc"], abs=1e-6)
    assert metrics["test/ood_fpr95"] == pytest.approx(raw["fpr95"], abs=1e-6)
    assert metrics["test/ood_auroc_scaled"] == pytest.approx(scaled["auroc"], abs=1e-6)
    assert metrics["test/ood_fpr95_scaled"] == pytest.approx(scaled["fpr95"], abs=1e-6)
    with pytest.raises(ValueError, match="options.ood.*received 'nowhere'"):
        run_test(_config(root, "options.ood=nowhere"), checkpoint=run_dir)


def test_calibrate_false_fits_nothing(tmp_path):
    run_dir = fit(_config(tmp_path, "options.calibrate=false", "train.max_epochs=1", name="nocal"))
    assert not (run_dir / "temperature.json").exists()
    assert "temperature" not in load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["mmix"]
    assert json.loads((run_dir / "fit_summary.json").read_text())["calibration_note"] == "options.calibrate is false"
    metrics = run_test(_config(tmp_path, "options.calibrate=false", name="nocal"), checkpoint=run_dir)
    assert "temperature" not in metrics and not any(k.endswith("_scaled") for k in metrics)


class _Records(logging.Handler):
    """What Lightning's console logger lets through (its own handler's stream is bound at import)."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def lightning_log():
    records = _Records()
    logger = logging.getLogger("lightning.pytorch")
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)


def test_cli_prints_test_table_without_lightning_banners(run, capfd, lightning_log):
    root, run_dir = run
    assert main(["test", "--checkpoint", str(run_dir), *TINY, f"run.dir={root}", "run.name=cal"]) == 0
    out, err = capfd.readouterr()
    assert not lightning_log.messages
    lines = out.splitlines()
    assert lines[0].split() == ["metric", "raw", "scaled", "note"]
    nll = next(line for line in lines if line.startswith("test/nll "))
    assert len(nll.split()) == 3  # raw and scaled side by side
    assert "temperature:" in out
    for banner in ("GPU available", "💡", "litlogger", "litmodels"):
        assert banner not in out + err
    assert main(["--verbose", "test", "--checkpoint", str(run_dir), *TINY, f"run.dir={root}", "run.name=cal"]) == 0
    assert any(m.startswith("GPU available") for m in lightning_log.messages)  # --verbose lets Lightning speak


def test_cli_fit_ends_with_best_and_last_validation_metrics(tmp_path, capfd, lightning_log):
    assert main(["fit", "-c", str(CONFIG), *TINY, "train.max_epochs=1", f"run.dir={tmp_path}", "run.name=f"]) == 0
    out, err = capfd.readouterr()
    assert "best" in out and "last" in out and "val/nll" in out
    assert "last checkpoint:" in out and str(tmp_path / "f" / "checkpoints" / "last.ckpt") in out
    assert "temperature" in out and "💡" not in out + err and not lightning_log.messages
