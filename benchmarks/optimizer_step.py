"""Cost of the optimizer update: torch's fused kernel (``optim.fused: auto``) against its default ``foreach`` one.

    python benchmarks/optimizer_step.py [--model resnet18] [--name adamw] [--reps 21] [--threads 2]

Builds the classification recipe's timm model and two optimizers from the engine's own
:func:`mmix_applied.engine.optim.build_optimizer` (``optim.fused=true`` and ``false``) over two
copies of its parameters, gives both the same gradients, and times ``optimizer.step()`` of each,
interleaved (alternating which goes first), after two warm-up steps. Reported: the median seconds
of each, the ratio of medians and the median of the paired ratios (fused / foreach) with its
25th-75th percentile, and the largest weight difference after the timed steps (the two compute
the same update up to float rounding). Also: the median forward+backward of one training batch
(``--batch`` images of ``--size``), so the update's share of a step can be read off.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from mmix_applied.config import load_config
from mmix_applied.engine.optim import build_optimizer
from mmix_applied.models import create_model

__all__ = ["main"]


def _quartiles(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the measurement; print and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--name", default="adamw", choices=("adamw", "adam", "sgd"))
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(f"timm/{args.model}", num_classes=10, in_channels=1)
    models = {"fused": model, "foreach": copy.deepcopy(model)}
    opts = {k: build_optimizer([{"params": list(m.parameters())}],
                               load_config(None, [f"optim.name={args.name}", f"optim.fused={k == 'fused'}"]).optim)
            for k, m in models.items()}
    if not opts["fused"].defaults.get("fused") or opts["foreach"].defaults.get("fused"):
        raise RuntimeError("build_optimizer did not honour optim.fused; nothing to compare")

    x, y = torch.randn(args.batch, 1, args.size, args.size), torch.randint(0, 10, (args.batch,))
    times: dict[str, list[float]] = {"fused": [], "foreach": [], "fwd_bwd": []}
    for rep in range(args.reps + 2):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(models["foreach"](x), y)
        loss.backward()
        fwd_bwd = time.perf_counter() - t0
        grads = [p.grad.detach().clone() for p in models["foreach"].parameters()]
        for p, g in zip(models["fused"].parameters(), grads):
            p.grad = g.clone()
        order = ("fused", "foreach") if rep % 2 == 0 else ("foreach", "fused")
        for k in order:
            t0 = time.perf_counter()
            opts[k].step()
            elapsed = time.perf_counter() - t0
            if rep >= 2:
                times[k].append(elapsed)
        for m in models.values():
            m.zero_grad(set_to_none=True)
        if rep >= 2:
            times["fwd_bwd"].append(fwd_bwd)
    diff = max(float((a.detach() - b.detach()).abs().max())
               for a, b in zip(models["fused"].parameters(), models["foreach"].parameters()))
    ratios = [f / e for f, e in zip(times["fused"], times["foreach"])]
    lo, hi = _quartiles(ratios)
    out = {"fused_s": statistics.median(times["fused"]), "foreach_s": statistics.median(times["foreach"]),
           "fwd_bwd_s": statistics.median(times["fwd_bwd"]), "paired_ratio": statistics.median(ratios),
           "ratio_q25": lo, "ratio_q75": hi, "max_weight_diff": diff}
    out["ratio_of_medians"] = out["fused_s"] / out["foreach_s"]
    print(f"{args.name} on timm {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters), "
          f"{args.threads} threads, {args.reps} interleaved steps:")
    print(f"  step  fused {out['fused_s'] * 1e3:.1f} ms   foreach {out['foreach_s'] * 1e3:.1f} ms   "
          f"ratio of medians {out['ratio_of_medians']:.3f}   median paired ratio {out['paired_ratio']:.3f} "
          f"(25-75 %: {lo:.3f}-{hi:.3f})")
    print(f"  forward+backward of a batch of {args.batch} at {args.size}x{args.size}: {out['fwd_bwd_s'] * 1e3:.1f} ms "
          f"(the foreach update adds {out['foreach_s'] / out['fwd_bwd_s']:.0%} to it, the fused one "
          f"{out['fused_s'] / out['fwd_bwd_s']:.0%})")
    print(f"  largest weight difference after the steps: {diff:.2e}")
    return out


if __name__ == "__main__":
    main()
