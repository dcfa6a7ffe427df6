"""Strict validation: a plain mapping (parsed YAML) in, a typed :class:`Config` out.

An unknown key is an error that names it, lists the valid keys and suggests the closest one; a
value of the wrong type names the key and the expected type; ranges are checked after the types.
The recipe named by ``recipe:`` supplies the ``data`` and ``options`` schemas, their range rules
and the rules between their keys (looked up in the recipe registry, :mod:`mmix_applied.engine.recipe`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from mmix_applied.core.points import check_points
from mmix_applied.engine.config.memory import check_memory
from mmix_applied.engine.config.ranges import check_finite, check_ranges, rules_for
from mmix_applied.engine.config.schema import Config, ConfigError, ConfigKeyError, ConfigTypeError
from mmix_applied.engine.recipe import get_recipe, list_recipes
from mmix_applied.utils.hints import did_you_mean

__all__ = ["parse_config"]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check (and minimally coerce) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(value, float):
        _finite(value, key)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigTypeError(f"config key {key!r}: expected a mapping (section {tp.__name__}), "
                                  f"received {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _convert(value, arm, key)
            except _NonFiniteError:
                raise
            except ConfigError:
                continue
        raise ConfigTypeError(f"config key {key!r}: expected {_type_name(tp)}, "
                              f"received {type(value).__name__} {value!r}")
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        hint = did_you_mean(value, args)
        raise ConfigError(f"config key {key!r}: received {value!r}, which is not one of {_type_name(tp)}.{hint}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigTypeError(f"config key {key!r}: expected {_type_name(tp)}, "
                                  f"received {type(value).__name__} {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigTypeError(f"config key {key!r}: expected {len(args)} items "
                                      f"({_type_name(tp)}), received {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigTypeError(f"config key {key!r}: expected a mapping, received {type(value).__name__} {value!r}")
        vt = args[1] if args else Any
        return {str(k): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(float(value), key)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                return _finite(number, key)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigTypeError(f"config key {key!r}: expected {_type_name(tp)}, received {type(value).__name__} {value!r}")


class _NonFiniteError(ConfigError):
    """A NaN/Inf number: never a reason to try the next arm of a union."""


def _finite(value: float, key: str) -> float:
    if not math.isfinite(value):
        raise _NonFiniteError(f"config key {key!r}: received {value!r}; every number in a config must be finite "
                          "(not .inf or .nan): write the value you mean")
    return value


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for k in raw:
        if k not in fields:
            name = f"{prefix}.{k}" if prefix else str(k)
            hint = did_you_mean(k, fields)
            where = f"section {prefix!r}" if prefix else "the top level"
            raise ConfigKeyError(f"unknown config key {name!r}.{hint} Valid keys in {where}: "
                                 f"{', '.join(fields) or '(none)'}")
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in raw.items()}
    return cls(**kwargs)


def parse_config(raw: Mapping[str, Any] | None) -> Config:
    """Validate a plain mapping (e.g. parsed YAML) into a :class:`Config`.

    Raises:
        ConfigKeyError: Unknown key (or unknown recipe).
        ConfigTypeError: Value of the wrong type.
        ConfigError: Value outside its allowed set or range.
    """
    raw = dict(raw or {})
    if not isinstance(raw, Mapping):
        raise ConfigTypeError(f"a config must be a mapping of sections, received {type(raw).__name__}")
    recipe_name = raw.get("recipe", Config.recipe)
    if not isinstance(recipe_name, str):
        raise ConfigTypeError(f"config key 'recipe': expected str, received {recipe_name!r}")
    try:
        recipe = get_recipe(recipe_name)
    except KeyError:
        hint = did_you_mean(recipe_name, list_recipes())
        raise ConfigKeyError(f"config key 'recipe': unknown recipe {recipe_name!r}.{hint} "
                             f"Valid recipes: {', '.join(list_recipes())}") from None
    if "task" in raw:
        raise ConfigKeyError(
            "config section 'task' is now called 'options' (it holds the recipe's options, e.g. "
            "options.label_smoothing); rename 'task:' to 'options:' in the YAML file and 'task.<key>=' "
            "overrides to 'options.<key>='")
    data = raw.pop("data", None) or {}
    options = raw.pop("options", None) or {}
    cfg = _build(Config, raw, "")
    _split_model_name(cfg, raw.get("model"))
    cfg.data = _convert(data, recipe.data_schema, "data")
    cfg.options = _convert(options, recipe.options_schema, "options")
    check_finite(cfg)
    check_ranges(cfg, rules_for(recipe))
    recipe.check_config(cfg)
    _check_fixed_sections(cfg)
    check_memory(cfg)
    return cfg


def _split_model_name(cfg: Config, raw_model: Any) -> None:
    """``model.name: smp/unet`` (the form ``list_models()`` prints) sets ``model.family`` too."""
    family, sep, name = cfg.model.name.partition("/")
    if not sep or family.startswith("hf-hub:") or cfg.model.name.startswith("hf-hub:"):
        return
    given = raw_model.get("family") if isinstance(raw_model, Mapping) else None
    if not family or not name:
        raise ConfigError(f"config key 'model.name': received {cfg.model.name!r}; write FAMILY/NAME as "
                          "list_models() prints it (e.g. smp/unet) or set model.family and model.name apart")
    if given is not None and given != family:
        raise ConfigError(f"config keys 'model.family' and 'model.name' disagree: received family {given!r} and "
                          f"name {cfg.model.name!r}; drop model.family or write model.name={name}")
    cfg.model.family, cfg.model.name = family, name


def _check_fixed_sections(cfg: Config) -> None:
    """Relations between keys of the fixed sections (single-key ranges are in :mod:`.ranges`)."""
    checks = [
        ("mix.off_last_epochs", cfg.mix.off_last_epochs == 0 or cfg.train.max_epochs >= 1,
         "counts back from train.max_epochs, which is unset (-1); set train.max_epochs"),
        ("mix.warmup_epochs", cfg.mix.warmup_epochs == 0 or cfg.mix.variant == "none" or cfg.train.max_epochs < 1
         or cfg.mix.warmup_epochs + cfg.mix.off_last_epochs < cfg.train.max_epochs,
         f"with mix.off_last_epochs={cfg.mix.off_last_epochs} leaves no mixed epoch of train.max_epochs="
         f"{cfg.train.max_epochs}; lower it (warmup_epochs + off_last_epochs < max_epochs) or set mix.variant=none"),
        ("mix.off_last_epochs", cfg.mix.variant == "none" or cfg.train.max_epochs < 1
         or cfg.mix.off_last_epochs < cfg.train.max_epochs,
         f"must be < train.max_epochs={cfg.train.max_epochs}, or no epoch would mix; lower it, or set "
         "mix.variant=none to train without mixing"),
        ("train.max_epochs", cfg.train.max_epochs >= 1 or cfg.train.max_steps > 0,
         "must be >= 1 (-1 needs train.max_steps > 0)"),
    ]
    try:
        check_points(cfg.mix.points)  # the core's rule; the model's own names are checked when it is built
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'mix.points': {err}") from None
    for key, ok, msg in checks:
        if not ok:
            raise ConfigError(f"config key {key!r}: {msg} (received {_get(cfg, key)!r})")
    batch = getattr(cfg.data, "batch_size", None)
    if batch is not None and cfg.mix.variant != "none" and batch < 2:
        raise ConfigError(f"config key 'data.batch_size': mixing needs batches of at least 2 samples, "
                          f"received {batch}; raise it or set mix.variant=none")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


