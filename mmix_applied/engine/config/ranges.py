"""Range rules for every numeric config key, checked after the types and before anything runs.

Each numeric field of every section (the fixed ones and each recipe's ``data`` and ``options``)
has a rule in :data:`RULES`, keyed by its dotted path; a list field's rule applies to each entry.
``tests/test_config_ranges.py`` walks every schema and fails on a numeric field without a rule,
so a new key cannot pass silently. Rules that involve two keys are in :func:`check_relations`.
Every number read from a config, including inside free-form mappings such as ``model.options``,
must be finite (``.inf`` would pass a ``> 0`` check and hang the Beta sampler).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mmix_applied.errors import ConfigError

__all__ = ["RULES", "Rule", "check_finite", "check_ranges", "check_relations", "numeric_values"]


@dataclasses.dataclass(frozen=True)
class Rule:
    """A range: ``ok(value)`` is the test, ``text`` says what is valid (and how to fix it)."""

    ok: Callable[[Any], bool]
    text: str


def _ge(lo: float, fix: str = "") -> Rule:
    return Rule(lambda v: v >= lo, f"must be >= {lo}{fix}")


def _gt(lo: float, fix: str = "") -> Rule:
    return Rule(lambda v: v > lo, f"must be > {lo}{fix}")


def _closed(lo: float, hi: float, fix: str = "") -> Rule:
    return Rule(lambda v: lo <= v <= hi, f"must be in [{lo}, {hi}]{fix}")


def _half_open(lo: float, hi: float, fix: str = "") -> Rule:
    return Rule(lambda v: lo <= v < hi, f"must be in [{lo}, {hi}){fix}")


def _one_of(*values: int) -> Rule:
    return Rule(lambda v: v in values, f"must be one of {', '.join(map(str, values))}")


_ANY_INT = Rule(lambda v: True, "any integer")
_FRACTION = _half_open(0, 1, " (a share of the data: e.g. 0.1)")
# A limit is a batch count (int >= 1) or a share of the epoch (float in (0, 1]).
_LIMIT = Rule(lambda v: v >= 1 if isinstance(v, int) else 0 < v <= 1,
              "must be a batch count >= 1 or a fraction in (0, 1] of the epoch")
_LIMIT_OR_ZERO = Rule(lambda v: v >= 0 if isinstance(v, int) else 0 <= v <= 1,
                      "must be a batch count >= 0 (0 skips validation) or a fraction in [0, 1]")

#: Dotted key -> rule. Keys of recipe sections apply to whichever recipe has that field.
RULES: dict[str, Rule] = {
    "seed": _closed(0, 2**32 - 1, " (numpy and Lightning accept seeds in this range)"),
    # model
    "model.freeze_backbone_epochs": _ge(0),
    "model.backbone_lr_mult": _ge(0, " (0 freezes the backbone)"),
    "model.layer_decay": Rule(lambda v: 0 < v <= 1, "must be in (0, 1] (e.g. 0.75), or null for off"),
    # mix
    "mix.alpha": _gt(0, " (try 2.0 for small images, 0.2 for large data)"),
    "mix.prob": _closed(0, 1),
    "mix.off_last_epochs": _ge(0),
    "mix.warmup_epochs": _ge(0),
    "mix.clean_weight": _ge(0, " (0 = off; 1 = RegMixup's eta = 1)"),
    # optim
    "optim.lr": _gt(0, " (e.g. 1e-3)"),
    "optim.weight_decay": _ge(0),
    "optim.momentum": _half_open(0, 1, " (e.g. 0.9)"),
    # scheduler
    "scheduler.warmup_epochs": _ge(0),
    "scheduler.min_lr_ratio": _closed(0, 1, " (a negative rate would ascend the loss)"),
    "scheduler.milestones": _ge(0),
    "scheduler.gamma": _gt(0, " (e.g. 0.1; a negative factor makes the rate negative)"),
    # train
    "train.max_epochs": Rule(lambda v: v >= 1 or v == -1, "must be >= 1 (or -1 with train.max_steps > 0)"),
    "train.max_steps": Rule(lambda v: v >= 1 or v == -1, "must be >= 1, or -1 for no limit"),
    "train.devices": Rule(lambda v: v >= -1, "must be a count >= 1 (-1: all devices) or a list of ids >= 0"),
    "train.num_nodes": _ge(1),
    "train.precision": _one_of(16, 32, 64),  # as an int; strings ("bf16-mixed") are Lightning's to check
    "train.accumulate_grad_batches": _ge(1),
    "train.gradient_clip_val": _gt(0, " (or null for no clipping)"),
    "train.limit_train_batches": _LIMIT,
    "train.limit_val_batches": _LIMIT_OR_ZERO,
    "train.limit_test_batches": _LIMIT,
    "train.limit_predict_batches": _LIMIT,
    "train.check_val_every_n_epoch": _ge(1),
    "train.log_every_n_steps": _ge(1),
    "train.loader_check_steps": _ge(0, " (0 turns the loader-pace check off)"),
    "train.save_top_k": _ge(-1, " (-1 keeps all, 0 none)"),
    # data, every recipe
    "data.batch_size": _ge(1),
    "data.eval_batch_size": _ge(1, " (or null for data.batch_size)"),
    "data.num_workers": _ge(0),
    "data.val_fraction": _FRACTION,
    "data.test_fraction": _FRACTION,
    # classification
    "data.labels_per_class": _ge(1, " (or null for all)"),
    "data.image_size": _ge(1, " (e.g. 224; null for the source's default)"),
    "data.channels": _one_of(1, 3),
    "data.mean": Rule(lambda v: True, "any finite number"),
    "data.std": _gt(0),
    "options.label_smoothing": _half_open(0, 1, " (e.g. 0.1)"),
    "options.ece_bins": _ge(1, " (e.g. 15)"),
    "options.ood_samples": _ge(1, " (images of the OOD set scored in test, e.g. 500)"),
    # segmentation
    "data.spatial_dims": _one_of(2, 3),
    "data.num_classes": _ge(1),
    "data.in_channels": _ge(1),
    "data.ignore_index": _ANY_INT,
    "data.pixdim": _gt(0, " (voxel spacing in mm)"),
    "data.intensity_range": Rule(lambda v: True, "any finite number"),
    "data.patch_size": _ge(1),
    "data.num_samples": _ge(1),
    "data.crop_size": _ge(1),
    "data.pad_divisor": _ge(1, " (the network's total stride, e.g. 32; 1 pads nothing)"),
    "data.resolution": _one_of(1, 2),
    "data.slab_thickness": _ge(1, " (or null for the default)"),
    "data.slab_gap": _ge(0),
    "data.num_train": _ge(1, " (labeled training canvases; default 64)"),
    "options.dice_weight": _ge(0),
    "options.ce_weight": _ge(0),
    "options.roi_size": _ge(1),
    "options.sw_batch_size": _ge(1),
    "options.sw_overlap": _half_open(0, 1, " (e.g. 0.25; 1 would never advance the window)"),
    # handwriting
    "data.height": _ge(1, " (e.g. 32)"),
    "data.min_width": _ge(1),
    "data.max_width": _ge(1, " (or null for no limit)"),
    "data.augment_strength": _ge(0),
    "data.digits.train_lines": _ge(1),
    "data.digits.val_lines": _ge(1),
    "data.digits.test_lines": _ge(1),
    "data.digits.min_digits": _ge(1),
    "data.digits.max_digits": _ge(1),
    "data.digits.space_prob": _closed(0, 1),
    "data.digits.seed": _ge(0),
}


def numeric_values(obj: Any, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """Yield ``(rule key, shown key, value)`` for every int/float (not bool) under a config object.

    The rule key drops list indices (``data.patch_size``); the shown key keeps them
    (``data.patch_size[2]``). Free-form mappings (``model.options``) are walked too.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from numeric_values(getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from numeric_values(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            for rule_key, shown, value in numeric_values(v, prefix):
                yield rule_key, shown.replace(prefix, f"{prefix}[{i}]", 1), value
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix, prefix, obj


def check_finite(cfg: Any) -> None:
    """Every number in the config is finite (NaN and Inf are refused, wherever they are)."""
    for _, shown, value in numeric_values(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key {shown!r}: received {value!r}; every number in a config must be "
                              "finite (not .inf or .nan): write the value you mean")


def check_ranges(cfg: Any) -> None:
    """Every numeric key is inside its rule's range (keys of free-form mappings have no rule)."""
    for rule_key, shown, value in numeric_values(cfg):
        rule = RULES.get(rule_key)
        if rule is not None and not rule.ok(value):
            raise ConfigError(f"config key {shown!r}: {rule.text} (received {value!r})")


def _has(section: Any, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(section)) if dataclasses.is_dataclass(section) else False


def check_relations(cfg: Any) -> None:
    """Rules that tie two keys together (shares that must leave training data, ordered bounds)."""
    d, o = cfg.data, cfg.options
    if _has(d, "val_fraction") and _has(d, "test_fraction"):
        used = [k for k in ("val", "test") if getattr(d, f"{k}_path", None) is None]
        total = sum(getattr(d, f"{k}_fraction") for k in used)
        if len(used) == 2 and total >= 1:
            raise ConfigError(f"config keys 'data.val_fraction' and 'data.test_fraction' sum to {total!r} "
                              f"(received {d.val_fraction!r} and {d.test_fraction!r}); together they must "
                              "be < 1 so that data is left to train on (e.g. 0.1 and 0.2)")
    if _has(d, "min_width") and d.max_width is not None and d.max_width < d.min_width:
        raise ConfigError(f"config key 'data.max_width': must be >= data.min_width={d.min_width} "
                          f"(received {d.max_width!r}); raise it or set it to null")
    digits = getattr(d, "digits", None)
    if digits is not None and digits.max_digits < digits.min_digits:
        raise ConfigError(f"config key 'data.digits.max_digits': must be >= data.digits.min_digits="
                          f"{digits.min_digits} (received {digits.max_digits!r})")
    if getattr(d, "charset", None) == "":
        raise ConfigError("config key 'data.charset': received '' (no characters), and a charset needs at least "
                          "one character; list the characters to recognise (e.g. '0123456789') or set it to "
                          "null to build it from the training transcriptions")
    bounds = getattr(d, "intensity_range", None)
    if bounds is not None and (len(bounds) != 2 or not bounds[0] < bounds[1]):
        raise ConfigError(f"config key 'data.intensity_range': must be [a_min, a_max] with a_min < a_max "
                          f"(received {bounds!r}), e.g. [-1000, 1000] for CT; null z-scores each volume")
    _check_lengths(d, o)
    if _has(o, "dice_weight") and _has(o, "ce_weight") and o.dice_weight == 0 and o.ce_weight == 0:
        raise ConfigError("config keys 'options.dice_weight' and 'options.ce_weight' are both 0 (received 0 "
                          "and 0), which leaves no loss to train on; set at least one > 0")


def _check_lengths(d: Any, o: Any) -> None:
    """List keys whose length is fixed by another key (a short list would be broadcast or cut silently)."""
    wanted: list[tuple[str, Any, int, str]] = []
    if _has(d, "spatial_dims"):
        dims = d.spatial_dims
        wanted.append(("data.crop_size", d.crop_size, 2, "[height, width]"))
        if dims == 3:
            wanted += [("data.patch_size", d.patch_size, 3, "one size per axis, e.g. [48, 48, 8]"),
                       ("data.pixdim", d.pixdim, 3, "one spacing per axis in mm, e.g. [1.0, 1.0, 1.0]")]
            if _has(o, "roi_size"):
                wanted.append(("options.roi_size", o.roi_size, 3, "one size per axis, or null for data.patch_size"))
        wanted.append(("data.class_names", d.class_names, d.num_classes, f"one name per class (data.num_classes="
                                                                         f"{d.num_classes})"))
    if _has(d, "image_size") and _has(d, "channels"):
        channels = d.channels or (1 if getattr(d, "source", None) == "mnist" else 3)
        for key in ("mean", "std"):
            wanted.append((f"data.{key}", getattr(d, key), channels, f"one value per channel ({channels})"))
    for key, value, n, what in wanted:
        if value is not None and len(value) != n:
            entries = "entry" if n == 1 else "entries"
            raise ConfigError(f"config key {key!r}: must have {n} {entries}, {what} (received {value!r})")
