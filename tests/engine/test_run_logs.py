"""Run logs: hparams.yaml holds the resolved config, one progress line per epoch outside a terminal, mlflow."""

import sys
import types

import pytest
import yaml
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import MLFlowLogger

import mmix_applied.engine.run_logs as run_logs
from mmix_applied.config import ConfigError, config_to_dict, load_config
from mmix_applied.engine import fit, get_recipe
from mmix_applied.engine.runner import build_trainer
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
TINY = ["model.name=test_resnet", "train.max_epochs=2", "train.limit_train_batches=2", "train.limit_val_batches=1",
        "data.labels_per_class=2", "data.batch_size=10", "data.eval_batch_size=20", "train.accelerator=cpu",
        "train.devices=1", "train.log_every_n_steps=1", "options.calibrate=false", "train.save_top_k=0",
        "train.precision=32"]


def test_fit_logs_the_resolved_config_and_one_line_per_epoch_outside_a_terminal(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(run_logs, "stdout_is_terminal", lambda: False)
    config = load_config(CONFIG, [*TINY, "train.enable_progress_bar=true", "train.loggers=[csv,tensorboard]",
                                  f"run.dir={tmp_path}", "run.name=r"])
    run_dir = fit(config)
    out, err = capfd.readouterr()
    expected = config_to_dict(load_config(run_dir / "config.yaml"))
    for folder in ("tb", "logs"):  # TensorBoard's and the CSV logger's hparams.yaml: the resolved config
        logged = yaml.safe_load((run_dir / folder / "hparams.yaml").read_text())
        assert logged == expected, folder
    lines = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(" (")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "train/loss" in lines[0] and "val/loss" in lines[0] and "train/loss_step" not in lines[0]
    assert "\r" not in out + err  # no redrawn progress bar in the log


def test_a_terminal_keeps_lightnings_progress_bar(tmp_path, monkeypatch):
    config = load_config(CONFIG, [*TINY, "train.enable_progress_bar=true", f"run.dir={tmp_path}"])
    recipe = get_recipe(config.recipe)(config)
    monkeypatch.setattr(run_logs, "stdout_is_terminal", lambda: True)
    assert isinstance(build_trainer(config, tmp_path, recipe).progress_bar_callback, TQDMProgressBar)
    monkeypatch.setattr(run_logs, "stdout_is_terminal", lambda: False)
    assert isinstance(build_trainer(config, tmp_path, recipe).progress_bar_callback, run_logs.EpochLines)
    quiet = load_config(CONFIG, [*TINY, "train.enable_progress_bar=false", f"run.dir={tmp_path}"])
    assert build_trainer(quiet, tmp_path, recipe).progress_bar_callback is None


def test_mlflow_without_the_package_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    config = load_config(CONFIG, [*TINY, "train.loggers=[csv,mlflow]", f"run.dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"received 'mlflow', but the mlflow package is not installed\. "
                                          r"Install it \(pip install mlflow\)"):
        run_logs.build_loggers(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written


def test_mlflow_logger_writes_into_the_run_directory(tmp_path, monkeypatch):
    client = []
    tracking = types.ModuleType("mlflow.tracking")
    tracking.MlflowClient = lambda uri: client.append(uri) or object()
    fake = types.ModuleType("mlflow")
    fake.tracking = tracking
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", tracking)
    monkeypatch.setattr("lightning.pytorch.loggers.mlflow._MLFLOW_AVAILABLE", True)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(CONFIG, [*TINY, "train.loggers=[csv,mlflow]", f"run.dir={tmp_path}"])
    loggers = run_logs.build_loggers(config, tmp_path / "run")
    (logger,) = [lg for lg in loggers if isinstance(lg, MLFlowLogger)]
    assert client == [f"file:{tmp_path / 'run' / 'mlruns'}"]
    assert logger._experiment_name == "classification" and logger._run_name == "run"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")  # a tracking server wins
    run_logs.build_loggers(config, tmp_path / "run")
    assert client[-1] == "http://tracking:5000"
