"""``make demo``: does Manifold Mixup pay? A paired comparison on the embedded MNIST digits, end to end.

Runs :func:`mmix_applied.compare.compare` on the shipped config ``demo_classification``
(``configs/demo_classification.yaml``, :data:`CONFIG`): the classification recipe in the small-labeled,
long regime where the unmixed model overfits (its fitted temperature is above 1), with the mixing
setting chosen there on validation (docs/results.md gives the three-seed figures). The code holds no
setting: the run length, data size, model and mixing all come from that file, and ``-c`` runs the demo
on another classification config. Every variant trains with the same seeds (same labeled subset,
initialisation and data order), is tested unmixed, and the demo prints one table (accuracy, NLL and
ECE raw and temperature-scaled, the fitted temperatures, mean ± std over seeds) and two verdicts
computed from the paired per-seed differences (:func:`mmix_applied.reports.comparison.verdict_line`): on
temperature-scaled test NLL and on test accuracy. It writes compare's report and PNGs (reliability
diagrams, validation curves).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

from mmix_applied.utils.atomic import atomic_write_text

__all__ = ["CONFIG", "accuracy_verdict", "demo_overrides", "main", "table", "verdict"]

#: The demo's config: a recipe config shipped with the package (:func:`mmix_applied.engine.config.resolve_config`).
CONFIG = "demo_classification"
COLUMNS = (("acc", "test/acc"), ("NLL", "test/nll"), ("NLL scaled", "test/nll_scaled"), ("ECE", "test/ece"),
           ("ECE scaled", "test/ece_scaled"), ("T", "temperature"))


def demo_overrides(*, model: str, labels_per_class: int, epochs: int, val_every: int = 1,
                   max_steps: int = -1) -> list[str]:
    """The dotted overrides every demo run gets on top of its config (compare adds ``mix.variant``, ``seed``...).

    The command line's run length, data size and model, validation at most once per run's epochs, and
    the demo's CPU settings; everything else (mixing included) is the config's.
    """
    return [f"model.name={model}", f"data.labels_per_class={labels_per_class}", f"train.max_epochs={epochs}",
            f"train.max_steps={max_steps}", f"train.check_val_every_n_epoch={min(val_every, max(1, epochs))}",
            "train.accelerator=cpu", "train.devices=1", "train.enable_progress_bar=false", "train.loggers=[csv]"]


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one line per variant, mean ± std over seeds of each column ("–": not reported)."""
    head = ["variant", "seeds", *(name for name, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        cells = [variant, str(len(mine))]
        for _, key in COLUMNS:
            got = [(r.get("metrics") or {}).get(key, r.get(key) if key == "temperature" else None) for r in mine]
            cells.append(_cell([float(v) for v in got if isinstance(v, (int, float)) and math.isfinite(v)]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]], *, variant: str = "manifold") -> str:
    """The verdict on scaled test NLL, or on raw NLL (said so) where the runs report no temperature."""
    from mmix_applied.reports.comparison import verdict_line

    if all("test/nll_scaled" in (r.get("metrics") or {}) for r in rows):
        return verdict_line(rows, metric="test/nll_scaled", variant=variant, label="temperature-scaled test NLL")
    return verdict_line(rows, metric="test/nll", variant=variant,
                        label="raw test NLL (these runs report no temperature)")


def accuracy_verdict(rows: list[dict[str, Any]], variant: str = "manifold") -> str:
    """The verdict on test accuracy (mixing can win it while losing NLL, or the other way round)."""
    from mmix_applied.reports.comparison import verdict_line

    return verdict_line(rows, metric="test/acc", variant=variant, label="test accuracy")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison demo; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="mmix-applied demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="classification", choices=("classification", "segmentation"))
    parser.add_argument("-c", "--config", default=CONFIG, help="a classification config: a YAML path or a shipped "
                        f"config's name (default {CONFIG}: the regime and setting chosen in docs/results.md)")
    parser.add_argument("--out", default="runs", help="parent folder of the demo's directory (default runs)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, paired across variants (default 0: "
                        "one seed fits 5 minutes on 2 cores; docs/results.md has three)")
    parser.add_argument("--variants", default="none,manifold", help="comma-separated: none, input, manifold "
                        "(input runs at the same alpha and clean term)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's train.max_epochs")
    parser.add_argument("--labels-per-class", type=int, default=None,
                        help="default: the config's data.labels_per_class")
    parser.add_argument("--model", default=None, help="default: the config's model.name")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop each run after N steps (smoke tests)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers; received {args.seeds!r}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not seeds or not variants or "none" not in variants or any(v not in ("none", "input", "manifold")
                                                                   for v in variants):
        parser.error(f"--variants takes none (the paired baseline) and input and/or manifold, --seeds at least one "
                     f"seed; received {args.variants!r}, {args.seeds!r}")
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import torch

    from mmix_applied.compare import compare
    from mmix_applied.engine.config import load_config, resolve_config

    config = resolve_config(args.config)
    base = load_config(config)
    if base.recipe != "classification":
        parser.error(f"-c: the comparison demo runs a classification config; received {args.config!r}, a "
                     f"{base.recipe} config (the segmentation demo: --task segmentation)")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) / f"demo-classification-{time.strftime('%Y%m%d-%H%M%S')}"
    model = args.model or base.model.name
    labels = args.labels_per_class if args.labels_per_class is not None else base.data.labels_per_class
    epochs = args.epochs if args.epochs is not None else base.train.max_epochs
    overrides = demo_overrides(model=model, labels_per_class=labels, epochs=epochs,
                               val_every=base.train.check_val_every_n_epoch, max_steps=args.max_steps)
    clean = f" with the RegMixup clean term (weight {base.mix.clean_weight})" if base.mix.clean_weight else ""
    print(f"mmix_applied demo: {', '.join(variants)} on embedded MNIST, {labels} labels per class, "
          f"{epochs} epochs of timm {model}, mixing at alpha {base.mix.alpha}{clean}, seeds {seeds} (paired). "
          f"Directory: {out}", flush=True)
    start = time.perf_counter()
    report = compare(config, variants=variants, seeds=seeds, overrides=overrides, out_dir=out,
                     command="mmix-applied demo " + " ".join(argv or []))
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    text = table(rows)
    lines = [line for v in variants if v != "none" for line in (verdict(rows, variant=v), accuracy_verdict(rows, v))]
    total = time.perf_counter() - start
    atomic_write_text(out / "demo.md", f"# Classification demo\n\n{text}\n\n" + "\n".join(lines) + "\n")
    print("\n" + text + "\n")
    for line in lines:
        print(line)
    pngs = sorted(p.name for p in out.glob("*.png"))
    print(f"wrote {report}, {out / 'demo.md'} and {', '.join(pngs) or 'no plots'} ({total:.0f} s)")
    return 0
