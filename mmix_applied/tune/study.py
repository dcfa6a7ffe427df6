"""``tune``: search the mixing setting on validation figures with Optuna, then compare it on fresh seeds.

Each trial draws one setting from the search space (:mod:`mmix_applied.tune.space`), trains it on
every tuning seed (paired: a seed fixes the data subset, the initialisation and the order) and is
judged on the mean of one **validation** figure: the NLL at the fitted temperature
(classification), mean Dice (segmentation), CER (handwriting), the config's ``train.monitor``
for other recipes. Hopeless trials are pruned from their per-epoch figures
(:class:`~mmix_applied.tune.pruning.ValidationPruning`). The unmixed baseline runs once on the same
seeds as the reference. At the end the best setting is compared with ``none`` and input mixup on
fresh seeds by :func:`mmix_applied.compare.compare` (test figures: reported, never chosen on), and
``report.md`` is written (:mod:`mmix_applied.tune.report`).

Layout of ``out_dir``::

    tune.journal            the study (default storage; --storage puts it elsewhere)
    trials/<config>/<setting>-seed<k>/   each trial run (config, logs, fit_summary.json, temperature.json)
    .claims/                the units being run (PID and host of each holder)
    final-<setting>/        the final comparison (compare's layout)
    report.md, tune_*.png   the report and Optuna's plots

Several processes given the same storage and study (one per GPU, one per SLURM job) share the
trials: no trial runs twice, a process stops when the study has ``trials`` finished trials, and
those sharing ``out_dir`` also share the baseline and the final comparison.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from mmix_applied.compare import check_seeds_and_overrides, clock, compare, validation_figures
from mmix_applied.engine.claims import check_writable, claim, config_changes, fit_finished, flat, holder
from mmix_applied.engine.config import Config, config_to_dict, load_config
from mmix_applied.engine.module import NonFiniteLossError
from mmix_applied.engine.runner import fit
from mmix_applied.errors import MmixError
from mmix_applied.tune.backend import (
    StudyStorage,
    TrialState,
    open_storage,
    open_study,
    optuna,
    recover,
    require_optuna,
    take_trial_claim,
    trial_claim,
)
from mmix_applied.tune.pruning import ValidationPruning
from mmix_applied.tune.report import write_report
from mmix_applied.tune.space import SearchSpace, read_space

__all__ = ["OBJECTIVES", "Objective", "objective_of", "tune"]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED) if TrialState is not None else ()


@dataclasses.dataclass(frozen=True)
class Objective:
    """What a trial is judged on (validation) and what the final comparison reports (test)."""

    figure: str
    direction: str
    test: str


OBJECTIVES = {"classification": Objective("val/nll_scaled", "minimize", "test/nll_scaled"),
              "segmentation": Objective("val/mean_dice", "maximize", "test/mean_dice"),
              "handwriting": Objective("val/cer", "minimize", "test/cer")}


def objective_of(config: Config) -> Objective:
    """The recipe's objective; other recipes: ``train.monitor`` in ``train.monitor_mode``."""
    if config.recipe in OBJECTIVES:
        return OBJECTIVES[config.recipe]
    monitor = config.train.monitor
    return Objective(monitor, "maximize" if config.train.monitor_mode == "max" else "minimize",
                     "test/" + monitor.split("/", 1)[-1])


class _Surplus(MmixError, RuntimeError):
    """A trial asked for after the study already had enough (several processes asked at once)."""


def _check(trials: int, seeds: Sequence[int], overrides: Sequence[str], config: Config) -> None:
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"--trials must be a whole number >= 1; received {trials!r}")
    check_seeds_and_overrides(seeds, overrides, tool="tune")
    if config.train.limit_val_batches == 0:
        raise ValueError("tune judges trials on validation figures; received train.limit_val_batches=0 (no "
                         "validation). Remove that override")
    devices = config.train.devices
    if (devices not in ("auto", 1, "1", [0]) and not (isinstance(devices, list) and len(devices) == 1)) \
            or config.train.num_nodes != 1:
        raise ValueError(f"tune trains each trial on one device; received train.devices={devices!r}, "
                         f"train.num_nodes={config.train.num_nodes}. Start one tune per GPU instead "
                         "(CUDA_VISIBLE_DEVICES=k mmix-applied tune ... --storage URL --study NAME; docs/tune.md)")


@dataclasses.dataclass
class _Run:
    """What every unit of one tune shares."""

    config_path: str | os.PathLike
    overrides: list[str]
    root: Path
    claims: Path
    keep_checkpoints: bool
    poll_s: float
    log: Callable[[str], Any]

    def config(self, extra: Sequence[str], name: str) -> Config:
        config = load_config(self.config_path, [*self.overrides, *extra])
        if config.train.devices == "auto":
            config.train.devices = 1
        config.train.save_top_k = 0  # last.ckpt only: the trial is judged on it
        config.run.dir, config.run.name = str(self.root), name
        return config

    def fit_unit(self, config: Config, *, callbacks: Sequence[Any] = ()) -> dict[str, float]:
        """Fit one unit (resuming a killed fit, never redoing a finished one); its validation figures."""
        run_dir = Path(config.run.dir) / config.run.name
        claim_name = f"{run_dir.parent.name}-{run_dir.name}"
        told = False
        while not fit_finished(run_dir):
            lock = claim(self.claims, claim_name)
            if lock is None:
                if not told:
                    self.log(f"  {run_dir.name} is being run by {holder(self.claims, claim_name)}; waiting for it")
                    told = True
                time.sleep(self.poll_s)
                continue
            ended = False
            try:
                if fit_finished(run_dir):
                    break
                changes = config_changes(run_dir, config)
                if changes:
                    raise ValueError(f"run {str(run_dir)!r} was made with other settings ({'; '.join(changes)}); "
                                     "choose another --out, or rerun with the earlier settings")
                resume = run_dir if (run_dir / "checkpoints" / "last.ckpt").is_file() else None
                fit(config, resume=resume, callbacks=callbacks)
                ended = True
            except optuna.TrialPruned:
                ended = True
                raise
            finally:
                if ended and not self.keep_checkpoints:
                    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
                lock.release()
        return validation_figures(run_dir)


def _baseline(run: _Run, study: Any, seeds: Sequence[int], figure: str, *, wait: bool) -> dict[int, float]:
    """The unmixed runs on the tuning seeds (each once, shared through the study); ``{seed: figure}``."""
    found: dict[int, float] = {}
    for seed in seeds:
        key = f"mmix:baseline:seed{seed}"
        stored = study.user_attrs.get(key)
        if stored is None:
            config = run.config(["mix.variant=none", f"seed={seed}"], f"none-seed{seed}")
            run_dir = Path(config.run.dir) / config.run.name
            if not wait and not fit_finished(run_dir) and _claim_held(run, run_dir):
                continue  # another process runs it; looked at again at the end
            run.log(f"[baseline] none seed {seed}")
            stored = run.fit_unit(config)
            study.set_user_attr(key, stored)
        if figure in stored:
            found[seed] = float(stored[figure])
    return found


def _claim_held(run: _Run, run_dir: Path) -> bool:
    """Whether a live process holds the claim of ``run_dir``'s unit (taken and released at once if free)."""
    lock = claim(run.claims, f"{run_dir.parent.name}-{run_dir.name}")
    if lock is None:
        return True
    lock.release()
    return False


def _surplus(study: Any, number: int, trials: int) -> bool:
    ahead = [t for t in study.get_trials(deepcopy=False) if t.number < number
             and t.state in (*_FINISHED, TrialState.RUNNING, TrialState.WAITING)]
    return len(ahead) >= trials


def _objective(run: _Run, study: Any, opened: StudyStorage, space: SearchSpace, seeds: Sequence[int],
               objective: Objective, *, trials: int, prune: bool,
               max_epochs: int) -> tuple[Callable[[Any], float], Callable[[], None]]:
    """The objective, and the function that releases its trial's claim once Optuna has told the result.

    The claim is held until then: released earlier, another process's :func:`recover` would find a
    trial still running with no live holder and fail it before its result is told.
    """
    held: list[Any] = []

    def release() -> None:
        while held:
            held.pop().release()

    def evaluate(trial: Any) -> float:
        params = space.suggest(trial)
        if opened.claims:
            held.append(take_trial_claim(opened.claims, trial_claim(study.study_name, trial.number)))
        trial.set_user_attr("worker", f"PID {os.getpid()} on {socket.gethostname()}")
        try:
            if _surplus(study, trial.number, trials):
                trial.set_user_attr("surplus", True)
                raise _Surplus()
            digest = space.digest(params)
            trial.set_user_attr("setting", digest)
            run.log(f"[trial {trial.number}] " + " ".join(f"{k}={_short(v)}" for k, v in params.items()))
            values = []
            for i, seed in enumerate(seeds):
                config = run.config([*space.overrides(params), "mix.variant=manifold", f"seed={seed}"],
                                    f"{digest}-seed{seed}")
                callbacks = [ValidationPruning(trial, figure=objective.figure, step_offset=i * max_epochs,
                                               from_epoch=3 * max_epochs // 4)] if prune else []
                try:
                    figures = run.fit_unit(config, callbacks=callbacks)
                except NonFiniteLossError as err:
                    trial.set_user_attr("diverged", str(err).splitlines()[0][:300])
                    raise optuna.TrialPruned(f"seed {seed} diverged") from None
                if objective.figure not in figures:
                    raise ValueError(f"run {config.run.name!r} reported no {objective.figure} (its validation "
                                     f"figures: {sorted(figures)}); tune needs validation (train.limit_val_batches "
                                     "> 0)")
                trial.set_user_attr(f"seed{seed}", figures[objective.figure])
                trial.set_user_attr(f"val:seed{seed}", figures)
                values.append(figures[objective.figure])
            return float(sum(values) / len(values))
        except (optuna.TrialPruned, _Surplus):
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            raise

    return evaluate, release


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _final_seeds(final_seeds: Sequence[int] | None, seeds: Sequence[int]) -> list[int]:
    if final_seeds is None:
        return [max(seeds) + k for k in (1, 2, 3)]
    clash = sorted(set(final_seeds) & set(seeds))
    if clash:
        raise ValueError(f"--final-seeds must be fresh: seeds {clash} were used to choose the setting; received "
                         f"{list(final_seeds)}")
    return list(final_seeds)


def _config_hash(config: Config) -> tuple[str, dict[str, Any]]:
    tree = {k: v for k, v in flat(config_to_dict(config)).items()
            if not k.startswith("run.") and k not in ("mix.variant", "seed")}
    text = json.dumps(tree, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8], json.loads(text)


def tune(config_path: str | os.PathLike, *, trials: int, seeds: Sequence[int] = (0, 1),
         space: str | os.PathLike | None = None, storage: str | None = None, study_name: str | None = None,
         overrides: Iterable[str] = (), out_dir: str | os.PathLike = "runs/tune",
         final_seeds: Sequence[int] | None = None, final: bool = True, prune: bool = True,
         keep_checkpoints: bool = False, sampler_seed: int | None = None, command: str | None = None,
         poll_s: float = 10.0, log: Callable[[str], Any] = print) -> Path:
    """Tune the mixing setting of ``config_path`` over ``trials`` Optuna trials; returns ``report.md``.

    Args:
        config_path: The recipe's YAML config (its ``mix.variant`` is ignored: trials mix, the baseline does not).
        trials: Finished trials (complete or pruned) the study should hold; a process stops there.
        seeds: The paired tuning seeds every trial (and the baseline) trains on.
        space: A search-space YAML (:func:`~mmix_applied.tune.space.read_space`); default the recipe's.
        storage: An Optuna RDB URL or a journal file path; default ``out_dir/tune.journal``.
        study_name: The study's name; default the config file's stem.
        overrides: Dotted overrides for every run (not ``mix.variant``, ``seed``, ``run.*``).
        out_dir: Where the runs, the final comparison and the report go.
        final_seeds: Fresh seeds of the final comparison; default the three after the tuning seeds.
        final: Run the final comparison and write the report.
        prune: Prune hopeless trials from their per-epoch validation figures.
        keep_checkpoints: Keep the trial runs' checkpoints (default: removed once a trial's run ended).
        sampler_seed: Seed of the TPE sampler (give each process its own).
        command: The command line at the top of the report.
        poll_s: Seconds between looks at work another process holds.
        log: Progress sink.

    Raises:
        ImportError: Optuna is not installed.
        SpaceError: A bad search space. StorageError: a storage that cannot be opened, or a study made
            for another recipe, config, seeds or space.
    """
    require_optuna()
    seeds, overrides = tuple(seeds), [str(o) for o in overrides]
    base = load_config(config_path, overrides)
    _check(trials, seeds, overrides, base)
    objective = objective_of(base)
    searched = read_space(space, config_path=config_path, overrides=overrides)
    fresh = _final_seeds(final_seeds, seeds) if final else []
    out = check_writable(out_dir, flag="--out")
    opened = open_storage(storage, out)
    config_hash, config_tree = _config_hash(base)
    name = study_name or Path(config_path).stem
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=max(4, min(10, trials // 4)),
                                         multivariate=True, constant_liar=True)
    # the worst quarter at a seed's epoch is pruned, once five trials finished; only the last quarter of each
    # seed's epochs reports (pruning.ValidationPruning: earlier figures ranked the study's settings poorly)
    pruner = optuna.pruners.PercentilePruner(75.0, n_startup_trials=5) if prune else optuna.pruners.NopPruner()
    study = open_study(opened, name, direction=objective.direction, sampler=sampler, pruner=pruner,
                       attrs={"recipe": base.recipe, "config": config_tree, "seeds": list(seeds),
                              "space": searched.as_dict(), "objective": objective.figure})
    run = _Run(config_path, overrides, out / "trials" / config_hash, out / ".claims", keep_checkpoints, poll_s, log)
    log(f"tune: study {name!r} in {opened.url}; {objective.figure} ({objective.direction}) over seeds "
        f"{', '.join(map(str, seeds))}; searching " + "; ".join(searched.describe()))
    start = time.monotonic()
    baseline = _baseline(run, study, seeds, objective.figure, wait=False)
    evaluate, release_claim = _objective(run, study, opened, searched, seeds, objective, trials=trials,
                                         prune=prune, max_epochs=base.train.max_epochs)
    waiting_told: set[int] = set()
    while True:
        for number in recover(study, opened):
            log(f"tune: trial {number} was running in a process that has ended; it is retried")
        now = study.get_trials(deepcopy=False)
        finished = [t for t in now if t.state in _FINISHED]
        if len(finished) >= trials:
            break
        active = [t for t in now if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        if len(finished) + len(active) >= trials and not any(t.state == TrialState.WAITING for t in active):
            new = [t for t in active if t.number not in waiting_told]
            if new:
                waiting_told.update(t.number for t in new)
                log("tune: waiting for " + ", ".join(f"trial {t.number} ({t.user_attrs.get('worker', 'starting')})"
                                                     for t in new))
            time.sleep(poll_s)
            continue
        t0 = time.monotonic()
        try:
            study.optimize(evaluate, n_trials=1, catch=(_Surplus,), gc_after_trial=True)
        finally:
            release_claim()  # after Optuna told the trial's state
        last = max((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker", "").startswith(
            f"PID {os.getpid()} ")), key=lambda t: t.number, default=None)
        if last is not None and not last.user_attrs.get("surplus"):
            _log_trial(log, study, last, trials, time.monotonic() - t0, objective)
    baseline = _baseline(run, study, seeds, objective.figure, wait=True)
    log(f"tune: {trials} trials finished ({clock(time.monotonic() - start)} in this process)")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    final_dir, final_rows, best = None, [], None
    if complete:
        best = study.best_trial
    if final and best is not None:
        final_dir = out / f"final-{best.user_attrs.get('setting', 'best')}"
        final_overrides = [*overrides, *searched.overrides(best.params)]
        if base.train.devices == "auto":
            final_overrides.append("train.devices=1")
        log(f"tune: best trial {best.number} ({objective.figure} {best.value:.4g}); comparing it with none and "
            f"input mixup on fresh seeds {', '.join(map(str, fresh))} in {final_dir}")
        compare(config_path, variants=("none", "input", "manifold"), seeds=fresh, overrides=final_overrides,
                out_dir=final_dir, command=f"mmix-applied compare -c {config_path} --variants none,input,manifold "
                f"--seeds {','.join(map(str, fresh))} --out {final_dir} " + " ".join(final_overrides),
                log=log, poll_s=poll_s)
        final_rows = [json.loads(line) for line in (final_dir / "results.jsonl").read_text().splitlines() if line]
    command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    report = write_report(out, study, command=command, objective=objective, seeds=seeds, baseline=baseline,
                          space=searched, storage_url=opened.url, final_dir=final_dir, final_rows=final_rows,
                          final_overrides=searched.overrides(best.params) if best is not None else [])
    log(f"tune: report {report}")
    return report


def _log_trial(log: Callable[[str], Any], study: Any, trial: Any, trials: int, wall: float,
               objective: Objective) -> None:
    finished = len(study.get_trials(deepcopy=False, states=_FINISHED))
    what = f"{objective.figure} {trial.value:.4g}" if trial.value is not None else trial.state.name.lower()
    if trial.state == TrialState.PRUNED:
        what = "pruned" + (f" (diverged: {trial.user_attrs['diverged']})" if "diverged" in trial.user_attrs else "")
    best = ""
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = f"; best trial {study.best_trial.number}: {study.best_value:.4g}"
    log(f"[trial {trial.number}] {what} in {clock(wall)} ({finished}/{trials} finished{best})")
