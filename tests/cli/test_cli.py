"""The `mmix-applied` command line, run in-process through main([...])."""

import csv
import json
import sys
import types
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from mmix_applied.cli import main
from tests.helpers import ROOT

CONFIG = str(ROOT / "configs" / "classification.yaml")
TINY = ["model.name=test_resnet", "train.max_epochs=1", "train.limit_train_batches=2", "train.limit_val_batches=1",
        "train.limit_test_batches=2", "data.labels_per_class=2", "data.batch_size=8", "data.eval_batch_size=8",
        "train.accelerator=cpu", "train.devices=1", "train.enable_progress_bar=false", "train.loggers=[csv]"]


def test_console_script_is_declared():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("mmix-applied") == "mmix_applied.cli:main"


def test_print_config_applies_overrides(capsys):
    assert main(["fit", "-c", CONFIG, "train.max_epochs=3", "--print-config", "mix.variant=input"]) == 0
    import yaml

    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["max_epochs"] == 3 and printed["mix"]["variant"] == "input"
    assert printed["data"]["source"] == "mnist"


def test_config_errors_exit_2_with_one_clear_line(capsys):
    assert main(["fit", "-c", CONFIG, "train.max_epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.max_epoch'" in err and "max_epochs" in err and "Traceback" not in err
    assert main(["fit", "-c", CONFIG, "optim.lr=fast"]) == 2
    assert "'optim.lr': expected float" in capsys.readouterr().err
    assert main(["test", "--checkpoint", "/nonexistent/run"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fit_test_predict_round_trip(tmp_path, capsys):
    import cv2

    from mmix_applied.data.mnist import load_mnist

    run = tmp_path / "cli"
    assert main(["fit", "-c", CONFIG, *TINY, f"run.dir={tmp_path}", "run.name=cli"]) == 0
    assert f"run directory: {run}" in capsys.readouterr().out
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()

    # resume without -c: the run's own config.yaml, plus overrides (one more epoch)
    assert main(["fit", "--resume", "last", f"run.dir={tmp_path}", "run.name=cli", "train.max_epochs=2"]) == 0
    capsys.readouterr()
    from mmix_applied.engine import load_checkpoint

    resumed = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 1 and resumed["global_step"] == 4
    assert resumed["mmix"]["config"]["model"]["name"] == "test_resnet"

    # test: the config comes from the run directory; overrides still apply
    assert main(["test", "--checkpoint", str(run), "train.limit_test_batches=1"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert {"test/acc", "test/nll", "test/ece", "test/brier", "test/loss"} <= set(metrics)
    row = next(line.split() for line in out.splitlines() if line.startswith("test/nll "))
    assert row == ["test/nll", f"{metrics['test/nll']:.4g}", f"{metrics['test/nll_scaled']:.4g}"]  # raw, scaled

    # predict on a plain folder of PNGs
    images, labels = load_mnist()
    folder = tmp_path / "to_predict"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"digit{i}.png"), images[i * 600])
    out_csv = tmp_path / "preds.csv"
    assert main(["predict", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--input", str(folder),
                 "--output", str(out_csv)]) == 0
    with out_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["id"]).name for r in rows] == ["digit0.png", "digit1.png", "digit2.png"]
    probs = np.array([[float(r[f"p_{c}"]) for c in range(10)] for r in rows])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert all(r["predicted"] == str(int(np.argmax(p))) for r, p in zip(rows, probs))
    assert all(r["target"] == "" for r in rows)

    # predict on the labeled test split (default) also draws a reliability diagram
    assert main(["predict", "--checkpoint", "last", "-c", CONFIG, *TINY, f"run.dir={tmp_path}", "run.name=cli",
                 "train.limit_predict_batches=1"]) == 0
    assert (run / "predictions.csv").is_file() and (run / "reliability.png").is_file()


def test_points_and_list_models(capsys):
    assert main(["points", "-c", CONFIG, "model.name=test_resnet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# timm/test_resnet") and "input" in lines and "layer1" in lines
    assert main(["points", "-c", CONFIG, "model.name=test_resnet", "mix.variant=input"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["input"]
    assert main(["list-models", "timm/test_res*"]) == 0
    assert "timm/test_resnet" in capsys.readouterr().out.split()
    assert main(["list-models", "nothing-matches-*"]) == 1


def test_demo_forwards_arguments_or_explains(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("mmix_applied.tasks.demo")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "mmix_applied.tasks.demo", fake)
    assert main(["demo", "--quick", "--out", "x"]) == 0
    assert seen == [["--quick", "--out", "x"]]
    monkeypatch.setitem(sys.modules, "mmix_applied.tasks.demo", None)  # import fails
    assert main(["demo"]) == 1
    assert "demo is not available" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "fit" in capsys.readouterr().out
