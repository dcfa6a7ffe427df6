"""A temperature the validation split cannot fix (all-correct data, an optimum on a bound) is not used: the
engine keeps T = 1 with the reason, and test, the table and compare say so."""

import json

import pytest
import torch

from mmix_applied.config import load_config
from mmix_applied.engine import fit, load_checkpoint
from mmix_applied.engine import test as run_test
from mmix_applied.engine.posthoc import fallback_note
from mmix_applied.engine.summary import format_fit_summary, format_test_table
from mmix_applied.metrics.temperature import CalibrationWarning, TemperatureScaler, scaled_nll, temperature_fit
from mmix_applied.reports.comparison import temperature_flag
from mmix_applied.tasks.classification import ClassificationRecipe
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
TINY = ["model.name=test_resnet", "train.max_epochs=1", "train.limit_train_batches=2", "train.limit_val_batches=1",
        "train.limit_test_batches=1", "data.labels_per_class=2", "data.batch_size=10", "data.eval_batch_size=40",
        "train.accelerator=cpu", "train.devices=1", "train.enable_progress_bar=false", "train.loggers=[csv]",
        "train.save_top_k=0"]


def test_an_all_correct_split_is_degenerate_and_the_note_says_why():
    # 40 confident, all-correct predictions: the NLL falls as T -> 0, the fit stops at the 0.05 bound
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (40,), generator=g)
    z = torch.randn(40, 4, generator=g) + 6 * torch.nn.functional.one_hot(y, 4)
    found = temperature_fit(z, y)
    assert found.degenerate and found.at_bound and found.temperature == pytest.approx(0.05)
    assert "all-correct" in found.case
    note = fallback_note(found)
    assert note.startswith("fell back to T = 1 (raw probabilities): all-correct validation data")
    assert "T at its bound 0.05" in note
    # what T = 0.05 would do to held-out data the model gets wrong once: the scaled NLL explodes
    z_test, y_test = z.clone(), y.clone()
    y_test[0] = (y[0] + 1) % 4
    assert scaled_nll(z_test, y_test, 0.05) > 10 * scaled_nll(z_test, y_test, 1.0)
    assert fallback_note(temperature_fit(z_test[:20] * 0.5, (y_test[:20] + 1) % 4)) is not None  # all wrong
    z_val = torch.randn(300, 4, generator=g) * 3
    y_val = torch.multinomial(torch.softmax(z_val / 1.5, 1), 1, generator=g)[:, 0]  # overconfident: T near 1.5
    clean = temperature_fit(z_val, y_val)
    assert not clean.degenerate and fallback_note(clean) is None


def test_engine_keeps_t_one_with_the_reason_and_test_prints_it(tmp_path, monkeypatch):
    # bounds around 1 put any real optimum of the tiny model on a bound: the degenerate path, deterministically
    monkeypatch.setattr(ClassificationRecipe, "calibration_scaler",
                        lambda self: TemperatureScaler(bounds=(0.999, 1.001), seed=0))
    config = load_config(CONFIG, [*TINY, f"run.dir={tmp_path}", "run.name=r"])
    with pytest.warns(CalibrationWarning, match="fell back to T = 1"):
        run_dir = fit(config)
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["mmix"]
    assert state["temperature"] == 1.0 and state["temperature_fitted"] in (pytest.approx(0.999), pytest.approx(1.001))
    assert "T at its bound" in state["temperature_note"]
    saved = json.loads((run_dir / "temperature.json").read_text())
    assert saved["temperature"] == 1.0 and saved["notes"]["last.ckpt"] == state["temperature_note"]
    summary = json.loads((run_dir / "fit_summary.json").read_text())
    assert state["temperature_note"] in format_fit_summary(summary)
    metrics = run_test(load_config(CONFIG, [*TINY, f"run.dir={tmp_path}", "run.name=r"]), checkpoint=run_dir)
    assert metrics["temperature"] == 1.0 and metrics["temperature_note"] == state["temperature_note"]
    assert metrics["test/nll_scaled"] == pytest.approx(metrics["test/nll"], rel=1e-6)  # T = 1: scaled = raw
    assert json.loads((run_dir / "test_metrics.json").read_text())["temperature_note"] == state["temperature_note"]
    table = format_test_table(metrics)
    assert f"temperature: 1, {state['temperature_note']}; scaled = raw" in table
    row = {"metrics": metrics, "temperature": metrics["temperature"]}
    assert temperature_flag(row) == state["temperature_note"]  # compare's report flags the run
