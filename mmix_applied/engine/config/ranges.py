"""Range rules for every numeric config key, checked after the types and before anything runs.

Each numeric field of every section has a rule (:class:`mmix_applied.utils.rules.Rule`), keyed by
its dotted path; a list field's rule applies to each entry. The engine's sections (``seed``,
``model``, ``mix``, ``optim``, ``scheduler``, ``train`` and the ``data`` keys every recipe shares)
have theirs in :data:`RULES`; ``mix.alpha`` and ``mix.prob`` are the mixing core's own rules
(:data:`mmix_applied.core.mixer.ALPHA`, :data:`~mmix_applied.core.mixer.PROB`), not restated here.
Each recipe declares the rules of its own ``data`` and ``options`` keys in ``Recipe.range_rules``
and the rules that tie its keys together in ``Recipe.check_config``, so a new recipe edits no
engine file. ``tests/engine/test_config_ranges.py`` walks every schema and fails on a numeric field
without a rule, so a new key cannot pass silently. Every number read from a config, including
inside free-form mappings such as ``model.options``, must be finite (``.inf`` would pass a ``> 0``
check and hang the Beta sampler).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mmix_applied.core.mixer import ALPHA, PROB
from mmix_applied.errors import ConfigError
from mmix_applied.utils.rules import Rule, above, at_least, half_open, one_of, within

__all__ = ["RULES", "Rule", "check_finite", "check_lengths", "check_ranges", "numeric_values", "rules_for"]

# A limit is a batch count (int >= 1) or a share of the epoch (float in (0, 1]).
_LIMIT = Rule(lambda v: v >= 1 if isinstance(v, int) else 0 < v <= 1,
              "must be a batch count >= 1 or a fraction in (0, 1] of the epoch")
_LIMIT_OR_ZERO = Rule(lambda v: v >= 0 if isinstance(v, int) else 0 <= v <= 1,
                      "must be a batch count >= 0 (0 skips validation) or a fraction in [0, 1]")

#: Dotted key -> rule: the engine's sections, and the ``data`` keys of ``engine.recipe.DataConfig``.
RULES: dict[str, Rule] = {
    "seed": within(0, 2**32 - 1, " (numpy and Lightning accept seeds in this range)"),
    # model
    "model.freeze_backbone_epochs": at_least(0),
    "model.backbone_lr_mult": at_least(0, " (0 freezes the backbone)"),
    "model.layer_decay": Rule(lambda v: 0 < v <= 1, "must be in (0, 1] (e.g. 0.75), or null for off"),
    # mix
    "mix.alpha": ALPHA,
    "mix.prob": PROB,
    "mix.off_last_epochs": at_least(0),
    "mix.warmup_epochs": at_least(0),
    "mix.clean_weight": at_least(0, " (0 = off; 1 = RegMixup's eta = 1)"),
    # optim
    "optim.lr": above(0, " (e.g. 1e-3)"),
    "optim.weight_decay": at_least(0),
    "optim.momentum": half_open(0, 1, " (e.g. 0.9)"),
    # scheduler
    "scheduler.warmup_epochs": at_least(0),
    "scheduler.min_lr_ratio": within(0, 1, " (a negative rate would ascend the loss)"),
    "scheduler.milestones": at_least(0),
    "scheduler.gamma": above(0, " (e.g. 0.1; a negative factor makes the rate negative)"),
    # train
    "train.max_epochs": Rule(lambda v: v >= 1 or v == -1, "must be >= 1 (or -1 with train.max_steps > 0)"),
    "train.max_steps": Rule(lambda v: v >= 1 or v == -1, "must be >= 1, or -1 for no limit"),
    "train.devices": Rule(lambda v: v >= -1, "must be a count >= 1 (-1: all devices) or a list of ids >= 0"),
    "train.num_nodes": at_least(1),
    "train.precision": one_of(16, 32, 64),  # as an int; strings ("bf16-mixed") are Lightning's to check
    "train.accumulate_grad_batches": at_least(1),
    "train.gradient_clip_val": above(0, " (or null for no clipping)"),
    "train.limit_train_batches": _LIMIT,
    "train.limit_val_batches": _LIMIT_OR_ZERO,
    "train.limit_test_batches": _LIMIT,
    "train.limit_predict_batches": _LIMIT,
    "train.check_val_every_n_epoch": at_least(1),
    "train.log_every_n_steps": at_least(1),
    "train.loader_check_steps": at_least(0, " (0 turns the loader-pace check off)"),
    "train.save_top_k": at_least(-1, " (-1 keeps all, 0 none)"),
    # data, every recipe (DataConfig)
    "data.batch_size": at_least(1),
    "data.eval_batch_size": at_least(1, " (or null for data.batch_size)"),
    "data.num_workers": at_least(0),
}


def rules_for(recipe: Any) -> dict[str, Rule]:
    """The rules of a config of ``recipe`` (a ``Recipe`` class): :data:`RULES` and its ``range_rules``.

    Raises:
        ValueError: The recipe declares a rule outside its own ``data`` and ``options`` sections,
            or for a shared ``data`` key the engine owns.
    """
    own = dict(getattr(recipe, "range_rules", {}) or {})
    bad = sorted(k for k in own if not k.startswith(("data.", "options.")) or k in RULES)
    if bad:
        raise ValueError(f"recipe {getattr(recipe, 'name', recipe)!r} declares range rules for {bad}: a recipe's "
                         "range_rules cover its own data.* and options.* keys only (the engine owns the others, "
                         f"and the shared data keys {sorted(k for k in RULES if k.startswith('data.'))})")
    return {**RULES, **own}


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


def check_ranges(cfg: Any, rules: Mapping[str, Rule] | None = None) -> None:
    """Every numeric key is inside its rule's range (keys of free-form mappings have no rule).

    Args:
        cfg: The config.
        rules: Dotted key -> rule; default :data:`RULES` (pass :func:`rules_for` of the config's
            recipe to check its ``data`` and ``options`` keys too).
    """
    rules = RULES if rules is None else rules
    for rule_key, shown, value in numeric_values(cfg):
        rule = rules.get(rule_key)
        if rule is not None and not rule.ok(value):
            raise ConfigError(f"config key {shown!r}: {rule.text} (received {value!r})")


def check_lengths(wanted: Sequence[tuple[str, Any, int, str]]) -> None:
    """List keys whose length is fixed by another key (a short list would be broadcast or cut silently).

    Args:
        wanted: ``(dotted key, value, expected length, what the entries are)``; a ``None`` value passes.
    """
    for key, value, n, what in wanted:
        if value is not None and len(value) != n:
            entries = "entry" if n == 1 else "entries"
            raise ConfigError(f"config key {key!r}: must have {n} {entries}, {what} (received {value!r})")
