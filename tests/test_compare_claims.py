"""compare shared by several processes and re-run (issue #22): a run another process holds is left to it
and waited for, two processes on one --out split the runs, a re-run with changed settings is refused
with the changed keys, and a read-only or oddly named --out is handled. Each of these failed on the
compare before the claims (tests/test_compare.py covers a run killed after its fit)."""

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mmix_applied import compare as compare_module
from mmix_applied.cli import main
from mmix_applied.compare import compare
from mmix_applied.config import load_config, save_config
from mmix_applied.engine.claims import claim
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
TINY = ["model.name=test_resnet", "train.max_epochs=1", "train.limit_train_batches=1", "train.limit_val_batches=1",
        "train.limit_test_batches=1", "train.limit_predict_batches=1", "data.labels_per_class=2", "data.batch_size=8",
        "data.eval_batch_size=16", "train.accelerator=cpu", "train.devices=1", "train.enable_progress_bar=false",
        "train.loggers=[csv]", "train.log_every_n_steps=1"]


def _stand_in(monkeypatch, calls):
    """fit/test replaced by what they leave on disk (the plumbing is under test, not the training)."""

    def fit(config, *, resume=None):
        run = Path(config.run.dir) / config.run.name
        calls.append(("fit", run.name))
        save_config(config, run / "config.yaml")
        (run / "fit_summary.json").write_text(json.dumps({"last": {"metrics": {"val/acc": 0.5}}}))
        return run

    def test(config, *, checkpoint):
        run, which = str(checkpoint).rsplit(":", 1)
        assert which == "last", checkpoint  # compare tests each run's last checkpoint, as documented
        calls.append(("test", Path(run).name))
        metrics = {"test/acc": 0.5, "test/nll": 1.0}
        (Path(run) / "test_metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(compare_module, "fit", fit)
    monkeypatch.setattr(compare_module, "test", test)


def test_a_run_held_by_another_process_is_left_to_it_then_waited_for(tmp_path, monkeypatch):
    calls, progress, waits = [], [], []
    _stand_in(monkeypatch, calls)
    held = claim(tmp_path / ".claims", "none-seed0")  # "another process" (its own lock file, this PID)

    def wait(seconds):  # the holder finishes while compare waits
        waits.append(seconds)
        held.release()

    monkeypatch.setattr(compare_module, "_wait", wait, raising=False)  # (the old compare had no wait)
    compare(CONFIG, variants=("none", "manifold"), seeds=(0,), overrides=TINY, out_dir=tmp_path,
            predictions=False, log=progress.append)
    assert progress[0].startswith(f"[1/2] none seed 0 is being run by PID {os.getpid()} on {socket.gethostname()} "
                                  "(since ") and progress[0].endswith("; doing the other runs first, then waiting for it")
    assert progress[1].startswith("[2/2] manifold seed 0 …") and progress[2].startswith("[1/2] none seed 0 …")
    assert len(waits) == 1 and calls == [("fit", "manifold-seed0"), ("test", "manifold-seed0"), ("fit", "none-seed0"),
                                        ("test", "none-seed0")]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["variant"], r["seed"]) for r in rows] == [("none", 0), ("manifold", 0)]


def test_a_rerun_with_changed_overrides_is_refused_with_the_changed_keys(tmp_path, monkeypatch, capsys):
    calls = []
    _stand_in(monkeypatch, calls)
    compare(CONFIG, variants=("none",), seeds=(0,), overrides=TINY, out_dir=tmp_path, predictions=False,
            log=lambda line: None)
    argv = ["compare", "-c", str(CONFIG), "--variants", "none", "--seeds", "0", "--out", str(tmp_path), *TINY,
            "data.labels_per_class=3", "train.max_epochs=2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds runs made with other settings" in err and "Traceback" not in err
    assert "data.labels_per_class: 2 -> 3 (in none-seed0)" in err and "train.max_epochs: 1 -> 2" in err
    assert "pass another --out to start a new comparison" in err
    assert calls == [("fit", "none-seed0"), ("test", "none-seed0")]  # nothing ran for the refused command
    # the same settings again: resumed as before, nothing rerun
    compare(CONFIG, variants=("none",), seeds=(0,), overrides=TINY, out_dir=tmp_path, predictions=False,
            log=lambda line: None)
    assert len(calls) == 2


def test_a_read_only_out_is_named_without_a_traceback(tmp_path, monkeypatch, capsys):
    import mmix_applied.utils.atomic as io

    out = tmp_path / "ro"
    real = io.tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if str(dir).startswith(str(out)):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    calls = []
    _stand_in(monkeypatch, calls)
    assert main(["compare", "-c", str(CONFIG), "--variants", "none", "--seeds", "0", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: RunWriteError: cannot write into --out {str(out)!r}: [Errno 30] Read-only file system; pass a "
                          "writable folder as --out") and "Traceback" not in err
    assert calls == []


def test_an_out_folder_with_yaml_characters_is_used_as_given(tmp_path, monkeypatch):
    calls = []
    _stand_in(monkeypatch, calls)
    out = tmp_path / "a: b [x] #1"
    report = compare(CONFIG, variants=("none",), seeds=(0,), overrides=TINY, out_dir=out, predictions=False,
                     log=lambda line: None)
    assert report == out / "report.md" and (out / "runs" / "none-seed0" / "test_metrics.json").is_file()
    assert load_config(out / "runs" / "none-seed0" / "config.yaml").run.dir == str(out / "runs")


@pytest.mark.slow
def test_two_compare_processes_on_one_out_split_the_runs(tmp_path):
    argv = [sys.executable, "-m", "mmix_applied.cli", "compare", "-c", str(CONFIG), "--variants", "none,manifold",
            "--seeds", "0,1", "--out", str(tmp_path), *TINY]
    procs = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=1200)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ran = [line.split("]")[1].split("…")[0].strip() for out in outputs for line in out.splitlines()
           if line.startswith("[") and "…" in line]
    assert sorted(ran) == ["manifold seed 0", "manifold seed 1", "none seed 0", "none seed 1"]  # each run once
    assert all(f"report: {tmp_path / 'report.md'}" in out for out in outputs)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4
