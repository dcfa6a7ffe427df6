"""Issue 22 (round 3): a command stopped by SIGTERM or Ctrl-C (SIGINT) exits 143 / 130 with one line
saying what was saved and the exact command that continues; never 0, never a traceback, never a
"full disk". Signals are sent by the process to itself at a chosen moment (inside a training step,
inside a checkpoint write), so each case is exact and fast; the cases that need separate processes
(loader workers, DDP) run the real CLI."""

from __future__ import annotations

import importlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmix_applied.cli import main
from mmix_applied.engine import load_checkpoint
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
B = ["model.name=test_resnet", "train.accelerator=cpu", "train.devices=1", "data.labels_per_class=2",
     "data.batch_size=4", "train.max_epochs=2", "train.limit_train_batches=3", "train.limit_val_batches=1",
     "train.limit_test_batches=2", "train.enable_progress_bar=false", "train.loggers=[csv]"]


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _kill_when(monkeypatch, signum: int, ready=lambda: True, *, method: str = "split_batch") -> None:
    """Send ``signum`` to this process at the first batch the classification recipe's ``method`` sees once ``ready()``."""
    from mmix_applied.tasks.classification import ClassificationRecipe

    sent, real = [], getattr(ClassificationRecipe, method)

    def hooked(self, *args):
        if not sent and ready():
            sent.append(1)
            os.kill(os.getpid(), signum)
        return real(self, *args)

    monkeypatch.setattr(ClassificationRecipe, method, hooked)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_fit_exits_128_plus_the_signal_and_says_how_to_resume(tmp_path, monkeypatch, capsys, signum):
    run = tmp_path / "r"
    _kill_when(monkeypatch, signum, (run / "checkpoints" / "last.ckpt").exists)  # in the second epoch
    code, out, err = _cli(capsys, "fit", "-c", CONFIG, *B, f"run.dir={tmp_path}", "run.name=r")
    assert code == 128 + signum, (code, err)
    name = signal.Signals(signum).name
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"stopped by {name} during fit; the last checkpoint is '{run / 'checkpoints' / 'last.ckpt'}' "
                          "(after 1 epoch(s), global step 3; saved by this run); continue with: "
                          f"mmix-applied fit --resume {run}"), err
    assert not (run / "fit_summary.json").exists()  # the fit did not finish, and says so by its status
    monkeypatch.undo()
    # the printed command continues the run to its end
    resume = shlex.split(err.split("continue with: ")[1])[1:]
    assert main(resume) == 0
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert (run / "fit_summary.json").is_file()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_checkpoint_save_finishes_the_save_then_stops(tmp_path, monkeypatch, capsys, signum):
    """Was: Ctrl-C inside torch.save broke torch's writer and was reported as a disk failure (exit 2)."""
    real, saves = torch.save, []

    def save(obj, fh, *args, **kwargs):
        saves.append(1)
        if len(saves) == 1:
            os.kill(os.getpid(), signum)  # arrives while the checkpoint is being written
        return real(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    code, _, err = _cli(capsys, "fit", "-c", CONFIG, *B, f"run.dir={tmp_path}", "run.name=r",
                        "train.limit_val_batches=0")
    assert code == 128 + signum, err
    assert "cannot write" not in err and "disk" not in err and "Traceback" not in err, err
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    assert f"'{last}' (after 1 epoch(s), global step 3; saved by this run)" in err
    assert load_checkpoint(last)["epoch"] == 0  # the save was finished, not torn
    assert not list(last.parent.glob(".*.tmp"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["fit", "-c", str(CONFIG), *B, "train.max_epochs=1", f"run.dir={root}", "run.name=t"]) == 0
    return root / "t"


def test_a_stopped_test_or_predict_says_nothing_was_written(trained, monkeypatch, capsys):
    _kill_when(monkeypatch, signal.SIGTERM)
    code, _, err = _cli(capsys, "test", "--checkpoint", trained)
    assert code == 143, err
    which, stop = err.splitlines(keepends=True)  # the checkpoint used (and why), then the stop
    assert which.startswith("checkpoint: ") and "epoch000.ckpt (best by val/loss" in which, err
    assert stop == (f"stopped by SIGTERM during test: test_metrics.json was not written; run it again with: "
                    f"mmix-applied test --checkpoint {trained}\n")
    assert not (trained / "test_metrics.json").exists()
    _kill_when(monkeypatch, signal.SIGINT, method="predict_step")
    code, _, err = _cli(capsys, "predict", "--checkpoint", trained, "--output", trained / "p.csv")
    assert code == 130, err
    assert err.splitlines()[1].startswith("stopped by SIGINT during predict: no prediction file was written"), err
    assert not (trained / "p.csv").exists()


def test_a_stop_while_starting_or_during_compare_says_what_to_run(tmp_path, monkeypatch, capsys):
    cli = importlib.import_module("mmix_applied.cli.main")  # the module (the package's `main` is the function)

    def load(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs here
        raise AssertionError("not stopped")

    with monkeypatch.context() as patch:
        patch.setattr(cli, "_load", load)  # Ctrl-C while the config is read (start-up)
        code, _, err = _cli(capsys, "fit", "-c", CONFIG, f"run.dir={tmp_path}")
    assert code == 130 and "Traceback" not in err
    assert err == (f"stopped by SIGINT during fit, before the first checkpoint (one is saved at the end of each "
                   f"epoch), so there is nothing to resume; start again with: mmix-applied fit -c {CONFIG} "
                   f"run.dir={tmp_path}\n")

    _kill_when(monkeypatch, signal.SIGTERM)
    out_dir = tmp_path / "cmp"
    code, _, err = _cli(capsys, "compare", "-c", CONFIG, "--variants", "none,manifold", "--seeds", "0",
                        "--out", out_dir, *B, "train.max_epochs=1")
    assert code == 143 and "Traceback" not in err, err
    assert err.startswith(f"stopped by SIGTERM during compare; the runs finished so far are kept in '{out_dir}'"), err
    assert "the same command continues the comparison: mmix-applied compare -c" in err


def _run_cli(args: list[str], tmp_path: Path, *, when, signum: int, group: bool, timeout: float = 300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmix_applied.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not when() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            (os.killpg(proc.pid, signum) if group else proc.send_signal(signum))
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_with_loader_workers_prints_no_traceback(tmp_path):
    """Ctrl-C in a terminal signals every process of the group: the loader workers too."""
    run = tmp_path / "w"
    last = run / "checkpoints" / "last.ckpt"
    args = ["fit", "-c", str(CONFIG), *B, "data.num_workers=2", "train.max_epochs=3", "train.limit_train_batches=30",
            "data.labels_per_class=20", f"run.dir={tmp_path}", "run.name=w"]
    code, _, err = _run_cli(args, tmp_path, when=last.exists, signum=signal.SIGINT, group=True)
    if code == 0:
        pytest.skip("the run finished before the signal landed")
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert f"stopped by SIGINT during fit; the last checkpoint is '{last}'" in err


@pytest.mark.slow
def test_sigterm_to_a_ddp_fit_stops_every_process_with_143(tmp_path):
    run = tmp_path / "ddp"
    last = run / "checkpoints" / "last.ckpt"
    args = ["fit", "-c", str(CONFIG), *B, "train.devices=2", "train.strategy=ddp", "train.max_epochs=4",
            "train.limit_train_batches=20", "data.labels_per_class=20", f"run.dir={tmp_path}", "run.name=ddp"]
    code, _, err = _run_cli(args, tmp_path, when=last.exists, signum=signal.SIGTERM, group=False, timeout=420)
    if code == 0:
        pytest.skip("the run finished before the signal landed")
    assert code == 143, err[-3000:]
    assert err.count("stopped by SIGTERM") == 1, err[-3000:]  # the launching process reports; rank 1 is quiet
    assert f"continue with: mmix-applied fit --resume {run}" in err
    assert not (run / "fit_summary.json").exists()
