"""The tune loop on a stand-in for training (tests.helpers.tune_worker): trial values are the mean of
the runs' validation figures, nothing finished is redone, several processes share one study with
no trial run twice, a killed tune resumes, and a study made for something else is refused."""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

import mmix_applied.tune.study as study_module
from mmix_applied.config import load_config
from mmix_applied.tune import StorageError, open_storage, tune
from mmix_applied.tune.backend import open_study
from tests.helpers import ROOT
from tests.helpers.tune_worker import CONFIG, TINY, fake_fit, figure, fits

COMPLETE = optuna.trial.TrialState.COMPLETE


def _study(out, name="classification"):
    return optuna.load_study(study_name=name, storage=open_storage(None, out).storage)


def _tune(out, monkeypatch, **kw):
    monkeypatch.setattr(study_module, "fit", fake_fit)
    kw = {"trials": 4, "seeds": (0, 1), "overrides": TINY, "final": False, "prune": False, "sampler_seed": 0,
          "poll_s": 0.05, "log": lambda line: None, **kw}
    return tune(CONFIG, out_dir=out, **kw)


def test_four_trials_judged_on_the_mean_of_their_seeds_then_nothing_is_redone(tmp_path, monkeypatch):
    report = _tune(tmp_path, monkeypatch)
    study = _study(tmp_path)
    complete = study.get_trials(states=(COMPLETE,))
    assert len(complete) == 4 == len(study.trials)
    for trial in complete:  # the mean over the two paired seeds of the stand-in's figure (an independent formula)
        params = [f"{k}={json.dumps(v) if k != 'mix.points' or v in ('auto', 'all') else [v]}"
                  for k, v in trial.params.items()]
        expected = [figure(load_config(CONFIG, [*TINY, *params, "mix.variant=manifold", f"seed={s}"])) for s in (0, 1)]
        assert trial.value == pytest.approx(sum(expected) / 2)
        assert [trial.user_attrs["seed0"], trial.user_attrs["seed1"]] == pytest.approx(expected)
    assert study.user_attrs["mmix:baseline:seed1"]["val/nll_scaled"] == pytest.approx(1.01)
    runs = fits(tmp_path)
    assert len(runs) == 4 * 2 + 2 and all(len(calls) == 1 for calls in runs.values())  # baseline on both seeds
    assert not list(tmp_path.glob("trials/*/*/checkpoints"))  # removed once each run ended
    text = report.read_text()
    best = study.best_trial
    assert f"**Best on validation:** trial {best.number}" in text and "## Trials" in text
    assert f"| {best.number} | complete | {best.value:.4g} |" in text
    assert "mean 1.005" in text  # the unmixed baseline over seeds 0 and 1
    # the same command again: the study already holds 4 finished trials, nothing trains
    monkeypatch.setattr(study_module, "fit", lambda *a, **k: pytest.fail("a finished run was fitted again"))
    tune(CONFIG, out_dir=tmp_path, trials=4, seeds=(0, 1), overrides=TINY, final=False, prune=False,
         log=lambda line: None)
    # asking for more trials runs only the new ones
    _tune(tmp_path, monkeypatch, trials=6)
    assert len(_study(tmp_path).get_trials(states=(COMPLETE,))) == 6
    assert len(fits(tmp_path)) == 6 * 2 + 2


def test_an_rdb_url_holds_the_study(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    _tune(tmp_path / "out", monkeypatch, trials=2, seeds=(0,), storage=url, study_name="cls")
    study = optuna.load_study(study_name="cls", storage=url)
    assert len(study.get_trials(states=(COMPLETE,))) == 2 and study.user_attrs["mmix:made_for"]["recipe"] == "classification"
    assert not (tmp_path / "out" / "tune.journal").exists() and (tmp_path / "studies.db.claims").is_dir()


@pytest.mark.parametrize("change, words", [
    ({"overrides": [*TINY, "data.labels_per_class=3"]}, ["another config", "data.labels_per_class: '2' -> '3'"]),
    ({"seeds": (0, 2)}, ["another seeds", "[0, 1] -> [0, 2]"]),
])
def test_a_study_made_with_other_settings_is_refused_and_kept(tmp_path, monkeypatch, change, words):
    _tune(tmp_path, monkeypatch, trials=1)
    before = len(_study(tmp_path).trials)
    with pytest.raises(StorageError) as err:
        _tune(tmp_path, monkeypatch, trials=2, **change)
    for word in words:
        assert word in str(err.value), str(err.value)
    assert "choose another --study" in str(err.value)
    assert len(_study(tmp_path).trials) == before  # nothing lost, nothing added


def test_a_study_of_another_recipe_or_not_ours_is_refused(tmp_path, monkeypatch):
    opened = open_storage(None, tmp_path)
    open_study(opened, "shared", direction="maximize", attrs={"recipe": "segmentation", "config": {}, "seeds": [0],
                                                              "space": {}, "objective": "val/mean_dice"})
    with pytest.raises(StorageError, match="holds trials of the 'segmentation' recipe; this config is "
                                           "'classification'. Choose another --study"):
        _tune(tmp_path, monkeypatch, study_name="shared")
    foreign = optuna.create_study(study_name="foreign", storage=opened.storage)
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(StorageError, match="holds 1 trials that mmix-applied tune did not make"):
        _tune(tmp_path, monkeypatch, study_name="foreign")
    assert not list(tmp_path.glob("trials/*/*/fits.jsonl"))  # refused before any run


@pytest.mark.parametrize("spec, words", [
    ("notadb://host/x", ["cannot open --storage 'notadb://host/x'", "RDB URL"]),
    ("postgresql://me:secret@127.0.0.1:1/db", ["me:***@127.0.0.1", "cannot open --storage"]),
    ("sqlite:////no/such/folder/tune.db", ["cannot open --storage 'sqlite:////no/such/folder/tune.db'"]),
    ("{tmp}/missing/tune.journal", ["its folder", "does not exist"]),
    ("{tmp}", ["is a folder"]),
    ("{tmp}/notes.txt", ["cannot open --storage", "as an Optuna journal file: JSONDecodeError"]),
])
def test_a_storage_that_cannot_be_opened_is_named(tmp_path, spec, words):
    (tmp_path / "notes.txt").write_text("not a journal\n")
    spec = spec.format(tmp=tmp_path)
    with pytest.raises(StorageError) as err:
        open_storage(spec, tmp_path)
    for word in words:
        assert word in str(err.value), str(err.value)
    assert "secret" not in str(err.value)


def test_the_cli_prints_one_line_for_a_bad_storage_and_for_a_missing_optuna(tmp_path, monkeypatch, capsys):
    from mmix_applied.cli import main
    from mmix_applied.tune import backend

    argv = ["tune", "-c", str(CONFIG), "--trials", "2", "--out", str(tmp_path), *TINY]
    assert main([*argv, "--storage", "notadb://x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: StorageError: cannot open --storage 'notadb://x'") and "Traceback" not in err
    monkeypatch.setattr(backend, "optuna", None)
    assert main(argv) == 2
    assert "pip install 'mmix-applied[tune]'" in capsys.readouterr().err


def test_the_package_imports_without_optuna_and_says_how_to_get_it():
    code = ("import sys; sys.modules['optuna'] = None\n"
            "import mmix_applied, mmix_applied.tune, mmix_applied.cli.main\n"
            "try:\n    mmix_applied.tune.tune('x.yaml', trials=1)\nexcept ImportError as err:\n    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "needs Optuna, which is not installed; pip install 'mmix-applied[tune]'" in out.stdout


def _worker(out, trials, seed, hold_s):
    return subprocess.Popen([sys.executable, "-m", "tests.helpers.tune_worker", str(out), str(trials), str(seed),
                             str(hold_s)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_processes_share_one_study_and_run_no_trial_twice(tmp_path):
    workers = [_worker(tmp_path, 6, seed, 1.0) for seed in (1, 2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    ran = [[int(line.split("]")[0].split()[-1]) for line in out.splitlines() if line.startswith("[trial")
            and " mix." in line] for out in outputs]
    assert sorted(ran[0] + ran[1]) == sorted(set(ran[0] + ran[1]))  # no trial in both processes
    study = _study(tmp_path)
    complete = study.get_trials(states=(COMPLETE,))
    assert len(complete) == 6 and {t.number for t in complete} <= set(ran[0] + ran[1])
    runs = fits(tmp_path)
    assert all(len(calls) == 1 for calls in runs.values()), runs  # no run fitted twice
    assert len(runs) == len({t.user_attrs["setting"] for t in complete}) + 1  # + the baseline
    others = [t for t in study.trials if t.state != COMPLETE]
    assert all(t.user_attrs.get("surplus") for t in others)  # only trials asked for after the 6th, never run


def test_a_killed_tune_resumes_its_trial_from_the_last_checkpoint(tmp_path, monkeypatch):
    worker = _worker(tmp_path, 3, 1, 60.0)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            started = [p.parent.parent for p in tmp_path.glob("trials/*/*-seed0/checkpoints/last.ckpt")
                       if not p.parent.parent.name.startswith("none")]
            if started:
                break
            assert worker.poll() is None, worker.stdout.read()
            time.sleep(0.2)
        assert started, "no trial started"
        os.kill(worker.pid, signal.SIGKILL)  # mid-trial: its run has a last.ckpt and no fit summary
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    killed = started[0]
    assert not (killed / "fit_summary.json").is_file()
    lines = []
    monkeypatch.setattr(study_module, "fit", functools.partial(fake_fit, hold_s=0.0))
    tune(CONFIG, out_dir=tmp_path, trials=3, seeds=(0,), overrides=TINY, final=False, prune=False, poll_s=0.05,
         log=lines.append)
    study = _study(tmp_path)
    complete = study.get_trials(states=(COMPLETE,))
    assert len(complete) == 3 and len({t.number for t in complete}) == 3
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and any(line == f"tune: trial {failed[0].number} was running in a process that has "
                                    "ended; it is retried" for line in lines)
    retry = [t for t in complete if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params
    calls = fits(tmp_path)[killed.name]
    assert [c["resume"] for c in calls] == [None, str(killed)]  # killed once, then resumed, not restarted
    assert all(len(c) == 1 for name, c in fits(tmp_path).items() if name != killed.name)


REAL = ["model.name=test_resnet", "train.max_epochs=2", "train.limit_train_batches=2", "train.limit_val_batches=1",
        "train.limit_test_batches=1", "train.limit_predict_batches=1", "data.labels_per_class=2", "data.batch_size=8",
        "data.eval_batch_size=16", "train.accelerator=cpu", "train.enable_progress_bar=false", "train.loggers=[csv]"]


def test_a_four_trial_tune_of_a_tiny_model_then_the_final_comparison(tmp_path, monkeypatch):
    from mmix_applied import compare as compare_module

    report = tune(CONFIG, trials=4, seeds=(0,), final_seeds=(3,), overrides=REAL, out_dir=tmp_path, sampler_seed=0,
                  log=lambda line: None)
    study = _study(tmp_path)
    finished = [t for t in study.trials if t.state in (COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 4 == len(study.trials)
    for trial in study.get_trials(states=(COMPLETE,)):  # the value is the run's NLL at its fitted temperature
        run = next(tmp_path.glob(f"trials/*/{trial.user_attrs['setting']}-seed0"))
        assert trial.value == json.loads((run / "temperature.json").read_text())["val_nll_scaled"]["last.ckpt"]
    best = study.best_trial
    final = tmp_path / f"final-{best.user_attrs['setting']}"
    rows = [json.loads(line) for line in (final / "results.jsonl").read_text().splitlines()]
    assert [(r["variant"], r["seed"]) for r in rows] == [("none", 3), ("input", 3), ("manifold", 3)]
    manifold = load_config(final / "runs" / "manifold-seed3" / "config.yaml")
    assert manifold.mix.alpha == best.params["mix.alpha"] and manifold.mix.prob == best.params["mix.prob"]
    text = report.read_text()
    for name in ("tune_history.png", "tune_importance.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in text
    assert "- Verdict: manifold mixup" in text and "against none" in text and "against input" in text
    # the same command again: nothing is trained, fitted or tested
    for module, name in ((study_module, "fit"), (compare_module, "fit"), (compare_module, "test"),
                         (compare_module, "predict")):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("a finished run was run again"))
    assert tune(CONFIG, trials=4, seeds=(0,), final_seeds=(3,), overrides=REAL, out_dir=tmp_path,
                log=lambda line: None) == report


def test_a_finished_trial_keeps_its_claim_until_optuna_has_told_it(tmp_path, monkeypatch):
    """Between the objective's return and Optuna's ``tell``, another process's ``recover`` looks at the
    trial: still running; its claim must still be held, or it is failed and the ``tell`` then raises
    "Cannot tell a FAIL trial" (seen once in two processes sharing a study)."""
    from mmix_applied.tune.backend import recover

    real_objective, looked = study_module._objective, []

    def objective(run, study, opened, *args, **kwargs):
        evaluate, release = real_objective(run, study, opened, *args, **kwargs)

        def evaluate_then_look(trial):
            value = evaluate(trial)
            looked.append(recover(study, opened))  # what another process's loop does in this window
            return value

        return evaluate_then_look, release

    monkeypatch.setattr(study_module, "_objective", objective)
    _tune(tmp_path, monkeypatch, trials=2)
    assert looked == [[], []]  # the looks found each trial held by its live process
    assert len(_study(tmp_path).get_trials(states=(COMPLETE,))) == 2
