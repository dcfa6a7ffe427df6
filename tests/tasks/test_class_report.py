"""Classification `test` reports per-class precision and recall and writes the confusion matrix (JSON + PNG)."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torchmetrics.functional.classification import multiclass_precision, multiclass_recall

from mmix_applied.config import load_config
from mmix_applied.engine import MixupModule, fit, get_recipe, load_checkpoint
from mmix_applied.engine import test as run_test
from mmix_applied.engine.summary import format_test_table
from mmix_applied.reports.classes import class_report
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
TINY = ["model.name=test_resnet", "train.max_epochs=1", "train.limit_train_batches=3", "train.limit_val_batches=1",
        "train.limit_test_batches=2", "data.labels_per_class=3", "data.batch_size=10", "data.eval_batch_size=50",
        "train.accelerator=cpu", "train.devices=1", "train.enable_progress_bar=false", "train.loggers=[csv]",
        "options.calibrate=false", "train.save_top_k=0"]


def test_class_report_matches_sklearn_with_an_absent_and_a_never_predicted_class():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 60)  # class 3 never in the truth
    pred = np.where(rng.random(60) < 0.6, truth, rng.integers(0, 3, 60))
    pred[pred == 2] = 3  # class 2 never predicted, class 3 predicted but absent
    report = class_report(confusion_matrix(truth, pred, labels=range(4)), ["a", "b", "c", "d"])
    p, r, _, support = precision_recall_fscore_support(truth, pred, labels=range(4), zero_division=0)
    assert report["precision"] == pytest.approx(p.tolist()) and report["recall"] == pytest.approx(r.tolist())
    assert report["support"] == support.tolist() and report["classes"] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match=r"shape \(4, 4\) for 3 class names"):
        class_report(np.zeros((4, 4)), ["a", "b", "c"])


def test_test_writes_the_confusion_matrix_and_logs_precision_recall_per_class(tmp_path):
    config = load_config(CONFIG, [*TINY, f"run.dir={tmp_path}", "run.name=r"])
    run_dir = fit(config)
    config = load_config(CONFIG, [*TINY, f"run.dir={tmp_path}", "run.name=r"])
    metrics = run_test(config, checkpoint=run_dir)
    # the test split by hand: the checkpoint's weights, eval mode, torchmetrics on the logits
    recipe = get_recipe(config.recipe)(config)
    module = MixupModule(config, recipe)
    module.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"])
    module.model.eval()
    zs, ys = [], []
    with torch.no_grad():
        for i, batch in enumerate(recipe.build_datamodule().test_dataloader()):
            if i == 2:  # train.limit_test_batches=2
                break
            x, y = recipe.split_batch(batch)
            zs.append(module.model(x))
            ys.append(y)
    z, y = torch.cat(zs), torch.cat(ys)
    names = recipe.class_names
    precision = multiclass_precision(z, y, num_classes=len(names), average=None)
    recall = multiclass_recall(z, y, num_classes=len(names), average=None)
    for i, name in enumerate(names):
        assert metrics[f"test/precision_{name}"] == pytest.approx(precision[i].item(), abs=1e-6)
        assert metrics[f"test/recall_{name}"] == pytest.approx(recall[i].item(), abs=1e-6)
    saved = json.loads((run_dir / "confusion_matrix.json").read_text())
    assert saved["classes"] == names and saved["rows"] == "true class"
    assert saved["matrix"] == confusion_matrix(y.numpy(), z.argmax(1).numpy(), labels=range(len(names))).tolist()
    assert (run_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert f"test/recall_{names[0]}" in format_test_table(metrics)
    assert "test/confusion" not in metrics and "test/confusion_scaled" not in metrics
