"""The mix alone against its memory-bandwidth floor, at every default point of resnet50 and a Unet.

    python benchmarks/mix_floor.py [--reps 15] [--batch 8] [--size 224] [--unet-size 256]

The state at a point is every tensor the mixer mixes there (the point's output, and in a U-Net the
skips saved before it), recorded from a real mixed forward of the model. For each point and mode
(mixup, cutmix) the forward ``mix`` and its backward are timed separately, interleaved with the
formula the library used before (``torch.lerp(h.index_select(0, perm), h, lam)`` / ``torch.where``
and autograd's backward, whose gather backward is a scatter-add), medians over ``--reps``.

Floor: the state's bytes read twice and written once, over the bandwidth of ``Tensor.copy_`` on a
256 MiB buffer measured in the same process (bytes read + written per second, median). The same
floor holds for the backward (the gradient read twice, written once). CutMix can beat it: outside
the box it reads one tensor.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from mmix_applied import functional
from mmix_applied.functional import box_mask, lam_view, mix

__all__ = ["copy_bandwidth", "record_states", "main"]


def copy_bandwidth(*, mib: int = 256, reps: int = 11) -> float:
    """Bytes moved per second (read + write) by ``Tensor.copy_`` on a large float32 buffer."""
    src = torch.randn(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / statistics.median(times)


def record_states(model: torch.nn.Module, x: torch.Tensor) -> dict[str, list[tuple[tuple[int, ...], torch.dtype]]]:
    """Shapes and dtypes of the tensors the mixer mixes at each default point of ``model``."""
    from mmix_applied import ManifoldMixup, MixPlan

    seen: list[tuple[tuple[int, ...], torch.dtype]] = []
    original = functional._PermutationMix

    class Recording(original):  # type: ignore[misc, valid-type]
        @staticmethod
        def forward(ctx, h, lam, perm, box, batch_dim):  # noqa: ANN001, ANN205
            seen.append((tuple(h.shape), h.dtype))
            return original.forward(ctx, h, lam, perm, box, batch_dim)

    mixer = ManifoldMixup(model.train(), seed=0)
    states = {}
    functional._PermutationMix = Recording
    try:
        with torch.no_grad():
            for point in mixer.points:
                seen.clear()
                with mixer.apply(MixPlan(point, torch.tensor(0.5), torch.randperm(x.shape[0]))):
                    model(x)
                states[point] = list(seen)
    finally:
        functional._PermutationMix = original
        mixer.close()
    return states


def _old_mix(h: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
    partner = h.index_select(0, perm)
    if box is None:
        return torch.lerp(partner, h, lam_view(lam, h))
    return torch.where(box_mask(box, h.shape[2:]), partner, h)


def _time_pair(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for fn in fns.values():
        fn()
    for i in range(reps):
        for name in names if i % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def time_state(shapes: list[tuple[tuple[int, ...], torch.dtype]], *, cutmix: bool, reps: int) -> dict[str, float]:
    """Forward and backward seconds of the old and new mix over every tensor of one state."""
    g = torch.Generator().manual_seed(0)
    hs = [torch.randn(s, generator=g).to(d).requires_grad_() for s, d in shapes]
    grads = [torch.randn(s, generator=g).to(d) for s, d in shapes]
    batch = shapes[0][0][0]
    perm = torch.randperm(batch, generator=g)
    lam = torch.tensor(0.3)
    box = torch.tensor([[0.25, 0.75]] * (len(shapes[0][0]) - 2)) if cutmix else None
    boxes = [box if (box is not None and len(s) == len(shapes[0][0])) else None for s, _ in shapes]
    impl = {"old": _old_mix, "new": lambda h, lam, perm, box: mix(h, lam, perm, box=box)}
    result: dict[str, float] = {}
    for phase in ("fwd", "bwd"):
        fns = {}
        for name, fn in impl.items():
            if phase == "fwd":
                def run(fn=fn):
                    with torch.no_grad():
                        return [fn(h.detach(), lam, perm, b) for h, b in zip(hs, boxes)]
            else:
                def run(fn=fn):
                    outs = [fn(h, lam, perm, b) for h, b in zip(hs, boxes)]
                    t0 = time.perf_counter()
                    torch.autograd.backward(outs, grads)
                    for h in hs:
                        h.grad = None
                    return time.perf_counter() - t0
            fns[name] = run
        if phase == "fwd":
            for k, v in _time_pair(fns, reps).items():
                result[f"{k} {phase}"] = v
        else:  # time the backward only, interleaved
            samples: dict[str, list[float]] = {k: [] for k in fns}
            for f in fns.values():
                f()
            for i in range(reps):
                for name in list(fns) if i % 2 == 0 else list(fns)[::-1]:
                    samples[name].append(fns[name]())
            for k, v in samples.items():
                result[f"{k} {phase}"] = statistics.median(v)
    result["bytes"] = float(sum(h.numel() * h.element_size() for h in hs))
    return result


def _models(args: argparse.Namespace):
    import segmentation_models_pytorch as smp
    import timm

    yield (f"timm resnet50, {args.batch}x3x{args.size}x{args.size}", timm.create_model("resnet50", num_classes=10),
           torch.randn(args.batch, 3, args.size, args.size))
    yield (f"smp Unet-{args.unet_encoder}, {args.batch}x3x{args.unet_size}x{args.unet_size}",
           smp.Unet(args.unet_encoder, encoder_weights=None, classes=4),
           torch.randn(args.batch, 3, args.unet_size, args.unet_size))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--unet-size", type=int, default=256)
    parser.add_argument("--unet-encoder", default="resnet34")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bw = copy_bandwidth()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, reps {args.reps}, "
          f"copy_ bandwidth {bw / 1e9:.2f} GB/s (read + write)")
    header = (f"| model | point | mode | state MiB | floor ms | old fwd | old bwd | new fwd | new bwd "
              f"| new fwd / floor | new bwd / floor |")
    print(header)
    print("|" + "---|" * 11)
    for label, model, x in _models(args):
        states = record_states(model, x)
        for point, shapes in states.items():
            for cutmix in (False, True):
                r = time_state(shapes, cutmix=cutmix, reps=args.reps)
                floor = 3 * r["bytes"] / bw
                ms = {k: v * 1e3 for k, v in r.items() if k != "bytes"}
                print(f"| {label} | {point} ({len(shapes)} t) | {'cutmix' if cutmix else 'mixup'} "
                      f"| {r['bytes'] / 2**20:.1f} | {floor * 1e3:.2f} | {ms['old fwd']:.2f} | {ms['old bwd']:.2f} "
                      f"| {ms['new fwd']:.2f} | {ms['new bwd']:.2f} | {r['new fwd'] / floor:.2f} "
                      f"| {r['new bwd'] / floor:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
