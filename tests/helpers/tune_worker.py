"""A stand-in for training in ``tune``'s tests, and a tune process built on it.

``fake_fit`` replaces :func:`mmix_applied.engine.runner.fit` inside :mod:`mmix_applied.tune.study`:
it writes what a finished fit leaves (``config.yaml``, ``fit_summary.json``, ``temperature.json``)
with a validation figure that is a known function of the setting (:func:`figure`), after
writing a ``checkpoints/last.ckpt`` marker and holding for a while, so a test can kill a process
mid-trial. Every call is appended to the run's ``fits.jsonl`` (PID, resume), so a test can count
how often each run was fitted.

Run as ``python -m tests.helpers.tune_worker OUT TRIALS SAMPLER_SEED HOLD_S``: one tune process
on ``OUT`` (its default journal storage), trials held ``HOLD_S`` seconds each.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from mmix_applied.config import save_config
from mmix_applied.utils.atomic import atomic_write_text
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
TINY = ["model.name=test_resnet", "data.labels_per_class=2", "train.accelerator=cpu"]


def figure(config) -> float:
    """The stand-in's validation NLL at T: lowest at alpha 0.5, prob 1; the seed adds 0.01 per unit."""
    if config.mix.variant == "none":
        return 1.0 + 0.01 * config.seed
    return 0.5 + math.log(config.mix.alpha / 0.5) ** 2 / 10 + (1 - config.mix.prob) / 10 + 0.01 * config.seed


def fake_fit(config, *, resume=None, callbacks=(), hold_s: float = 0.0):
    run = Path(config.run.dir) / config.run.name
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    with open(run / "fits.jsonl", "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "resume": None if resume is None else str(resume)}) + "\n")
    save_config(config, run / "config.yaml")
    atomic_write_text(run / "checkpoints" / "last.ckpt", "stand-in")
    if config.mix.variant != "none":
        time.sleep(hold_s)
    value = figure(config)
    atomic_write_text(run / "temperature.json", json.dumps({"val_nll_scaled": {"last.ckpt": value}}))
    atomic_write_text(run / "fit_summary.json", json.dumps({"last": {"metrics": {"val/acc": 0.9}}}))
    return run


def fits(out: Path) -> dict[str, list[dict]]:
    """``{run name: [fit calls]}`` of every run under ``out/trials``."""
    return {p.parent.name: [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(Path(out).glob("trials/*/*/fits.jsonl"))}


def main(argv: list[str]) -> int:
    import functools

    import mmix_applied.tune.study as study

    out, trials, sampler_seed, hold_s = Path(argv[0]), int(argv[1]), int(argv[2]), float(argv[3])
    study.fit = functools.partial(fake_fit, hold_s=hold_s)
    study.tune(CONFIG, trials=trials, seeds=(0,), overrides=TINY, out_dir=out, final=False, prune=False,
               sampler_seed=sampler_seed, poll_s=0.2, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
