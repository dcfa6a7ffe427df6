"""The search space of ``tune``: which mixing knobs are searched, and over which values.

The study's lesson (docs/results.md) is that the setting decides whether Manifold Mixup (Verma et
al., ICML 2019) pays: alpha, the point set, the share of mixed steps and a clean term flipped the
verdict from regime to regime. :func:`default_space` searches those knobs for every recipe:

* ``mix.alpha``: log-uniform over 0.05-4 (Beta(alpha, alpha); the paper uses 0.2-2.0);
* ``mix.points``: ``auto``, ``all``, the input alone, and each stage the model declares alone
  (the family's own names, as ``mmix-applied points`` prints them);
* ``mix.prob``: uniform over 0.25-1 (the share of mixed steps);
* ``mix.clean_weight``: 0, 0.5 or 1 (the RegMixup clean term; 0 kept reachable exactly, since a
  clean term costs a second forward per mixed step);
* ``mix.warmup_epochs`` (handwriting: CTC must first leave its all-blank plateau): 0 to a quarter
  of the run.

Only the ``mix`` section is tunable: the unmixed baseline is trained with the rest of the config
unchanged, so tuning the learning rate for the mixed runs alone would make the reference unfair.
A small YAML (:func:`read_space`) overrides the default, one entry per key::

    mix.alpha: {low: 0.1, high: 2.0, log: true}   # a range (ints for integer keys; step optional)
    mix.points: [auto, input, [input, layer1]]    # choices (a list is one point set)
    mix.off_last_epochs: 5                        # fixed: not searched, set for every trial
    mix.clean_weight: null                        # left out: the config's own value
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from mmix_applied.core.points import INPUT, default_points, validate_points
from mmix_applied.engine.claims import flat
from mmix_applied.engine.config import Config, ConfigError, config_to_dict, load_config, read_yaml
from mmix_applied.engine.recipe import get_recipe
from mmix_applied.utils.hints import did_you_mean

__all__ = ["TUNABLE", "Param", "SearchSpace", "SpaceError", "default_space", "point_choices", "read_space"]

#: The tunable keys and the type of their values (``points``: a point set).
TUNABLE: dict[str, str] = {"mix.alpha": "float", "mix.prob": "float", "mix.clean_weight": "float",
                           "mix.warmup_epochs": "int", "mix.off_last_epochs": "int", "mix.points": "points",
                           "mix.mode": "str", "mix.lam_per_sample": "bool"}
_RANGE_KEYS = {"low", "high", "log", "step"}


class SpaceError(ConfigError):
    """A search space entry that cannot be searched (unknown key, empty range, invalid value)."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched key: a range (``low``-``high``, optionally ``log``/``step``) or ``choices``.

    Point-set choices are strings: ``auto``, ``all`` or module names joined by commas.
    """

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Any) -> Any:
        """The value ``trial`` (an ``optuna.Trial``) draws for this key."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log, step=self.step)

    def describe(self) -> str:
        """``"log-uniform 0.05-4"``, ``"one of auto, all, input"``..."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        shape = "log-uniform" if self.log else "integer" if self.kind == "int" else "uniform"
        return f"{shape} {self.low:g}-{self.high:g}" + (f" step {self.step:g}" if self.step else "")

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, False) or k == "key"}


def _value_text(key: str, value: Any) -> str:
    """A value as override text: point sets as a list unless ``auto``/``all``; JSON is YAML."""
    if TUNABLE.get(key) == "points" and isinstance(value, str) and value not in ("auto", "all"):
        value = value.split(",")
    return json.dumps(value)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The searched keys (:class:`Param`) and the fixed ones (one value for every trial)."""

    params: dict[str, Param]
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Draw every searched key from ``trial``: ``{key: value}``."""
        return {key: param.suggest(trial) for key, param in self.params.items()}

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Dotted overrides of one setting: the fixed keys, then ``params`` (a trial's values)."""
        values = {**self.fixed, **dict(params)}
        return [f"{key}={_value_text(key, value)}" for key, value in values.items()]

    def digest(self, params: Mapping[str, Any]) -> str:
        """A short name of one setting (10 hex digits of the SHA-1 of its overrides)."""
        return hashlib.sha1("\n".join(sorted(self.overrides(params))).encode()).hexdigest()[:10]

    def as_dict(self) -> dict[str, Any]:
        return {"params": {k: p.as_dict() for k, p in self.params.items()}, "fixed": dict(self.fixed)}

    def describe(self) -> list[str]:
        lines = [f"{key}: {param.describe()}" for key, param in self.params.items()]
        return lines + [f"{key}: {value} (fixed)" for key, value in self.fixed.items()]


def _model(config: Config) -> Any:
    return get_recipe(config.recipe)(config).build_model()


def point_choices(config: Config, model: Any = None) -> list[str]:
    """``auto``, ``all`` (when it differs), ``input`` and each stage the configured model declares."""
    model = _model(config) if model is None else model
    auto, every = default_points(model, which="auto"), default_points(model, which="all")
    return ["auto", *(["all"] if every != auto else []), INPUT, *[p for p in every if p != INPUT]]


def default_space(config: Config, *, model: Any = None) -> SearchSpace:
    """The default search space of ``config``'s recipe (see the module docstring)."""
    params = {
        "mix.alpha": Param("mix.alpha", "float", low=0.05, high=4.0, log=True),
        "mix.points": Param("mix.points", "points", choices=tuple(point_choices(config, model))),
        "mix.prob": Param("mix.prob", "float", low=0.25, high=1.0),
        "mix.clean_weight": Param("mix.clean_weight", "float", choices=(0.0, 0.5, 1.0)),
    }
    if config.recipe == "handwriting":
        high = max(1, int(config.train.max_epochs) // 4)
        params["mix.warmup_epochs"] = Param("mix.warmup_epochs", "int", low=0, high=high)
    return SearchSpace(params)


def _check_key(key: str, config_keys: set[str], where: str) -> None:
    if key in TUNABLE:
        return
    valid = ", ".join(TUNABLE)
    if key in config_keys or any(k.startswith(key + ".") for k in config_keys):
        raise SpaceError(f"{where}: {key!r} is a config key but not tunable: tune searches the mix section only, so "
                         "the unmixed baseline, trained with the rest of the config unchanged, stays a fair "
                         f"reference (set it in the config or as an override instead). Tunable: {valid}")
    raise SpaceError(f"{where}: unknown parameter {key!r}.{did_you_mean(key, TUNABLE)} Tunable: {valid}")


def _entries(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested sections (``mix: {alpha: ...}``) down to entries; a range mapping is one entry."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value and not set(value) <= _RANGE_KEYS:
            out.update(_entries(value, name))
        else:
            out[name] = value
    return out


def _number(value: Any, kind: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpaceError(f"{what}: expected a finite number, received {value!r}")
    if kind == "int" and int(value) != value:
        raise SpaceError(f"{what}: this key takes whole numbers, received {value!r}")
    return value


def _param(key: str, value: Any, where: str) -> Param:
    kind = TUNABLE[key]
    what = f"{where}: {key}"
    if isinstance(value, (list, tuple)):
        if not value:
            raise SpaceError(f"{what}: the list of choices is empty; give at least one value, or null to leave "
                             "the key out of the search")
        choices = []
        for choice in value:
            if kind == "points":
                names = [choice] if isinstance(choice, str) else choice
                if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
                    raise SpaceError(f"{what}: a point-set choice is 'auto', 'all', a point name or a list of "
                                     f"names; received {choice!r}")
                choice = ",".join(names)
            elif kind in ("int", "float"):
                choice = _number(choice, kind, what)
            choices.append(choice)
        if len(set(choices)) != len(choices):
            raise SpaceError(f"{what}: choices must be distinct; received {list(value)}")
        return Param(key, kind, choices=tuple(choices))
    if kind not in ("int", "float"):
        raise SpaceError(f"{what}: give a list of choices (or one fixed value); received {value!r}")
    unknown = set(value) - _RANGE_KEYS
    if unknown or "low" not in value or "high" not in value:
        raise SpaceError(f"{what}: a range is {{low: ..., high: ...}} (optionally log: true, step: ...); received "
                         f"{dict(value)!r}")
    low, high = _number(value["low"], kind, f"{what}.low"), _number(value["high"], kind, f"{what}.high")
    log, step = bool(value.get("log", False)), value.get("step")
    if low > high:
        raise SpaceError(f"{what}: the range is empty (low {low} > high {high}); swap the bounds, or give one "
                         "fixed value")
    if log and low <= 0:
        raise SpaceError(f"{what}: a log range needs low > 0; received low {low}")
    if step is not None and (log or _number(step, kind, f"{what}.step") <= 0):
        raise SpaceError(f"{what}: step must be a positive number and cannot combine with log; received {step!r}")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def _check_values(space: SearchSpace, raw: Mapping[str, Any], overrides: list[str], model: Any, where: str) -> None:
    """Every bound and choice must pass the config's own validation (and point names the model's)."""
    samples: list[tuple[str, Any]] = list(space.fixed.items())
    for key, p in space.params.items():
        samples += [(key, c) for c in p.choices] if p.choices is not None else [(key, p.low), (key, p.high)]
    for key, value in samples:
        if TUNABLE[key] == "points" and isinstance(value, str) and value not in ("auto", "all"):
            try:
                validate_points(model, value.split(","))
            except (TypeError, ValueError) as err:
                raise SpaceError(f"{where}: {key} choice {value!r}: {err}") from None
        try:
            load_config(raw, [*overrides, f"{key}={_value_text(key, value)}"])
        except ConfigError as err:
            raise SpaceError(f"{where}: {key} = {value!r} is not a valid value: {err}") from None


def read_space(path: str | os.PathLike | None, *, config_path: str | os.PathLike,
               overrides: list[str] | None = None) -> SearchSpace:
    """The default space of the config's recipe with ``path``'s entries applied (``None``: the default).

    Args:
        path: The space YAML, or ``None`` for the recipe's default.
        config_path: The recipe's YAML config; every bound and choice is validated against it.
        overrides: The dotted overrides given with it.

    Raises:
        SpaceError: An unknown or untunable key (with the valid names), an empty range or choice
            list, or a value the config (or the model's point names) rejects.
    """
    raw_config = read_yaml(config_path)  # parsed once; every bound and choice is validated against it
    config = load_config(raw_config, list(overrides or []))
    model = _model(config)
    space = default_space(config, model=model)
    where = "the default search space"
    if path is not None:
        where = f"search space {str(path)!r}"
        raw = read_yaml(path)
        config_keys = set(flat(config_to_dict(config)))
        params, fixed = dict(space.params), dict(space.fixed)
        for key, value in _entries(raw).items():
            _check_key(key, config_keys, where)
            params.pop(key, None)
            fixed.pop(key, None)
            if value is None:
                continue
            if isinstance(value, (list, tuple, Mapping)):
                params[key] = _param(key, value, where)
            else:
                fixed[key] = value
        space = SearchSpace(params, fixed)
    if not space.params:
        raise SpaceError(f"{where} searches no key (every entry is fixed or left out); give at least one range "
                         f"or list of choices, e.g. mix.alpha: {{low: 0.05, high: 4.0, log: true}}")
    _check_values(space, raw_config, list(overrides or []), model, where)
    return space

