"""Training-step overhead and peak memory of Manifold Mixup on every model family: mixed vs plain.

    python benchmarks/overhead.py [--cases all] [--reps 15] [--compile resnet18,unet_r18]
                                  [--memory] [--device cpu] [--threads 2] [--markdown FILE]

Each repetition times one plain step and one mixed step (forward, loss, backward, SGD step) back to
back, alternating which goes first, so drifts in machine load hit both alike. The mixed step draws
a fresh plan each time (a random default point, as in training). Reported per case: the median
seconds of each, the ratio of medians (mixed / plain), the median of the per-repetition ratios
(paired: each mixed step against the plain step beside it) and the spread of those paired ratios
(25th-75th percentile). The mixed step does a little more arithmetic by design (the mix itself and
a soft-target loss), so the ratio measures that plus any routing overhead.

``--compile CASES`` repeats the comparison with ``torch.compile(model)`` (made after the mixer) for
the named cases; the warm-up visits every point, so the timed steps never compile.

``--memory`` measures peak memory in a fresh subprocess per case and variant: on CPU the peak RSS
(``VmHWM``, reset after set-up through ``/proc/self/clear_refs``) minus the RSS before the first step (after the model, data and optimizer
are built; the mixed variant builds its mixer after that, so the mixer's graphs count), over one
step at every point; on CUDA ``torch.cuda.max_memory_allocated`` above the memory allocated before
the first step. The plain variant never creates a mixer.

A case is ``NAME`` or ``NAME:BxS`` (batch B, spatial size S; the CRNN's S is the line width).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch

__all__ = ["CASES", "build_case", "measure", "peak_memory", "main"]

#: name -> (family, model name, options, task, default batch, default spatial size)
CASES: dict[str, tuple[str, str, dict[str, Any], str, int, int]] = {
    "resnet18": ("timm", "resnet18", {}, "classification", 32, 64),
    "resnet50": ("timm", "resnet50", {}, "classification", 16, 64),
    "vit_tiny": ("timm", "vit_tiny_patch16_224", {"img_size": 64}, "classification", 16, 64),
    "convnext_atto": ("timm", "convnext_atto", {}, "classification", 16, 64),
    "unet_r18": ("smp", "unet", {"encoder_name": "resnet18"}, "segmentation", 8, 128),
    "fpn_r18": ("smp", "fpn", {"encoder_name": "resnet18"}, "segmentation", 8, 128),
    "unet_r34": ("smp", "unet", {"encoder_name": "resnet34"}, "segmentation", 8, 128),
    "monai_unet3d": ("monai", "unet", {"spatial_dims": 3}, "segmentation3d", 2, 48),
    "crnn": ("crnn", "crnn", {}, "ctc", 16, 128),
}
DEFAULT_CASES = ["resnet18", "resnet50", "vit_tiny", "convnext_atto", "unet_r18", "fpn_r18", "monai_unet3d", "crnn"]


def parse_case(spec: str) -> tuple[str, int, int]:
    """``"resnet50:256x224"`` -> ``("resnet50", 256, 224)``; sizes default per case."""
    name, _, size = spec.partition(":")
    if name not in CASES:
        raise ValueError(f"unknown case {name!r}; valid: {sorted(CASES)} (optionally NAME:BxS, e.g. resnet50:16x64).")
    batch, spatial = CASES[name][4], CASES[name][5]
    if size:
        try:
            batch, spatial = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"case size must be BxS (batch x spatial size); received {size!r} in {spec!r}.") from None
    return name, batch, spatial


def build_case(name: str, batch: int, size: int, device: str, *, channels_last: bool = False):
    """The model (train mode, on ``device``), its adapter, an input batch and its targets."""
    from mmix_applied.adapters import CTC, Classification, Segmentation
    from mmix_applied.models import create_model

    family, model_name, options, task, _, _ = CASES[name]
    g = torch.Generator().manual_seed(0)
    if task == "ctc":
        classes, length = 11, 8
        model = create_model(family, model_name, num_classes=classes, in_channels=1, **options)
        x = torch.randn(batch, 1, 32, size, generator=g)
        targets = torch.randint(1, classes, (batch, length), generator=g)
        lengths = torch.randint(4, length + 1, (batch,), generator=g)
        adapter, y = CTC(), (targets.to(device), lengths.to(device))
    elif task == "classification":
        model = create_model(family, model_name, num_classes=10, **options)
        x = torch.randn(batch, 3, size, size, generator=g)
        adapter, y = Classification(10), torch.randint(0, 10, (batch,), generator=g).to(device)
    else:
        spatial = 3 if task == "segmentation3d" else 2
        channels = 1 if spatial == 3 else 3
        model = create_model(family, model_name, num_classes=4, in_channels=channels, **options)
        x = torch.randn(batch, channels, *[size] * spatial, generator=g)
        adapter = Segmentation(4)
        y = torch.randint(0, 4, (batch, *[size] * spatial), generator=g).to(device)
    model = model.to(device).train()
    x = x.to(device)
    if channels_last and x.dim() in (4, 5):
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        model = model.to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)
    return model, adapter.to(device), x, y


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _steps(model, adapter, x, y, *, compiled: bool, bf16: bool, device: str, points: Any = "auto",
           backend: str = "inductor"):
    """(plain step, mixed step, mixer) sharing one model and optimizer."""
    from mmix_applied import ManifoldMixup, MixPlan

    mixer = ManifoldMixup(model, seed=0, points=points)
    net = torch.compile(model, backend=backend) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    autocast = (lambda: torch.autocast(device.split(":")[0], dtype=torch.bfloat16)) if bf16 else nullcontext

    def plain() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = adapter.loss(net(x), y)
        loss.backward()
        opt.step()

    def mixed(point: str | None = None) -> None:
        opt.zero_grad(set_to_none=True)
        plan = mixer.sample(x.shape[0], device=x.device, input_shape=tuple(x.shape))
        if point is not None:
            plan = MixPlan(point, plan.lam, plan.perm, plan.box)
        with autocast(), mixer.apply(plan):
            loss = adapter.loss(net(x), y, plan)
        loss.backward()
        opt.step()

    return plain, mixed, mixer


def measure(model, adapter, x, y, *, reps: int, device: str, compiled: bool = False, bf16: bool = False,
            points: Any = "auto", backend: str = "inductor") -> dict:
    """Median plain and mixed step seconds, ratio of medians, median paired ratio and its spread."""
    plain, mixed, mixer = _steps(model, adapter, x, y, compiled=compiled, bf16=bf16, device=device,
                                 points=points, backend=backend)
    t0 = time.perf_counter()
    for point in mixer.points:  # warm-up: every point compiles (or caches) here, not in the timing
        plain(), mixed(point)
    plain(), mixed()
    _sync(device)
    warmup = time.perf_counter() - t0
    times: dict[str, list[float]] = {"plain": [], "mixed": []}
    for i in range(reps):
        order = (("plain", plain), ("mixed", mixed)) if i % 2 == 0 else (("mixed", mixed), ("plain", plain))
        for name, step in order:
            _sync(device)
            t = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - t)
    mixer.close()
    paired = sorted(m / p for m, p in zip(times["mixed"], times["plain"]))
    q = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
    p_med, m_med = statistics.median(times["plain"]), statistics.median(times["mixed"])
    return {"plain": p_med, "mixed": m_med, "ratio": m_med / p_med, "paired": statistics.median(paired),
            "q1": q[0], "q3": q[2], "warmup": warmup, "points": len(mixer.points)}


def _status_bytes(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (the RSS high-water mark) of this process, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}: peak RSS needs Linux.")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so imports and set-up do not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _probe(spec: str, variant: str, device: str, bf16: bool, channels_last: bool) -> dict:
    """In this (fresh) process: memory above the pre-step baseline over one step at every point."""
    from mmix_applied import ManifoldMixup, MixPlan

    name, batch, size = parse_case(spec)
    model, adapter, x, y = build_case(name, batch, size, device, channels_last=channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if bf16 else nullcontext()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _status_bytes("VmRSS")
        _reset_peak_rss()
    mixer = ManifoldMixup(model, seed=0) if variant == "mixed" else None
    built = torch.cuda.memory_allocated() if cuda else _status_bytes("VmRSS")
    for point in mixer.points if mixer else [None, None]:
        opt.zero_grad(set_to_none=True)
        if mixer is None:
            with autocast:
                loss = adapter.loss(model(x), y)
        else:
            plan = mixer.sample(batch, device=x.device, input_shape=tuple(x.shape))
            plan = MixPlan(point, plan.lam, plan.perm, plan.box)
            with autocast, mixer.apply(plan):
                loss = adapter.loss(model(x), y, plan)
        loss.backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_bytes("VmHWM")
    return {"base": base, "peak": peak, "delta": peak - base, "mixer": built - base, "step": peak - built}


def peak_memory(spec: str, *, device: str, bf16: bool = False, channels_last: bool = False,
                threads: int | None = None) -> dict[str, dict]:
    """Run :func:`_probe` for the plain and the mixed variant, each in a fresh subprocess."""
    result = {}
    for variant in ("plain", "mixed"):
        cmd = [sys.executable, __file__, "--_probe", spec, variant, "--device", device]
        cmd += ["--bf16"] * bf16 + ["--channels-last"] * channels_last + (["--threads", str(threads)] if threads else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated NAME or NAME:BxS; 'all' for every case. Names: {', '.join(CASES)}")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--compile", default="", help="cases to time compiled too ('all' for every case)")
    parser.add_argument("--no-eager", action="store_true", help="time the compiled model only")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend ('eager' for a smoke run)")
    parser.add_argument("--compile-points", default="auto",
                        help="points of the compiled mixer, comma-separated (each point compiles once); default auto")
    parser.add_argument("--memory", action="store_true", help="peak-memory ratio, a fresh subprocess per variant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast around forward and loss")
    parser.add_argument("--channels-last", action="store_true", help="channels_last (3D: channels_last_3d)")
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    parser.add_argument("--_probe", nargs=2, metavar=("CASE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._probe:
        print(json.dumps(_probe(*args._probe, args.device, args.bf16, args.channels_last)))
        return 0
    specs = list(CASES) if args.cases == "all" else [s for s in args.cases.split(",") if s]
    compile_names = set(CASES) if args.compile == "all" else {s for s in args.compile.split(",") if s}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    head = (f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, reps {args.reps}, "
            f"bf16 {args.bf16}, channels_last {args.channels_last}, load average at start {load:.2f}")
    lines = [head, "",
             "| case | points | compiled | plain s | mixed s | images/s plain | images/s mixed | ratio of medians "
             "| paired ratio [q1, q3] | peak mem plain | peak mem mixed | mem ratio | of it, mixer build |",
             "|" + "---|" * 13]
    print("\n".join(lines), flush=True)
    for spec in specs:
        name, batch, size = parse_case(spec)
        label = f"{name} {batch}x{size}"
        memory = None
        if args.memory:
            memory = peak_memory(spec, device=args.device, bf16=args.bf16, channels_last=args.channels_last,
                                 threads=args.threads)
        modes = ([] if args.no_eager else [False]) + ([True] if name in compile_names else [])
        for compiled in modes:
            model, adapter, x, y = build_case(name, batch, size, args.device, channels_last=args.channels_last)
            points = args.compile_points.split(",") if compiled and args.compile_points != "auto" else "auto"
            r = measure(model, adapter, x, y, reps=args.reps, device=args.device, compiled=compiled, bf16=args.bf16,
                        points=points, backend=args.compile_backend)
            mem = "| - | - | - | - |"
            if memory is not None and not compiled:
                mp, mm = memory["plain"]["delta"], memory["mixed"]["delta"]
                build = memory["mixed"]["mixer"]
                mem = (f"| {mp / 2**20:.0f} MiB | {mm / 2**20:.0f} MiB | {mm / mp:.3f} "
                       f"| {build / 2**20:.0f} MiB (steps alone {memory['mixed']['step'] / mp:.3f}) |")
            line = (f"| {label} | {r['points']} | {'yes (warm-up ' + format(r['warmup'], '.0f') + ' s)' if compiled else 'no'} "
                    f"| {r['plain']:.4f} | {r['mixed']:.4f} | {batch / r['plain']:.1f} | {batch / r['mixed']:.1f} "
                    f"| {r['ratio']:.3f} | {r['paired']:.3f} [{r['q1']:.3f}, {r['q3']:.3f}] {mem}")
            lines.append(line)
            print(line, flush=True)
            del model
            if compiled:
                torch._dynamo.reset()
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
