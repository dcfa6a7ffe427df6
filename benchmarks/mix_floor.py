"""The mix alone against its memory-bandwidth floor, at every default point of resnet50 and a Unet.

    python benchmarks/mix_floor.py [--reps 15] [--batch 8] [--size 224] [--unet-size 256] [--threads 1]

The state at a point is every tensor the mixer mixes there (the point's output, and in a U-Net the
skips saved before it), recorded from a real mixed forward of the model. For each point and mode
(mixup, cutmix) the forward ``mix`` and its backward are timed separately, interleaved with the
formula the library used before (``torch.lerp(h.index_select(0, perm), h, lam)`` / ``torch.where``
and autograd's backward, whose gather backward is a scatter-add), medians over ``--reps``.

Floor: the state's bytes read twice and written once at the bandwidth of ``Tensor.copy_`` (which
reads them once and writes them once): 1.5 x the median time of copying the state's tensors into
preallocated ones, timed interleaved with the mixes (same sizes, same cache, same machine load).
The bandwidth of a 256 MiB ``copy_`` is printed once for reference. The same floor holds for the
backward (the gradient read twice, written once). CutMix can beat it: outside the box it reads
one tensor.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from mmix_applied.core import functional
from mmix_applied.core.functional import box_mask, lam_view, mix

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


def _interleaved(fns: dict[str, Callable[[], float]], reps: int) -> dict[str, float]:
    """Median seconds of each function, called in turn (order reversed every other rep)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for fn in fns.values():
        fn()
    for i in range(reps):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(fns[name]())
    return {k: statistics.median(v) for k, v in times.items()}


def _timed(fn: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return run


def time_state(shapes: list[tuple[tuple[int, ...], torch.dtype]], *, cutmix: bool, reps: int) -> dict[str, float]:
    """Seconds of the old and new mix over every tensor of one state, and of a copy of it.

    The copy (``Tensor.copy_`` of each tensor into a preallocated one, moving the state's bytes
    once in and once out) runs interleaved with the mixes, so the floor is measured at the same
    size, cache state and machine load: floor = 1.5 x copy (three transfers instead of two).
    """
    g = torch.Generator().manual_seed(0)
    hs = [torch.randn(s, generator=g).to(d).requires_grad_() for s, d in shapes]
    grads = [torch.randn(s, generator=g).to(d) for s, d in shapes]
    sinks = [torch.empty_like(h) for h in hs]
    batch = shapes[0][0][0]
    perm = torch.randperm(batch, generator=g)
    lam = torch.tensor(0.3)
    spatial = len(shapes[0][0]) - 2
    boxes = [torch.tensor([[0.25, 0.75]] * spatial) if cutmix and len(s) == spatial + 2 else None for s, _ in shapes]
    impl = {"old": _old_mix, "new": lambda h, lam, perm, box: mix(h, lam, perm, box=box)}

    def copy() -> None:
        with torch.no_grad():
            for sink, h in zip(sinks, hs):
                sink.copy_(h)

    def forward(fn: Callable) -> Callable[[], float]:
        def run() -> None:
            with torch.no_grad():
                [fn(h.detach(), lam, perm, b) for h, b in zip(hs, boxes)]
        return _timed(run)

    def backward(fn: Callable) -> Callable[[], float]:
        def run() -> float:
            outs = [fn(h, lam, perm, b) for h, b in zip(hs, boxes)]
            t0 = time.perf_counter()
            torch.autograd.backward(outs, grads)
            elapsed = time.perf_counter() - t0
            for h in hs:
                h.grad = None
            return elapsed
        return run

    fns = {"copy": _timed(copy)}
    for name, fn in impl.items():
        fns[f"{name} fwd"] = forward(fn)
        fns[f"{name} bwd"] = backward(fn)
    result = _interleaved(fns, reps)
    result["floor"] = 1.5 * result["copy"]
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
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (1: steadier on a shared machine; the floor uses the same)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bw = copy_bandwidth()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, reps {args.reps}, "
          f"copy_ bandwidth {bw / 1e9:.2f} GB/s (read + write)")
    header = ("| model | point | mode | state MiB | floor ms | old fwd | old bwd | new fwd | new bwd "
              "| new fwd / floor | new bwd / floor |")
    print(header)
    print("|" + "---|" * 11)
    totals: dict[str, float] = {}
    for label, model, x in _models(args):
        states = record_states(model, x)
        for point, shapes in states.items():
            for cutmix in (False, True):
                r = time_state(shapes, cutmix=cutmix, reps=args.reps)
                floor = r["floor"]
                ms = {k: v * 1e3 for k, v in r.items()}
                print(f"| {label} | {point} ({len(shapes)} t) | {'cutmix' if cutmix else 'mixup'} "
                      f"| {r['bytes'] / 2**20:.1f} | {floor * 1e3:.2f} | {ms['old fwd']:.2f} | {ms['old bwd']:.2f} "
                      f"| {ms['new fwd']:.2f} | {ms['new bwd']:.2f} | {r['new fwd'] / floor:.2f} "
                      f"| {r['new bwd'] / floor:.2f} |", flush=True)
                for key in ("old fwd", "old bwd", "new fwd", "new bwd"):
                    totals[key] = totals.get(key, 0.0) + r[key]
                totals["floor"] = totals.get("floor", 0.0) + floor
    f = totals["floor"]
    print(f"all points and modes: floor {f * 1e3:.1f} ms each way; forward old {totals['old fwd'] / f:.2f}x, "
          f"new {totals['new fwd'] / f:.2f}x the floor; backward old {totals['old bwd'] / f:.2f}x, "
          f"new {totals['new bwd'] / f:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
