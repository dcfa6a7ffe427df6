"""Compiled vs eager mixed training steps: what ``train.compile`` should compile (#12 §1).

    python benchmarks/compile_step.py [--reps 21] [--threads 2] [--backend inductor] [--model test_resnet]

Three copies of one timm model (same weights) train side by side in one process, one step each
per repetition in rotating order (so drifts in machine load hit all alike):

- ``eager``: ``mixer(x)``, the adapter's loss, backward, SGD step;
- ``compiled model``: the same with the model compiled in place (``model.compile()``, what the
  engine's ``train.compile: true`` does: Lightning keeps running the loss, backward and step);
- ``compiled step``: the plan drawn outside, then mixed forward + loss compiled as one function
  (``torch.compile`` of ``apply`` + model + ``adapter.loss``), backward and step outside.

Every step draws a fresh plan at a point taken in turn from ``--points``; the warm-up visits every
point twice, so the timed steps never compile. Reported: the median step time of each and its
ratio to eager (median of the per-repetition ratios), and the warm-up (compile) time.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def _build(name: str, seed: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(name, num_classes=10).train()


def main(argv: list[str] | None = None) -> int:
    from mmix_applied import ManifoldMixup, MixPlan
    from mmix_applied.adapters import Classification

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--points", default="input,layer1,layer2")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    points = args.points.split(",")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    adapter = Classification(10)
    base = _build(args.model, 0)
    variants = {}
    for name in ("eager", "compiled model", "compiled step"):
        model = copy.deepcopy(base)
        mixer = ManifoldMixup(model, points=points, seed=0)
        if name == "compiled model":
            model.compile(backend=args.backend)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        if name == "compiled step":
            @torch.compile(backend=args.backend)
            def forward_loss(x, y, plan, model=model, mixer=mixer):
                with mixer.apply(plan):
                    out = model(x)
                return adapter.loss(out, y, plan)

            def step(point, model=model, mixer=mixer, opt=opt, forward_loss=forward_loss):
                drawn = mixer.sample(len(x), input_shape=tuple(x.shape))
                opt.zero_grad(set_to_none=True)
                forward_loss(x, y, MixPlan(point, drawn.lam, drawn.perm, drawn.box)).backward()
                opt.step()
        else:
            def step(point, model=model, mixer=mixer, opt=opt):
                drawn = mixer.sample(len(x), input_shape=tuple(x.shape))
                plan = MixPlan(point, drawn.lam, drawn.perm, drawn.box)
                opt.zero_grad(set_to_none=True)
                with mixer.apply(plan):
                    out = model(x)
                adapter.loss(out, y, plan).backward()
                opt.step()
        variants[name] = step
    warm = {}
    for name, step in variants.items():
        t0 = time.perf_counter()
        for point in points * 2:
            step(point)
        warm[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for i in range(args.reps):
        point = points[i % len(points)]
        for name in names[i % 3:] + names[:i % 3]:
            t0 = time.perf_counter()
            variants[name](point)
            times[name].append(time.perf_counter() - t0)
    print(f"torch {torch.__version__}, backend {args.backend}, threads {torch.get_num_threads()}, reps {args.reps}, "
          f"{args.model} {args.batch}x3x{args.size}x{args.size}, points {points}")
    print(f"{'variant':16s} {'step s':>9s} {'ratio to eager':>15s} {'warm-up s':>10s}")
    for name in names:
        ratio = statistics.median(t / e for t, e in zip(times[name], times["eager"]))
        print(f"{name:16s} {statistics.median(times[name]):9.4f} {ratio:15.3f} {warm[name]:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
