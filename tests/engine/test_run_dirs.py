"""Run directories and checkpoints lose nothing. One fit per run directory (a lock),
predictions never replace a checkpoint, a resume is checked before anything is written, no
checkpoint is saved with NaN/Inf weights, damaged or foreign checkpoints are named, and a
read-only folder or a full disk is reported with the path and the cause (exit 2)."""

import errno
import os
import shutil
import subprocess
import sys

import pytest
import torch

from mmix_applied.cli import main
from mmix_applied.config import load_config
from mmix_applied.engine import fit, load_checkpoint
from mmix_applied.engine.checkpoints import AtomicCheckpointIO, CheckpointError, read_run_checkpoint
from mmix_applied.engine.guards import NonFiniteWeightsError, first_nonfinite
from mmix_applied.engine.rundir import RunLock, RunLockedError, RunWriteError, prediction_output
from tests.helpers import ROOT
from tests.helpers.bad_inputs import no_network, says, snapshot  # noqa: F401  (autouse fixture)

CONFIG = ROOT / "configs" / "classification.yaml"
B = ["model.name=test_resnet", "train.accelerator=cpu", "train.devices=1", "data.labels_per_class=2",
     "data.batch_size=4", "train.max_epochs=1", "train.limit_train_batches=2", "train.limit_val_batches=1",
     "train.limit_test_batches=1", "train.enable_progress_bar=false", "train.loggers=[]"]


def _config(root, name, *extra):
    return load_config(CONFIG, [*B, f"run.dir={root}", f"run.name={name}", *extra])


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny classification run; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("runs")
    return fit(_config(root, "base"))


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "runs" / "base"
    shutil.copytree(trained, copy)
    return copy


# --------------------------------------------------------------------------- the run lock
def test_run_lock_is_exclusive_names_the_holder_and_takes_over_a_stale_one(tmp_path):
    (tmp_path / ".lock").write_text("999999999\n")  # left by a dead process: not locked, taken over
    first = RunLock(tmp_path)
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    with pytest.raises(RunLockedError) as err:  # flock: two open files conflict even in one process
        RunLock(tmp_path)
    says(err, str(tmp_path), f"PID {os.getpid()}", "choose another run.name")
    first.release()
    RunLock(tmp_path).release()  # free again


def test_fit_into_a_locked_run_directory_fails_at_once_and_writes_nothing(tmp_path):
    held = RunLock(tmp_path / "dup")
    before = snapshot(tmp_path)
    try:
        with pytest.raises(RunLockedError) as err:
            fit(_config(tmp_path, "dup"))
    finally:
        held.release()
    says(err, f"PID {os.getpid()}")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_two_concurrent_fits_into_one_run_directory(tmp_path):
    """The real race: two processes, seeds 1 and 2; one trains, the other exits 2 naming its PID."""
    args = [sys.executable, "-m", "mmix_applied.cli", "fit", "-c", str(CONFIG), *B, f"run.dir={tmp_path}",
            "run.name=dup", "train.limit_train_batches=20", "data.labels_per_class=20"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*args, f"seed={s}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for s in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "is in use by another run (PID" in loser
    winner_pid = next(p.pid for p, (code, _) in zip(procs, results) if code == 0)
    assert f"PID {winner_pid}" in loser


# --------------------------------------------------------------------------- predict --output
def test_prediction_output_never_replaces_a_checkpoint_or_a_foreign_file(tmp_path):
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {}}, ckpt)
    disguised = tmp_path / "weights.bin"  # a checkpoint by content, not by name
    torch.save({"w": torch.ones(2)}, disguised)
    for path in (ckpt, disguised):
        with pytest.raises(FileExistsError) as err:
            prediction_output(path, run_dir=run_dir, overwrite=True)
        says(err, str(path), "never replace a checkpoint")
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own,table\n")
    with pytest.raises(FileExistsError) as err:
        prediction_output(notes, run_dir=run_dir)
    says(err, str(notes), "--overwrite")
    assert prediction_output(notes, run_dir=run_dir, overwrite=True) == notes
    ours = tmp_path / "old.csv"
    ours.write_text("id,target,predicted,confidence,p_0\n")
    assert prediction_output(ours, run_dir=run_dir) == ours
    assert prediction_output(tmp_path, run_dir=run_dir) == tmp_path / "predictions.csv"
    assert prediction_output(None, run_dir=run_dir) == run_dir / "predictions.csv"


def test_cli_predict_onto_the_runs_checkpoint_keeps_it_and_into_a_folder_writes_there(run, tmp_path, capsys):
    last = run / "checkpoints" / "last.ckpt"
    before = snapshot(run)
    code, _, err = _cli(capsys, "predict", "--checkpoint", run, "--output", last, "--overwrite")
    assert code == 2
    says(err, str(last), "never replace a checkpoint")
    assert snapshot(run) == before
    folder = tmp_path / "out"
    folder.mkdir()
    code, out, _ = _cli(capsys, "predict", "--checkpoint", run, "--output", folder, "train.limit_predict_batches=1")
    assert code == 0 and (folder / "predictions.csv").read_text().startswith("id,target,predicted")
    assert str(folder / "predictions.csv") in out


# --------------------------------------------------------------------------- resume checks
def test_resume_of_a_run_of_another_recipe_writes_nothing(run, capsys):
    before = snapshot(run)
    code, _, err = _cli(capsys, "fit", "-c", ROOT / "configs" / "handwriting.yaml", "--resume", run,
                        "train.accelerator=cpu")
    assert code == 2
    says(err, str(run / "checkpoints" / "last.ckpt"), "recipe='classification' (expected 'handwriting')")
    assert snapshot(run) == before


def test_resume_refuses_keys_that_cannot_change_and_lists_them(run, capsys):
    before = snapshot(run)
    code, _, err = _cli(capsys, "fit", "--resume", run, "optim.lr=0.5", "mix.alpha=0.4", "train.max_epochs=2")
    assert code == 2
    says(err, "optim.lr: 0.002 -> 0.5", "mix.alpha: 0.2 -> 0.4", "cannot change on resume", "train.max_epochs")
    assert "train.max_epochs:" not in str(err)  # allowed to change
    assert snapshot(run) == before


# --------------------------------------------------------------------------- checkpoint errors
def _tampered(run, tmp_path, change):
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    change(state)
    path = tmp_path / "other" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    shutil.copy(run / "config.yaml", path.parent.parent / "config.yaml")
    torch.save(state, path)
    return path


def test_checkpoint_with_a_tampered_shape_names_the_tensor_and_both_shapes(run, tmp_path, capsys):
    def widen(state):
        state["state_dict"]["model.fc.weight"] = torch.zeros(7, 3)

    path = _tampered(run, tmp_path, widen)
    code, _, err = _cli(capsys, "test", "--checkpoint", path)
    assert code == 2
    expected = list(load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]["model.fc.weight"].shape)
    says(err, str(path), "model.fc.weight: checkpoint [7, 3], model " + str(expected))


def test_checkpoint_of_another_model_or_a_bare_state_dict_or_an_empty_file(run, tmp_path):
    ckpt = run / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError) as err:
        read_run_checkpoint(ckpt, _config(tmp_path, "x", "model.name=resnet10t"))
    says(err, "model.name='test_resnet' (expected 'resnet10t')")
    bare = tmp_path / "bare.pth"
    torch.save(load_checkpoint(ckpt)["state_dict"], bare)
    with pytest.raises(CheckpointError) as err:
        read_run_checkpoint(bare, _config(tmp_path, "x"))
    says(err, str(bare), "a bare state_dict", "model.pretrained=")
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(empty)
    says(err, str(empty), "empty (0 bytes)")


def test_unsafe_checkpoint_is_named_unsafe_and_torch_advice_is_not_passed_on(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    says(err, str(path), "is not a safe checkpoint", "GLOBAL")
    assert "weights_only=False" not in str(err.value) and "weights_only` set to `False" not in str(err.value)


# --------------------------------------------------------------------------- non-finite training
def test_first_nonfinite_names_the_first_bad_tensor():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    assert first_nonfinite(model) is None
    with torch.no_grad():
        model[1].running_var[1:] = float("inf")
    assert first_nonfinite(model) == ("1.running_var", 2, 3)
    with torch.no_grad():
        model[0].bias[0] = float("nan")
    assert first_nonfinite(model) == ("0.bias", 1, 3)


def test_weights_turning_inf_stop_the_fit_naming_the_parameter_and_keep_the_previous_checkpoint(
        tmp_path, monkeypatch):
    """Deterministic divergence: in epoch 1 a step leaves ``fc.bias`` Inf (the loss is then NaN and
    skipped, as with ``optim.lr=1e6 train.nonfinite_loss=skip``); epoch 0's ``last.ckpt`` must stay."""
    from mmix_applied.engine.module import MixupModule

    real, calls = MixupModule.training_step, []

    def training_step(self, batch, batch_idx):
        calls.append(batch_idx)
        if len(calls) == 3:
            with torch.no_grad():
                self.model.fc.bias.fill_(float("inf"))
        return real(self, batch, batch_idx)

    monkeypatch.setattr(MixupModule, "training_step", training_step)
    config = _config(tmp_path, "inf", "train.nonfinite_loss=skip", "train.max_epochs=3",
                     "train.limit_val_batches=0", "optim.lr=0.01")
    with pytest.raises(NonFiniteWeightsError) as err:
        fit(config)
    says(err, "at the end of an epoch", "epoch 1", "first bad parameter 'model.fc.bias' holds 10 NaN/Inf of 10",
         "optim.lr=0.01 -> 0.0001", "previous checkpoint was kept")
    state = load_checkpoint(tmp_path / "inf" / "checkpoints" / "last.ckpt")
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_nan_validation_loss_from_diverged_weights_stops_before_any_checkpoint(tmp_path, monkeypatch):
    """``optim.lr=1e6`` grows the weights to ~1e24 with finite training losses and a NaN validation
    loss; here made deterministic: the last step of epoch 0 leaves ``fc.weight`` at 1e38 (finite)."""
    from mmix_applied.engine.module import MixupModule

    def after_step(self, outputs, batch, batch_idx):  # after the optimizer step
        if self.current_epoch == 0 and batch_idx == 1:
            with torch.no_grad():
                self.model.fc.weight.fill_(1e38)

    monkeypatch.setattr(MixupModule, "on_train_batch_end", after_step, raising=False)
    with pytest.raises(NonFiniteWeightsError) as err:
        fit(_config(tmp_path, "lr", "optim.lr=1e6"))
    says(err, "validation loss is nan", "the largest weight is 1e+38, in 'model.fc.weight'", "optim.lr=1e+06")
    assert not list((tmp_path / "lr").rglob("*.ckpt"))


# --------------------------------------------------------------------------- read-only folder, full disk
def test_full_disk_during_a_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    real_save, saves = torch.save, []

    def save(obj, fh, *args, **kwargs):
        saves.append(1)
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    code, _, err = _cli(capsys, "fit", "-c", CONFIG, *B, f"run.dir={tmp_path}", "run.name=full",
                        "train.max_epochs=2", "train.limit_val_batches=0")
    assert code == 2
    last = tmp_path / "full" / "checkpoints" / "last.ckpt"
    says(err, str(last), "No space left on device", "previous last.ckpt is kept", "free some space")
    assert load_checkpoint(last)["epoch"] == 0
    assert not list(last.parent.glob(".*.tmp"))


def test_torch_writer_error_is_reported_with_the_path_and_free_space(tmp_path, monkeypatch):
    def save(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(RunWriteError) as err:
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1)}, tmp_path / "last.ckpt")
    says(err, str(tmp_path / "last.ckpt"), "unexpected pos", "MiB free there")


def _read_only(monkeypatch):
    import mmix_applied.utils.atomic as io

    def refuse(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)


def test_read_only_run_directory_in_test_prints_the_metrics_then_the_error(run, monkeypatch, capsys):
    _read_only(monkeypatch)
    code, out, err = _cli(capsys, "test", "--checkpoint", run)
    assert code == 2
    rows = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"test/acc", "test/loss"} <= rows  # the test table, printed before the write that fails
    says(err, str(run / "test_metrics.json"), "[Errno 30] Read-only file system", "writable folder")


@pytest.mark.parametrize("command", ["fit", "predict"])
def test_read_only_run_directory_in_fit_and_predict(run, tmp_path, monkeypatch, capsys, command):
    _read_only(monkeypatch)
    if command == "fit":
        code, _, err = _cli(capsys, "fit", "-c", CONFIG, *B, f"run.dir={tmp_path}", "run.name=ro")
        target = tmp_path / "ro" / "config.yaml"
    else:
        code, _, err = _cli(capsys, "predict", "--checkpoint", run, "train.limit_predict_batches=1")
        target = run / "predictions.csv"
    assert code == 2
    says(err, str(target), "Read-only file system", "writable folder")


def test_skipped_nan_steps_leave_the_running_statistics_untouched(tmp_path, monkeypatch):
    """``nonfinite_loss=skip``: a skipped step's forward would put NaN into BatchNorm's running stats."""
    import lightning.pytorch as pl

    from mmix_applied.tasks.classification import ClassificationRecipe

    monkeypatch.setattr(ClassificationRecipe, "split_batch", lambda self, b: (b[0] * float("nan"), b[1]))
    config = _config(tmp_path, "nan", "train.nonfinite_loss=skip", "train.limit_val_batches=0")
    run_dir = fit(config)
    pl.seed_everything(config.seed, verbose=False)
    init = ClassificationRecipe(config).build_model().state_dict()
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert state["mmix"]["skipped_steps"] == 2
    assert torch.equal(state["state_dict"]["model.conv1.1.running_mean"], init["conv1.1.running_mean"])
