"""Issue 22 (round 3), runs and their files: a resume keeps the run's log and a refused one changes
nothing; run names stay inside run.dir; the run lock follows no link; a full disk, a deleted run
directory and a failed PID write are named; written files get the umask's permissions."""

from __future__ import annotations

import csv
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys

import pytest
import torch

from mmix_applied.cli import main
from mmix_applied.engine.checkpoints import AtomicCheckpointIO
from mmix_applied.engine.rundir import RunLock, RunWriteError, write_error
from mmix_applied.utils.atomic import atomic_write_text
from tests.helpers import ROOT
from tests.helpers.bad_inputs import no_network, says, snapshot  # noqa: F401  (autouse fixture)

CONFIG = ROOT / "configs" / "classification.yaml"
B = ["model.name=test_resnet", "train.accelerator=cpu", "train.devices=1", "data.labels_per_class=2",
     "data.batch_size=4", "train.limit_train_batches=2", "train.limit_val_batches=1", "train.deterministic=true",
     "train.enable_progress_bar=false", "train.loggers=[csv]", "train.log_every_n_steps=1", "seed=4"]


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(run) -> list[dict[str, str]]:
    with open(run / "logs" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- resume keeps the log
def test_a_resumed_run_keeps_its_metrics_csv_and_equals_an_uninterrupted_one(tmp_path, capsys, monkeypatch):
    """Was: Lightning's CSV logger deleted metrics.csv on resume (48 rows became 1). A run stopped in
    its second epoch and resumed has the log of an uninterrupted run: the rows up to the checkpoint
    kept, the lost part's rows (logged again by the resumed run) not twice."""
    from mmix_applied.tasks.classification import ClassificationRecipe

    assert _cli(capsys, "fit", "-c", CONFIG, *B, "train.max_epochs=2", f"run.dir={tmp_path}", "run.name=full")[0] == 0
    real, seen = ClassificationRecipe.split_batch, []
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"

    def stop_in_epoch_1(self, batch):
        if last.exists():
            seen.append(1)
            if len(seen) == 2:  # the second training batch of epoch 1
                os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch)

    monkeypatch.setattr(ClassificationRecipe, "split_batch", stop_in_epoch_1)
    code, _, err = _cli(capsys, "fit", "-c", CONFIG, *B, "train.max_epochs=2", f"run.dir={tmp_path}", "run.name=cut")
    assert code == 143, err
    monkeypatch.undo()
    stopped = _rows(tmp_path / "cut")
    assert any(float(r["step"]) >= 2 for r in stopped)  # rows of the lost part of epoch 1 were logged
    assert _cli(capsys, "fit", "--resume", tmp_path / "cut")[0] == 0
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "full")


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["fit", "-c", str(CONFIG), *B, "train.max_epochs=3", "train.limit_train_batches=1",
                 f"run.dir={root}", "run.name=three"]) == 0
    return root / "three"


@pytest.mark.parametrize("limit", ["train.max_epochs=2", "train.max_epochs=1", "train.max_steps=2"])
def test_a_resume_past_the_limits_is_refused_before_anything_changes(three_epochs, tmp_path, capsys, limit):
    """Was: max_epochs=2 trained nothing but rewrote config.yaml and emptied metrics.csv; max_epochs=1 was
    Lightning's MisconfigurationException with the CLI's hint about GPUs, after the same damage."""
    run = tmp_path / "three"
    shutil.copytree(three_epochs, run)
    before = snapshot(run)
    code, _, err = _cli(capsys, "fit", "--resume", run, limit)
    assert code == 2
    says(err, f"--resume '{run / 'checkpoints' / 'last.ckpt'}': the checkpoint has trained past {limit}",
         f"nothing was changed in '{run}'", "mmix-applied test --checkpoint")
    assert "GPU" not in err and "accelerator" not in err
    assert snapshot(run) == before


# --------------------------------------------------------------------------- run.name
@pytest.mark.parametrize("name", ["../../escaped", "/abs/run", "a/../../b", "."])
def test_a_run_name_outside_run_dir_is_refused(tmp_path, capsys, name):
    runs = tmp_path / "deep" / "runs"
    name = str(tmp_path / "abs" / "run") if name == "/abs/run" else name
    code, _, err = _cli(capsys, "fit", "-c", CONFIG, *B, "train.max_epochs=1", f"run.dir={runs}", f"run.name={name}")
    assert code == 2
    says(err, "config key 'run.name'", repr(name), "inside run.dir")
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # nothing anywhere: not even run.dir


# --------------------------------------------------------------------------- the run lock
def test_the_run_lock_follows_no_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(FileExistsError) as err:
        RunLock(run)
    says(err, f"run lock '{run / '.lock'}' is a symbolic link", "remove it")
    (run / ".lock").unlink()
    os.link(victim, run / ".lock")  # a hard link: a regular file, but someone else's
    with pytest.raises(FileExistsError) as err:
        RunLock(run)
    says(err, "is a hard link (2 names for one file)")
    assert victim.read_text() == "precious\n"


def test_a_full_disk_while_the_run_lock_writes_its_pid_is_one_line(tmp_path, monkeypatch, capsys):
    def pwrite(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", pwrite)
    code, _, err = _cli(capsys, "fit", "-c", CONFIG, *B, "train.max_epochs=1", f"run.dir={tmp_path}", "run.name=x")
    assert code == 2 and "Traceback" not in err
    says(err, f"cannot write '{tmp_path / 'x' / '.lock'}': [Errno 28] No space left on device: the disk is full",
         "free some space")
    monkeypatch.undo()
    RunLock(tmp_path / "x").release()  # the lock was released: free again


# --------------------------------------------------------------------------- full disk, deleted folder
def _can_mount_tmpfs(where) -> bool:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


def test_a_real_full_disk_is_named_with_the_space_free_when_it_failed(tmp_path):
    """A 2 MiB tmpfs and a 4 MB checkpoint: torch's writer fails with 'unexpected pos' (the ENOSPC behind it).
    Was: "the writer failed ...; 2.0 MiB free there" (measured after the partial file was removed)."""
    disk = tmp_path / "disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    try:
        with pytest.raises(RunWriteError) as err:
            AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1_000_000)}, disk / "run" / "last.ckpt")
        says(err, "[Errno 28] No space left on device: the disk is full (0.0 MiB free there when the write failed, "
                  "2.0 MiB after its partial file was removed)", "free some space")
        assert not list((disk / "run").iterdir())
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_without_an_error_number_is_named_from_the_space_left_when_it_failed(tmp_path, monkeypatch):
    """The same without privileges: torch's writer error alone, and a disk with no space left while the
    partial file exists (5 MiB once it is removed)."""
    import mmix_applied.engine.rundir as rundir
    import mmix_applied.utils.atomic as atomic

    def usage(folder):
        partial = any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        return shutil._ntuple_diskusage(10 * 2**20, 0, 0 if partial else 5 * 2**20)

    def save(obj, fh, *args, **kwargs):
        fh.write(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(atomic.shutil, "disk_usage", usage)
    monkeypatch.setattr(rundir.shutil, "disk_usage", usage)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(RunWriteError) as err:
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1)}, tmp_path / "last.ckpt")
    says(err, "the disk is full (torch's writer: [enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598)"
              " (0.0 MiB free there when the write failed, 5.0 MiB after its partial file was removed)")


def test_a_run_directory_deleted_mid_run_is_named_without_a_thread_traceback(tmp_path, monkeypatch, capsys):
    """Was: TensorBoard's writer thread printed a FileNotFoundError traceback, then the CLI said
    "TypeError: argument should be a str ... not <class 'bytes'>" (or blamed the disk)."""
    from mmix_applied.tasks.classification import ClassificationRecipe

    run = tmp_path / "gone"
    real, done = ClassificationRecipe.split_batch, []

    def delete_once(self, batch):
        if not done and (run / "checkpoints" / "last.ckpt").exists():
            done.append(1)
            shutil.rmtree(run)
        return real(self, batch)

    monkeypatch.setattr(ClassificationRecipe, "split_batch", delete_once)
    code, _, err = _cli(capsys, "fit", "-c", CONFIG, *B, "train.max_epochs=3", "train.loggers=[tensorboard]",
                        f"run.dir={tmp_path}", "run.name=gone")
    assert done and code == 2, err
    assert "Traceback" not in err and "Exception in thread" not in err and "bytes" not in err, err
    says(err, f"the folder '{run}' no longer exists (it was deleted or moved while the run was writing to it)")
    assert "disk" not in err


def test_write_error_names_a_vanished_folder_and_takes_bytes_paths(tmp_path):
    gone = tmp_path / "run" / "tb" / "events"
    says(write_error(FileNotFoundError(errno.ENOENT, "No such file", os.fsencode(gone)), os.fsencode(gone)),
         f"cannot write '{gone}'", f"the folder '{tmp_path / 'run'}' no longer exists")


# --------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomically_written_files_get_the_umasks_permissions(tmp_path, umask):
    """Was: 0600 whatever the umask (mkstemp's mode), so colleagues could not read a shared run."""
    old = os.umask(umask)
    try:
        new = atomic_write_text(tmp_path / "new.json", "{}")
        kept = tmp_path / "kept.yaml"
        kept.write_text("a: 1\n")
        kept.chmod(0o640)
        atomic_write_text(kept, "a: 2\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "a: 2\n"  # a replaced file keeps its mode


def test_a_checkpoint_and_config_are_readable_by_the_group_under_umask_022(tmp_path):
    code = subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0o022); from mmix_applied.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", "fit", "-c", str(CONFIG), *B, "train.max_epochs=1",
                           "train.limit_val_batches=0", f"run.dir={tmp_path}", "run.name=m"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stderr[-2000:]
    for name in ("config.yaml", "checkpoints/last.ckpt", "fit_summary.json"):
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == 0o644, name


def test_ctrl_c_inside_torchs_writer_is_an_interrupt_not_a_disk_error(tmp_path, monkeypatch):
    """Library use (no CLI handlers): a KeyboardInterrupt inside torch.save breaks torch's zip writer,
    whose RuntimeError ("unexpected pos") was reported as a write failure hinting at a full disk."""
    import io

    real = torch.save

    class Interrupted(io.RawIOBase):
        calls = 0

        def writable(self):
            return True

        def write(self, data):
            Interrupted.calls += 1
            if Interrupted.calls == 3:
                raise KeyboardInterrupt
            return len(data)

    monkeypatch.setattr(torch, "save", lambda obj, fh, *a, **k: real(obj, Interrupted()))
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(100_000)}, tmp_path / "last.ckpt")
    assert not list(tmp_path.iterdir())
