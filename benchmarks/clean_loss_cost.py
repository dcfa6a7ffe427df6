"""Step cost of the RegMixup clean term (``mix.clean_weight > 0``): a mixed step with and without it.

    python benchmarks/clean_loss_cost.py [--model resnet18] [--batch 64] [--size 28] [--reps 15] [--threads 2]

Both variants run the engine's own :meth:`MixupModule.train_loss` (the mixer's forward at a drawn
point, the adapter's loss) plus backward and an SGD step on the classification recipe's model, in
one process, interleaved (alternating which goes first), after a warm-up that visits every point.
Reported: the median seconds of each, the ratio of medians and the median of the paired ratios
(clean / plain, each against the step beside it) with its 25th-75th percentile. The clean term is
a second forward of the batch whose graph the same backward walks too; the figure measured is in
``docs/benchmarks.md`` ("The RegMixup clean term").
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmix_applied.config import load_config
from mmix_applied.engine import MixupModule
from mmix_applied.tasks.classification import ClassificationRecipe

__all__ = ["main"]


def _step(module: MixupModule, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          weight: float) -> float:
    module.config.mix.clean_weight = weight
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss, _ = module.train_loss(x, y)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config("configs/classification.yaml", [f"model.name={args.model}", "train.accelerator=cpu"])
    torch.manual_seed(0)
    module = MixupModule(cfg, ClassificationRecipe(cfg))
    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)
    x, y = torch.randn(args.batch, 1, args.size, args.size), torch.randint(0, 10, (args.batch,))
    for _ in range(2 * len(module.mixer.points)):  # warm-up: every point's graph is built
        _step(module, optimizer, x, y, 0.0)
        _step(module, optimizer, x, y, 1.0)
    plain, clean = [], []
    for rep in range(args.reps):
        # each pair draws its plans from the same generator state, so both mix at the same point
        state = module.mixer.generator.get_state()
        order = (0.0, 1.0) if rep % 2 == 0 else (1.0, 0.0)
        for weight in order:
            module.mixer.generator.set_state(state)
            (clean if weight else plain).append(_step(module, optimizer, x, y, weight))
    ratios = sorted(c / p for c, p in zip(clean, plain))
    q = statistics.quantiles(ratios, n=4)
    print(f"model {args.model}, batch {args.batch}x1x{args.size}x{args.size}, {args.reps} pairs, "
          f"{args.threads} threads, points {module.mixer.points}")
    print(f"median step: plain mixed {statistics.median(plain) * 1e3:.1f} ms, with clean term "
          f"{statistics.median(clean) * 1e3:.1f} ms")
    print(f"ratio of medians {statistics.median(clean) / statistics.median(plain):.2f}; median paired ratio "
          f"{statistics.median(ratios):.2f} (25-75 %: {q[0]:.2f}-{q[2]:.2f})")
    module.mixer.close()


if __name__ == "__main__":
    main()
