"""Training-step overhead of Manifold Mixup: mixed vs plain, same process, interleaved, medians.

    python benchmarks/overhead.py [--reps 15] [--device cpu] [--threads 2]

Each repetition times one plain step and one mixed step (forward, loss, backward, optimizer step)
back to back, in alternating order, so drifts in machine load hit both alike. The mixed step
draws a fresh plan each time (a random point, as in training). Reported: median seconds of each
their ratio (mixed / plain), and the median of the per-repetition ratios (paired: each mixed step
against the plain step beside it, which cancels slow drifts in machine speed). A mixed step does a little more arithmetic by design (the mix
itself, and the soft-target loss), so the ratio measures that plus any routing overhead.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _cases(device: str):
    import segmentation_models_pytorch as smp
    import timm

    from mmix_applied.adapters import Classification, Segmentation

    g = torch.Generator().manual_seed(0)
    resnet = timm.create_model("resnet18", num_classes=10).to(device)
    yield ("timm resnet18, 64x3x32x32", resnet, Classification(10),
           torch.randn(64, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (64,), generator=g).to(device))
    unet = smp.Unet("resnet18", encoder_weights=None, classes=4).to(device)
    yield ("smp Unet-resnet18, 8x3x128x128", unet, Segmentation(4),
           torch.randn(8, 3, 128, 128, generator=g).to(device), torch.randint(0, 4, (8, 128, 128), generator=g).to(device))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(model, adapter, x, y, *, reps: int, device: str) -> tuple[float, float, list[str]]:
    from mmix_applied import ManifoldMixup

    model.train()
    mixer = ManifoldMixup(model, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def plain():
        opt.zero_grad(set_to_none=True)
        adapter.loss(model(x), y).backward()
        opt.step()

    def mixed():
        opt.zero_grad(set_to_none=True)
        out, plan = mixer(x)
        adapter.loss(out, y, plan).backward()
        opt.step()

    for _ in range(2):  # warm-up both paths
        plain(), mixed()
    times = {"plain": [], "mixed": []}
    for i in range(reps):
        order = (("plain", plain), ("mixed", mixed)) if i % 2 == 0 else (("mixed", mixed), ("plain", plain))
        for name, step in order:
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    mixer.close()
    paired = statistics.median(m / p for m, p in zip(times["mixed"], times["plain"]))
    return statistics.median(times["plain"]), statistics.median(times["mixed"]), paired


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, reps {args.reps}")
    print(f"{'case':34s} {'plain s':>9s} {'mixed s':>9s} {'ratio':>7s} {'paired':>7s}")
    for name, model, adapter, x, y in _cases(args.device):
        plain, mixed, paired = measure(model, adapter, x, y, reps=args.reps, device=args.device)
        print(f"{name:34s} {plain:9.4f} {mixed:9.4f} {mixed / plain:7.3f} {paired:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
