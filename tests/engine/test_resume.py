"""Killed or stopped runs resume exactly: weights, optimizer, schedule, mixer plans, data order,
augmentation and dropout all continue as in an uninterrupted run with the same seed."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmix_applied.config import load_config
from mmix_applied.engine import fit, load_checkpoint, resolve_checkpoint
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
SETTINGS = [
    "model.name=test_resnet", "model.options={drop_rate: 0.3}", "mix.prob=0.7", "data.augment=light",
    "train.limit_val_batches=1", "data.batch_size=8", "data.eval_batch_size=16", "train.accelerator=cpu",
    "train.devices=1", "train.deterministic=true", "train.enable_progress_bar=false", "train.loggers=[]",
    "seed=3",
]


def _config(root, name, *extra):
    return load_config(CONFIG, [*SETTINGS, f"run.dir={root}", f"run.name={name}", *extra])


def _weights(run):
    return load_checkpoint(Path(run) / "checkpoints" / "last.ckpt")["state_dict"]


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


SMALL = ["train.max_epochs=2", "train.limit_train_batches=3", "data.labels_per_class=3"]


def test_resume_from_epoch_checkpoint_is_exact(tmp_path):
    full = fit(_config(tmp_path, "full", *SMALL, "train.save_top_k=-1"))
    first = full / "checkpoints" / "epoch000.ckpt"
    assert load_checkpoint(first)["epoch"] == 0

    resumed = tmp_path / "resumed" / "checkpoints"
    resumed.mkdir(parents=True)
    shutil.copy(first, resumed / "last.ckpt")
    fit(_config(tmp_path, "resumed", *SMALL), resume="last")
    assert _max_diff(_weights(full), _weights(tmp_path / "resumed")) == 0.0
    assert load_checkpoint(resumed / "last.ckpt")["global_step"] == 6

    # The mixer is saved by MixerCheckpoint (the engine's Trainer has it), under the model's name.
    state = load_checkpoint(first)
    assert list(state["mmix_mixers"]) == ["model"] and "mixer" not in state["mmix"]

    # A checkpoint of the engine's older layout (the mixer under ckpt["mmix"]["mixer"] / ["rank_mixer"])
    # still resumes exactly: the old keys are read once, when the Trainer loads it.
    old = tmp_path / "old" / "checkpoints"
    old.mkdir(parents=True)
    legacy = load_checkpoint(first)
    saved = legacy.pop("mmix_mixers")["model"]
    legacy["mmix"]["mixer"], legacy["mmix"]["rank_mixer"] = saved["state"], saved["rank_generators"]
    torch.save(legacy, old / "last.ckpt")
    fit(_config(tmp_path, "old", *SMALL), resume=tmp_path / "old")
    assert _max_diff(_weights(full), _weights(tmp_path / "old")) == 0.0
    assert "mixer" not in load_checkpoint(old / "last.ckpt")["mmix"]  # rewritten in the current layout

    # Control: without the mixer's generator state the continuation differs (the test can fail).
    control = tmp_path / "control" / "checkpoints"
    control.mkdir(parents=True)
    del state["mmix_mixers"]
    torch.save(state, control / "last.ckpt")
    with pytest.warns(UserWarning, match="holds no mixer state"):
        fit(_config(tmp_path, "control", *SMALL), resume=tmp_path / "control")
    assert _max_diff(_weights(full), _weights(tmp_path / "control")) > 0


def test_resume_resolution_and_existing_run_guard(tmp_path):
    cfg = _config(tmp_path, "r", "train.max_epochs=1", "train.limit_train_batches=2", "data.labels_per_class=2",
                  "train.limit_val_batches=0")
    run = fit(cfg)
    last = run / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint("last", cfg) == last
    assert resolve_checkpoint(run) == last
    assert resolve_checkpoint(last) == last
    cfg_unnamed = _config(tmp_path, "x")
    cfg_unnamed.run.name = None
    assert resolve_checkpoint("last", cfg_unnamed) == last
    with pytest.raises(FileExistsError, match="--resume last"):
        fit(_config(tmp_path, "r", "train.max_epochs=1", "data.labels_per_class=2"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint("last", _config(tmp_path / "empty", "nothing"))
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        resolve_checkpoint(tmp_path / "nope.ckpt")


@pytest.fixture
def one_thread():
    """The killed run is a subprocess with one thread; the in-process runs must use one too, or
    float reductions split differently across threads and the weights differ in the last bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path, one_thread):
    """SIGKILL a CPU fit after its first checkpoint, resume, compare weights."""
    long = ["train.max_epochs=3", "train.limit_train_batches=40", "data.labels_per_class=40"]
    args = [*SETTINGS, *long, f"run.dir={tmp_path}", "run.name=killed"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmix_applied.cli", "fit", "-c", str(CONFIG), *args],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while not last.exists():
            if proc.poll() is not None:
                pytest.fail(f"fit exited before writing a checkpoint: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 240 s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_at = load_checkpoint(last)["epoch"]
    if killed_at >= 2:
        pytest.skip("the run finished before the kill landed (machine too fast for this test's sizes)")
    # last.ckpt is never torn: a kill during a save can only leave a stray temporary file beside it
    assert load_checkpoint(last)["state_dict"]

    fit(_config(tmp_path, "killed", *long), resume="last")
    reference = fit(_config(tmp_path, "reference", *long))
    assert _max_diff(_weights(reference), _weights(tmp_path / "killed")) == 0.0
    assert load_checkpoint(last)["epoch"] == 2
    assert not list(last.parent.glob(".*.tmp"))


def test_resuming_a_run_with_nothing_left_to_train_still_reports_its_last_validation(tmp_path):
    """A kill after the last epoch's checkpoint, before its validation ended: the resumed fit trains
    nothing, and validates the final weights once so ``fit_summary.json`` has its last figures."""
    import json

    run = fit(_config(tmp_path, "done", *SMALL))
    before = json.loads((run / "fit_summary.json").read_text())["last"]
    weights = _weights(run)
    (run / "fit_summary.json").unlink()
    fit(_config(tmp_path, "done", *SMALL), resume="last")
    after = json.loads((run / "fit_summary.json").read_text())["last"]
    assert _max_diff(weights, _weights(run)) == 0.0  # nothing was trained
    assert after["metrics"] and after["metrics"].keys() == before["metrics"].keys()
    for key, value in before["metrics"].items():  # the same weights on the same batches
        assert after["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
