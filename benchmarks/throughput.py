"""Training-loader throughput of each recipe, per number of workers (#12 §5).

    python benchmarks/throughput.py [--workers 0,1,2] [--batches 30] [--recipes classification,...]

Each recipe's own training loader (its shipped config, the engine's ``DataModule``: seeded
sampler, persistent workers, OpenCV at 0 threads in workers) is iterated for ``--batches``
batches after the first (the first waits for workers to start; its time is reported apart).
Reported: samples per second, and per worker. What each recipe does per sample:

- ``classification``: embedded MNIST digits, albumentations ``light`` augmentation (2D, OpenCV);
- ``segmentation``: brain slices from the embedded MNI152 template, albumentations (2D);
- ``segmentation_3d``: brain patches, MONAI transforms (3D; each volume gives ``num_samples`` patches);
- ``handwriting``: MNIST digit-string text lines, albumentations.

A "sample" is one item of the data set (a volume for 3D: it yields ``num_samples`` patches).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("classification", "segmentation", "segmentation_3d", "handwriting")


def measure(config_name: str, workers: int, batches: int, repeats: int) -> tuple[float, float, int]:
    from mmix_applied.config import load_config
    from mmix_applied.engine.recipe import get_recipe

    cfg = load_config(ROOT / "configs" / f"{config_name}.yaml", [f"data.num_workers={workers}", "train.accelerator=cpu"])
    recipe = get_recipe(cfg.recipe)(cfg)
    loader = recipe.build_datamodule().train_dataloader()
    rates, first = [], 0.0
    per_batch = loader.batch_size
    for repeat in range(repeats):
        it = iter(loader)
        t0 = time.perf_counter()
        next(it)
        if repeat == 0:  # the first epoch's first batch: workers start (later epochs reuse them)
            first = time.perf_counter() - t0
        t0, n = time.perf_counter(), 0
        for _ in range(batches):
            try:
                next(it)
            except StopIteration:
                break
            n += per_batch
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), first, per_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="epochs per setting (median reported)")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args(argv)
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.batches} batches x {args.repeats} epochs "
          f"per setting (median)")
    print(f"{'recipe':16s} {'workers':>7s} {'batch':>5s} {'samples/s':>10s} {'per worker':>10s} {'first batch s':>13s}")
    for name in args.recipes.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            rate, first, batch = measure(name, workers, args.batches, args.repeats)
            per = f"{rate / workers:10.1f}" if workers else f"{'-':>10s}"
            print(f"{name:16s} {workers:7d} {batch:5d} {rate:10.1f} {per} {first:13.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
