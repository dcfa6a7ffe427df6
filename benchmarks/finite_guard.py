"""Cost of the finite-weights guard: one check against one training step (same process, interleaved, medians).

    python benchmarks/finite_guard.py [--model resnet18] [--batch 16] [--size 64] [--repeats 15]

The guard (``mmix_applied.engine.guards.first_nonfinite``) runs every 25 optimizer steps, at each
epoch end, after each validation and before each checkpoint save; the figure printed is the cost of
one check as a fraction of one SGD step, and that fraction / 25 is the overhead per step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

from mmix_applied.engine.guards import first_nonfinite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = timm.create_model(args.model, num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    step()
    first_nonfinite(model)
    steps, checks = [], []
    for _ in range(args.repeats):  # interleaved
        steps.append(timed(step))
        checks.append(timed(lambda: first_nonfinite(model)))
    s, c = statistics.median(steps), statistics.median(checks)
    print(f"{args.model} batch {args.batch} at {args.size}px on {device}: step {s * 1e3:.2f} ms, check "
          f"{c * 1e3:.3f} ms; check/step = {c / s:.4f}; per step at every_n_steps=25: {c / s / 25:.5f}")


if __name__ == "__main__":
    main()
