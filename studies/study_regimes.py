"""The study's regimes and goals as data, and the goal checks as pure functions of result rows.

A :class:`Regime` is one ``compare`` (variants x seeds of one config with fixed overrides); its
``sizes`` give the run length per profile (``cpu``: this 2-core machine; ``gpu``: one H200 in
under 10 minutes; ``quick``: a smoke run). A regime with a ``grid`` is a map: one ``compare`` of
the ``manifold`` variant per cell, paired against the ``none`` runs of its ``baseline`` regime.
Regimes whose config keys do not exist yet (``requires``) are skipped with the config's own error.

Each :class:`Goal` restates one target of issue #11 ("Goals to hold the results against") and is
checked from the numbers: ``met``, ``not met`` or ``not measured``; nothing is written in advance.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mmix_applied.reports.comparison import summarize

__all__ = ["ACC_TOLERANCE", "GOALS", "Goal", "KEY_METRICS", "REGIMES", "Regime", "SELECT", "choose", "chosen_rows",
           "grid_cells", "groups", "pool"]

# "equal or better" accuracy / Dice: the mean may be lower by at most this (0.2 points of accuracy:
# 2 of the 1,000 MNIST test digits); fixed here, before any run.
ACC_TOLERANCE = 0.002
# What each recipe's settings are chosen on: a validation figure (``compare`` rows' ``val``), never a test one.
SELECT = {"classification": "val/nll_scaled", "segmentation": "val/mean_dice", "handwriting": "val/cer"}
KEY_METRICS = {
    "classification": ("test/acc", "test/nll", "test/nll_scaled", "test/ece_scaled"),
    "segmentation": ("test/mean_dice", "test/nll", "test/nll_scaled", "test/ece_scaled"),
    "handwriting": ("test/cer", "test/wer"),
}


@dataclasses.dataclass(frozen=True)
class Regime:
    """One comparison of the study.

    Attributes:
        name: Directory name under the study's output (``runs/study/<name>``).
        title: The section heading.
        config: The recipe's YAML, relative to the repository root.
        overrides: Dotted overrides of every profile.
        sizes: Per profile (``cpu``, ``gpu``, ``quick``) overrides setting the run length and batch.
        variants: ``mix.variant`` values compared.
        quick: Whether ``--quick`` runs it.
        quick_variants: The variants of a ``--quick`` run (default: ``variants``).
        spectrum_point: For classification, the point whose class-conditional spectrum compare reports.
        grid: A map: ``{key: values}``; each combination is one cell run as the ``manifold`` variant.
        baseline: For a map, the regime whose ``none`` runs are the paired baseline.
        note: One line under the heading (what the regime is for).
        label: For a plain regime with a ``baseline``: its runs join the baseline's in one pooled table,
            each variant named ``"<variant> <label>"`` (e.g. ``manifold a=0.2``); the setting of each
            variant is chosen there on validation figures.
    """

    name: str
    title: str
    config: str
    overrides: tuple[str, ...] = ()
    sizes: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    variants: tuple[str, ...] = ("none", "input", "manifold")
    quick: bool = True
    quick_variants: tuple[str, ...] | None = None
    spectrum_point: str | None = None
    grid: Mapping[str, tuple[str, ...]] | None = None
    baseline: str | None = None
    note: str = ""
    label: str | None = None


def grid_cells(regime: Regime) -> list[tuple[str, tuple[str, ...]]]:
    """``[(cell name, overrides)]`` of a map regime, in a fixed order (``[]`` for a plain regime)."""
    if not regime.grid:
        return []
    keys = list(regime.grid)
    cells = []
    for values in itertools.product(*(regime.grid[k] for k in keys)):
        short = "-".join(f"{k.split('.')[-1]}={_label(v)}" for k, v in zip(keys, values))
        cells.append((short, tuple(f"{k}={v}" for k, v in zip(keys, values))))
    return cells


def _label(value: str) -> str:
    return {"[input,layer1,layer2]": "paper"}.get(value, value)  # a list value as a short folder name


_CLS = "configs/classification.yaml"
_SEG = "configs/segmentation.yaml"
_HW = "configs/handwriting.yaml"
# One H200: the 200 (20 a class) or 1,000 (100 a class) training digits in 4 or 8 full batches an
# epoch (training loaders drop the last partial batch), the 500 validation digits in one.
_GPU_CLS20 = ("model.name=resnet18", "data.batch_size=50", "data.eval_batch_size=1000")
_GPU_CLS100 = ("model.name=resnet18", "data.batch_size=125", "data.eval_batch_size=1000")
_LONG_VAL = ("train.check_val_every_n_epoch=5",)
# 64 labeled canvases of 2-3 MNIST glyphs, 11 classes (10 digits + background); no augmentation.
_CANVAS = ("data.source=digit_canvas", "data.num_classes=11", "data.num_train=64", "data.flip=false",
           "data.elastic=false", "data.intensity=false")
# The 120-epoch canvas regimes: 8 steps an epoch on the CPU, where the unmixed U-Net overfits.
_CANVAS120_SIZES = {"cpu": ("train.max_epochs=120", "data.batch_size=8", "train.check_val_every_n_epoch=10"),
                    "gpu": ("train.max_epochs=300", "data.batch_size=16"),
                    "quick": ("data.num_train=16", "data.batch_size=4")}

REGIMES: tuple[Regime, ...] = (
    Regime("cls20-short", "Classification, 20 labels per class, short regularised run", _CLS,
           ("data.labels_per_class=20",),
           {"cpu": ("train.max_epochs=30",), "gpu": (*_GPU_CLS20, "train.max_epochs=100"),
            "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")}, quick=False,
           note="Few epochs: the unmixed model has not yet memorised the 200 training digits."),
    Regime("cls20-long", "Classification, 20 labels per class, long run, alpha 0.5", _CLS,
           ("data.labels_per_class=20", "mix.alpha=0.5", *_LONG_VAL),
           {"cpu": ("train.max_epochs=100",), "gpu": (*_GPU_CLS20, "train.max_epochs=400"),
            "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")},
           spectrum_point="layer2", label="a=0.5",
           note="timm resnet18 from scratch on 200 labeled digits for 100 epochs: long enough that the unmixed "
                "model overfits (T > 1)."),
    Regime("cls100-short", "Classification, 100 labels per class, short regularised run", _CLS,
           ("data.labels_per_class=100",),
           {"cpu": ("train.max_epochs=15",), "gpu": (*_GPU_CLS100, "train.max_epochs=50"),
            "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")}, quick=False),
    Regime("cls100-long", "Classification, 100 labels per class, long run, alpha 0.5", _CLS,
           ("data.labels_per_class=100", "mix.alpha=0.5", *_LONG_VAL),
           {"cpu": ("train.max_epochs=40",), "gpu": (*_GPU_CLS100, "train.max_epochs=200"),
            "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")},
           spectrum_point="layer2", quick=False, label="a=0.5",
           note="timm resnet18 from scratch on 1,000 labeled digits, the recipe's optimiser; the regime where the "
                "issue's two-seed sweep saw alpha 0.2-0.5 win. Points `auto` (input, layer1, layer2)."),
    Regime("cls100-long-a0.2", "Classification, 100 labels per class, long run, alpha 0.2", _CLS,
           ("data.labels_per_class=100", "mix.alpha=0.2", *_LONG_VAL),
           {"cpu": ("train.max_epochs=40",), "gpu": (*_GPU_CLS100, "train.max_epochs=200"),
            "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")},
           variants=("input", "manifold"), quick=False, baseline="cls100-long", label="a=0.2",
           note="As cls100-long with alpha 0.2; paired with its `none` runs."),
    Regime("cls100-long-a2", "Classification, 100 labels per class, long run, alpha 2.0 (the paper's CIFAR value)",
           _CLS, ("data.labels_per_class=100", "mix.alpha=2.0", *_LONG_VAL),
           {"cpu": ("train.max_epochs=40",), "gpu": (*_GPU_CLS100, "train.max_epochs=200"),
            "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")},
           variants=("manifold",), quick=False, baseline="cls100-long", label="a=2.0",
           note="As cls100-long with alpha 2.0, the recipe's default before this study; paired with its `none` runs."),
    Regime("cls100-long-all", "Classification, 100 labels per class, long run, alpha 0.5, points all", _CLS,
           ("data.labels_per_class=100", "mix.alpha=0.5", "mix.points=all", *_LONG_VAL),
           {"cpu": ("train.max_epochs=40",), "gpu": (*_GPU_CLS100, "train.max_epochs=200"),
            "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")},
           variants=("manifold",), quick=False, baseline="cls100-long", label="a=0.5 all",
           note="As cls100-long with `points: all` (input and all five feature_info stages, layer4 included)."),
    Regime("cls50-long", "Classification, 50 labels per class, long run, alpha 0.5", _CLS,
           ("data.labels_per_class=50", "mix.alpha=0.5", *_LONG_VAL),
           {"cpu": ("train.max_epochs=40",), "gpu": (*_GPU_CLS20, "train.max_epochs=200"),
            "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")},
           variants=("none", "manifold"), quick=False, label="a=0.5",
           note="As cls100-long on 500 labeled digits: half the steps, the size `make demo` can afford on 2 cores."),
    Regime("cls50-long-a0.2", "Classification, 50 labels per class, long run, alpha 0.2", _CLS,
           ("data.labels_per_class=50", "mix.alpha=0.2", *_LONG_VAL),
           {"cpu": ("train.max_epochs=40",), "gpu": (*_GPU_CLS20, "train.max_epochs=200"),
            "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")},
           variants=("input", "manifold"), quick=False, baseline="cls50-long", label="a=0.2",
           note="As cls50-long with alpha 0.2 (input mixup's default, chosen at 100 labels per class); paired with "
                "its `none` runs."),
    Regime("cls50-long-all", "Classification, 50 labels per class, long run, alpha 0.5, points all", _CLS,
           ("data.labels_per_class=50", "mix.alpha=0.5", "mix.points=all", *_LONG_VAL),
           {"cpu": ("train.max_epochs=40",), "gpu": (*_GPU_CLS20, "train.max_epochs=200"),
            "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")},
           variants=("manifold",), quick=False, baseline="cls50-long", label="a=0.5 all",
           note="As cls50-long with `points: all` (input and all five feature_info stages, layer4 included)."),
    *(Regime(f"cls50-long-{tag}", f"Classification, 50 labels per class, long run, alpha 0.2, {what}", _CLS,
             ("data.labels_per_class=50", "mix.alpha=0.2", *extra, *_LONG_VAL),
             {"cpu": ("train.max_epochs=40",), "gpu": (*_GPU_CLS20, "train.max_epochs=200"),
              "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")},
             variants=("manifold",), quick=False, baseline="cls50-long", label=f"a=0.2 {tag}",
             note=f"As cls50-long-a0.2 with {what}: one knob of issue #11 §1 at a time; paired with cls50-long's "
                  "`none` runs.")
      for tag, what, extra in (
          ("prob0.5", "mixing on half the steps (`mix.prob: 0.5`)", ("mix.prob=0.5",)),
          ("off5", "the last 5 of 40 epochs unmixed (`mix.off_last_epochs: 5`)", ("mix.off_last_epochs=5",)),
          ("clean1", "the RegMixup clean term (`mix.clean_weight: 1.0`: a second, unmixed forward per step)",
           ("mix.clean_weight=1.0",)),
      )),
    Regime("cls20-long-map", "Classification, 20 labels per class, long run: alpha x points x prob", _CLS,
           ("data.labels_per_class=20", *_LONG_VAL),
           {"cpu": ("train.max_epochs=100",), "gpu": (*_GPU_CLS20, "train.max_epochs=400"),
            "quick": ("model.name=test_resnet", "data.labels_per_class=2", "data.batch_size=8")},
           variants=("manifold",), baseline="cls20-long",
           grid={"mix.alpha": ("0.2", "0.5", "2.0"), "mix.points": ("auto", "all"), "mix.prob": ("0.5", "1.0")},
           note="Manifold mixup only; each cell is paired per seed with the `none` runs of cls20-long. "
                "points=auto is the paper's {input, layer1, layer2}; all adds act1, layer3 and layer4."),
    Regime("seg-brain2d", "Segmentation, brain tissue 2D (one template brain: a demo, not a benchmark)", _SEG, (),
           {"cpu": ("train.max_epochs=40",), "gpu": ("train.max_epochs=100", "data.batch_size=16"),
            "quick": ("train.max_epochs=1", "data.batch_size=4")}, quick_variants=("none", "manifold")),
    Regime("seg-brain3d", "Segmentation, brain tissue 3D", "configs/segmentation_3d.yaml", (),
           # An epoch is one step (one training brain, batch 2 x 2 patches): 40 epochs (13 s a run on one
           # thread) left every variant underfit (validation Dice 0.45-0.57, T < 1); the CPU study runs 300.
           {"cpu": ("train.max_epochs=300", "train.check_val_every_n_epoch=25"),
            "gpu": ("data.batch_size=4", "train.max_epochs=600")},
           quick=False),
    Regime("seg-digit-canvas", "Segmentation with a generalisation gap: MNIST digits on 64 x 64 canvases", _SEG,
           _CANVAS,
           # 120 epochs of 8 steps: an unmixed U-Net reaches train Dice 0.85 vs test 0.59 (40 epochs: 0.33
           # vs 0.28, underfit); studies/digit_canvas_gap.py, 2026-12-01. The CPU study runs 90 (what
           # 2 cores had time for beside the classification study, 2026-12-02). GPU: 300 x 4 steps.
           {"cpu": ("train.max_epochs=90", "data.batch_size=8", "train.check_val_every_n_epoch=10"),
            "gpu": ("train.max_epochs=300", "data.batch_size=16"),
            "quick": ("data.num_train=16", "data.batch_size=4")}, variants=("none", "manifold"),
           note="64 labeled canvases; train, val and test glyphs from disjoint MNIST images "
                "(mmix_applied.data.digit_canvas). Needs the recipe's `data.source: digit_canvas` (phase 2)."),
    Regime("seg-canvas120", "Segmentation with a generalisation gap, 120 epochs, alpha 0.4", _SEG, _CANVAS,
           _CANVAS120_SIZES, variants=("none", "manifold"), quick=False,
           label="a=0.4",
           note="As seg-digit-canvas for 120 epochs, the length where the unmixed U-Net overfits (train Dice 0.85 "
                "vs test 0.59, studies/digit_canvas_gap.py): the regime a regulariser is for."),
    Regime("seg-canvas120-a0.2", "Segmentation with a generalisation gap, 120 epochs, alpha 0.2", _SEG,
           (*_CANVAS, "mix.alpha=0.2"),
           _CANVAS120_SIZES, variants=("manifold",), quick=False,
           baseline="seg-canvas120", label="a=0.2",
           note="As seg-canvas120 with alpha 0.2 (the recipe's is 0.4); paired with its `none` runs."),
    Regime("seg-canvas120-shallow", "Segmentation with a generalisation gap, 120 epochs, alpha 0.4, shallow points",
           _SEG, (*_CANVAS, "mix.points=[input,model.0,model.1.submodule.0]"),
           _CANVAS120_SIZES, variants=("manifold",), quick=False,
           baseline="seg-canvas120", label="a=0.4 shallow",
           note="As seg-canvas120 with the paper's kind of set for the MONAI U-Net: the input and the first two "
                "encoder levels (`auto` adds the two deeper ones); paired with seg-canvas120's `none` runs."),
    *(Regime(f"seg-canvas120-smp{tag}", f"Segmentation with a generalisation gap, 120 epochs, smp Unet (resnet18), {what}",
             _SEG, (*_CANVAS, "model.family=smp", "model.name=unet",
                    "model.options={encoder_name: resnet18, encoder_weights: null}", *extra),
             _CANVAS120_SIZES, variants=variants, quick=False,
             baseline=None if not tag else "seg-canvas120-smp", label=f"smp {what}",
             note=f"As seg-canvas120 with an smp Unet on a randomly initialised resnet18 encoder, {what}. "
                  "About 12 min a run on one CPU thread, two runs at a time (2026-12-02, session 5).")
      for tag, what, extra, variants in (
          ("", "points auto", (), ("none", "manifold")),
          ("-shallow", "points input + encoder layer1, layer2",
           ("mix.points=[input,encoder.layer1,encoder.layer2]",), ("manifold",)),
      )),
    Regime("hw-digits", "Handwriting, digit strings, mixing from the first step", _HW, ("mix.warmup_epochs=0",),
           {"cpu": ("train.max_epochs=4",),
            "gpu": ("data.batch_size=128", "train.max_epochs=40"),
            "quick": ("data.digits.train_lines=64", "data.digits.val_lines=16", "data.digits.test_lines=16",
                      "data.batch_size=8")}, variants=("none", "manifold"), label="warmup=0",
           note="The config's mixing (alpha 0.5 on half the steps) from the first step. CPU: 4 epochs of 125 steps "
                "(4,000 lines; with 2,000 lines x 4 epochs even the unmixed CRNN stayed all-blank, CER 1.0)."),
    Regime("hw-digits-warmup", "Handwriting, digit strings, no mixing for the first epoch", _HW,
           ("mix.warmup_epochs=1",),
           {"cpu": ("train.max_epochs=4",),
            "gpu": ("data.batch_size=128", "train.max_epochs=40"),
            "quick": ("data.digits.train_lines=64", "data.digits.val_lines=16", "data.digits.test_lines=16",
                      "data.batch_size=8", "train.max_epochs=2")},
           variants=("manifold",), baseline="hw-digits", label="warmup=1",
           note="As hw-digits, with no mixing in the first epoch; paired with hw-digits' `none` runs."),
    Regime("hw-lines1k", "Handwriting, 1,000 labeled lines, 20 epochs, warm-up 4 epochs", _HW,
           ("data.digits.train_lines=1000", "mix.warmup_epochs=4"),
           {"cpu": ("train.max_epochs=20",),
            "gpu": ("data.batch_size=32", "train.max_epochs=60"),
            "quick": ("data.digits.train_lines=64", "data.digits.val_lines=16", "data.digits.test_lines=16",
                      "data.batch_size=8", "train.max_epochs=5")}, variants=("none", "manifold"), quick=False,
           note="A small labeled set seen many times: 1,000 lines for 20 epochs (625 steps, against 500 in hw-digits), "
                "where the unmixed CRNN can overfit. The warm-up is the same 125 unmixed steps as hw-digits-warmup's "
                "one epoch of 4,000 lines."),
    *(Regime(f"hw-digits-{tag}", f"Handwriting, digit strings, warm-up 1 epoch, points at {what}", _HW,
             ("mix.warmup_epochs=1", f"mix.points={points}"),
             {"cpu": ("train.max_epochs=4",),
              "gpu": ("data.batch_size=128", "train.max_epochs=40"),
              "quick": ("data.digits.train_lines=64", "data.digits.val_lines=16", "data.digits.test_lines=16",
                        "data.batch_size=8", "train.max_epochs=2")},
             variants=("manifold",), quick=False, baseline="hw-digits", label=f"warmup=1 {tag}",
             note=f"As hw-digits-warmup with the mix points restricted to {what} (`auto` is both: the input, the "
                  "four CNN stages and the BiLSTM output); paired with hw-digits' `none` runs.")
      for tag, what, points in (
          ("conv", "the input and the CNN stages", "[input,backbone.stage1,backbone.stage2,backbone.stage3,"
                                                   "backbone.stage4]"),
          ("rnn", "the recurrent (BiLSTM) output sequence only", "[rnn]"),
      )),
)


# ------------------------------------------------------------------------------------------ pooling
def groups(regimes: Sequence[Regime] = REGIMES) -> dict[str, list[Regime]]:
    """``{baseline name: [baseline, members...]}``: plain regimes with a ``label`` pooled under their baseline."""
    by_name = {r.name: r for r in regimes}
    out: dict[str, list[Regime]] = {}
    for r in regimes:
        if r.grid or r.label is None:
            continue
        root = r.baseline or r.name
        if root in by_name:
            out.setdefault(root, [by_name[root]] if root != r.name else [])
            if r not in out[root]:
                out[root].append(r)
    return {k: v for k, v in out.items() if len(v) > 1}


def pool(rows_by_regime: Mapping[str, Sequence[Mapping[str, Any]]], members: Sequence[Regime]) -> list[dict[str, Any]]:
    """One group's rows: the baseline's ``none`` runs, every other run named ``"<variant> <label>"``."""
    out: list[dict[str, Any]] = []
    for r in members:
        for row in rows_by_regime.get(r.name, ()):
            if row["variant"] == "none":
                if r.baseline is None:
                    out.append(dict(row))
                continue
            out.append({**row, "variant": f"{row['variant']} {r.label}"})
    return out


def choose(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per mixing kind (``input``, ``manifold``): the pooled setting with the best mean validation figure.

    Only settings run on every seed the group's ``none`` runs have count (a setting with fewer
    seeds would be compared on other data subsets). Returns ``{kind: {"variant", "metric", "mean",
    "candidates": {variant: mean}}}``; a kind with no complete setting is absent.
    """
    from mmix_applied.reports.comparison import metric_direction

    if not rows:
        return {}
    metric = SELECT.get(rows[0]["recipe"])
    seeds = {int(r["seed"]) for r in rows if r["variant"] == "none"}
    out: dict[str, dict[str, Any]] = {}
    for kind in ("input", "manifold"):
        means = {}
        for variant in dict.fromkeys(r["variant"] for r in rows if r["variant"].split(" ")[0] == kind):
            got = {int(r["seed"]): (r.get("val") or {}).get(metric) for r in rows if r["variant"] == variant}
            if seeds and seeds <= set(got) and all(isinstance(got[s], (int, float)) for s in seeds):
                means[variant] = sum(float(got[s]) for s in seeds) / len(seeds)
        if metric is None or not means:
            continue
        pick = (min if metric_direction(metric) == "lower" else max)(means, key=means.__getitem__)
        out[kind] = {"variant": pick, "metric": metric, "mean": means[pick], "candidates": means}
    return out


def chosen_rows(rows: Sequence[Mapping[str, Any]], choice: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``none`` rows and each kind's chosen setting renamed to the kind (what the goals are checked on)."""
    names = {c["variant"]: kind for kind, c in choice.items()}
    return [dict(r) if r["variant"] == "none" else {**r, "variant": names[r["variant"]]}
            for r in rows if r["variant"] == "none" or r["variant"] in names]


# ------------------------------------------------------------------------------------------- goals
@dataclasses.dataclass(frozen=True)
class Goal:
    """One goal of issue #11 and the regimes it is checked on.

    Attributes:
        text: The goal as the issue states it (with the tolerance this file fixes).
        regimes: Regime names it is checked on, one verdict each.
        check: ``rows -> (status, detail)``, status ``met`` / ``not met`` / ``not measured``.
    """

    text: str
    regimes: tuple[str, ...]
    check: Callable[[Sequence[Mapping[str, Any]]], tuple[str, str]]


def _means(rows: Sequence[Mapping[str, Any]], recipe: str, metrics: Sequence[str],
           variants: Sequence[str]) -> dict[str, dict[str, float]] | str:
    """``{metric: {variant: mean}}``, or the reason (a string) why some mean is missing."""
    summary = summarize(rows).get(recipe, {})
    out: dict[str, dict[str, float]] = {}
    for metric in metrics:
        for variant in variants:
            stats = summary.get(metric, {}).get(variant)
            if stats is None:
                hint = " (written once the engine fits a temperature, issue #10 §1)" if (
                    metric.endswith("_scaled") or metric == "temperature") else ""
                return f"no `{metric}` for `{variant}` in the results{hint}"
            out.setdefault(metric, {})[variant] = stats["mean"]
    return out


def _f(x: float) -> str:
    return f"{x:.4g}"


def check_classification(rows: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Manifold's scaled NLL >= 10 % below none at equal or better accuracy, and below input's."""
    m = _means(rows, "classification", ("test/nll_scaled", "test/acc"), ("none", "input", "manifold"))
    if isinstance(m, str):
        part = _means(rows, "classification", ("test/nll_scaled", "test/acc"), ("none", "manifold"))
        if isinstance(part, str):
            return "not measured", m
        nll, acc = part["test/nll_scaled"], part["test/acc"]
        drop = 1 - nll["manifold"] / nll["none"]
        return "not measured", (f"no input-mixup runs in this regime, so that part is not measured; against none: scaled NLL "
                                f"{_f(nll['manifold'])} vs {_f(nll['none'])} ({drop:+.1%} lower, need >= 10 %: "
                                f"{'yes' if drop >= 0.10 else 'no'}); acc {_f(acc['manifold'])} vs {_f(acc['none'])}")
    nll, acc = m["test/nll_scaled"], m["test/acc"]
    drop = 1 - nll["manifold"] / nll["none"]
    ok_nll, ok_acc = drop >= 0.10, acc["manifold"] >= acc["none"] - ACC_TOLERANCE
    ok_input = nll["manifold"] < nll["input"]
    temps = _means(rows, "classification", ("temperature",), ("none",))
    overfit = "" if isinstance(temps, str) else (
        f"; unmixed T = {_f(temps['temperature']['none'])} ({'> 1: overfits' if temps['temperature']['none'] > 1 else '<= 1: the regime does not overfit'})")
    detail = (f"scaled NLL {_f(nll['manifold'])} vs none {_f(nll['none'])} ({drop:+.1%} lower, need >= 10 %: "
              f"{'yes' if ok_nll else 'no'}); acc {_f(acc['manifold'])} vs {_f(acc['none'])} (equal or better "
              f"within {ACC_TOLERANCE}: {'yes' if ok_acc else 'no'}); vs input {_f(nll['input'])} "
              f"(ahead: {'yes' if ok_input else 'no'}){overfit}")
    return ("met" if ok_nll and ok_acc and ok_input else "not met"), detail


def check_segmentation(rows: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Manifold's mean Dice at least none's, with lower scaled pixel NLL."""
    m = _means(rows, "segmentation", ("test/mean_dice", "test/nll_scaled"), ("none", "manifold"))
    if isinstance(m, str):
        return "not measured", m
    dice, nll = m["test/mean_dice"], m["test/nll_scaled"]
    ok_dice, ok_nll = dice["manifold"] >= dice["none"] - ACC_TOLERANCE, nll["manifold"] < nll["none"]
    detail = (f"mean Dice {_f(dice['manifold'])} vs none {_f(dice['none'])} (at least equal within {ACC_TOLERANCE}: "
              f"{'yes' if ok_dice else 'no'}); scaled pixel NLL {_f(nll['manifold'])} vs {_f(nll['none'])} "
              f"(lower: {'yes' if ok_nll else 'no'})")
    return ("met" if ok_dice and ok_nll else "not met"), detail


def check_handwriting(rows: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Manifold's CER no worse than none's."""
    m = _means(rows, "handwriting", ("test/cer",), ("none", "manifold"))
    if isinstance(m, str):
        return "not measured", m
    cer = m["test/cer"]
    ok = cer["manifold"] <= cer["none"]
    return ("met" if ok else "not met"), f"CER {_f(cer['manifold'])} vs none {_f(cer['none'])} (no worse: " \
                                         f"{'yes' if ok else 'no'})"


GOALS: tuple[Goal, ...] = (
    Goal("Overfitting small-labeled classification: manifold mixup's temperature-scaled test NLL at least 10 % "
         f"below no mixing (means over seeds) at equal or better accuracy (within {ACC_TOLERANCE}), and below "
         "input mixup's", ("cls20-long", "cls100-long", "cls50-long"), check_classification),
    Goal("Segmentation with a generalisation gap: mean Dice at least equal to no mixing (within "
         f"{ACC_TOLERANCE}) with lower temperature-scaled pixel NLL",
         ("seg-digit-canvas", "seg-canvas120", "seg-canvas120-smp"), check_segmentation),
    Goal("Digit strings: CER no worse than no mixing", ("hw-digits",), check_handwriting),
)
