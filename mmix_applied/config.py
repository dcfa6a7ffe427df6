"""Strict, typed run configuration: YAML in, dataclasses out, dotted overrides, saved with every run.

A config has fixed sections (``run``, ``model``, ``mix``, ``optim``, ``scheduler``, ``train``) and
two owned by the recipe (``data``, ``task``: the dataclasses ``Recipe.data_schema`` and
``Recipe.task_schema``). Validation is strict: an unknown key is an error that names it, lists the
valid keys and suggests the closest one; a value of the wrong type names the key and the expected
type. Every key and its default is documented in ``docs/configs.md``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "ConfigKeyError",
    "ConfigTypeError",
    "MixConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SchedulerConfig",
    "TrainConfig",
    "apply_overrides",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_config",
    "read_yaml",
    "save_config",
]


class ConfigError(ValueError):
    """A config is invalid (the message names the key, what was received and the fix)."""


class ConfigKeyError(ConfigError, KeyError):
    """An unknown or misspelled config key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigTypeError(ConfigError, TypeError):
    """A config value of the wrong type."""


@dataclasses.dataclass
class RunConfig:
    """Where a run writes. The run directory is ``dir/name``.

    Attributes:
        dir: Parent folder of run directories.
        name: Run directory name; ``None`` makes ``{recipe}-{variant}-{YYYYmmdd-HHMMSS}``.
    """

    dir: str = "runs"
    name: str | None = None


@dataclasses.dataclass
class ModelConfig:
    """The network, built by ``mmix_applied.models.create_model(family, name, ...)``.

    Attributes:
        family: Model family (``timm``, ``smp``, ``monai``, ``crnn``).
        name: Architecture name within the family (e.g. ``resnet18``).
        pretrained: Path of a local weights file (``.safetensors``/``.pth``); ``None`` trains from scratch.
        options: Extra keyword options for the builder (e.g. ``drop_rate``).
        freeze_backbone_epochs: Train only the head for this many first epochs.
        backbone_lr_mult: Backbone learning rate = ``optim.lr`` times this.
        layer_decay: timm models: layer-wise learning-rate decay in (0, 1] (``None``: off).
    """

    family: str = "timm"
    name: str = "resnet18"
    pretrained: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    freeze_backbone_epochs: int = 0
    backbone_lr_mult: float = 1.0
    layer_decay: float | None = None


@dataclasses.dataclass
class MixConfig:
    """The mixing schedule.

    Attributes:
        variant: ``none`` (plain training), ``input`` (input mixup) or ``manifold``.
        alpha: Beta(alpha, alpha) parameter of the mixing weight.
        mode: ``mixup`` (interpolation) or ``cutmix`` (box swap at the point's resolution).
        points: ``auto`` (the model's default points) or a list of module names / ``input``.
        prob: Probability that a training step is mixed.
        lam_per_sample: One mixing weight per sample instead of one per batch.
        off_last_epochs: Train the last N epochs without mixing.
    """

    variant: Literal["none", "input", "manifold"] = "manifold"
    alpha: float = 2.0
    mode: Literal["mixup", "cutmix"] = "mixup"
    points: str | list[str] = "auto"
    prob: float = 1.0
    lam_per_sample: bool = False
    off_last_epochs: int = 0


@dataclasses.dataclass
class OptimConfig:
    """The optimizer.

    Attributes:
        name: ``adamw``, ``adam`` or ``sgd``.
        lr: Learning rate (of the head; see ``model.backbone_lr_mult``).
        weight_decay: Decoupled (adamw) or L2 (adam, sgd) weight decay.
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
    """

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False


@dataclasses.dataclass
class SchedulerConfig:
    """The learning-rate schedule, stepped every optimizer step.

    Attributes:
        name: ``none``, ``cosine`` (to ``min_lr_ratio * lr``) or ``multistep``.
        warmup_epochs: Linear warm-up length in epochs (fractions allowed).
        min_lr_ratio: Final learning rate of ``cosine`` relative to the initial one.
        milestones: Epochs at which ``multistep`` multiplies the rate by ``gamma``.
        gamma: ``multistep`` factor.
    """

    name: Literal["none", "cosine", "multistep"] = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    milestones: list[int] = dataclasses.field(default_factory=list)
    gamma: float = 0.1


@dataclasses.dataclass
class TrainConfig:
    """Trainer options; most pass straight to ``lightning.pytorch.Trainer``.

    Attributes:
        max_epochs: Epochs to train.
        max_steps: Stop after this many optimizer steps (-1: no limit).
        accelerator: ``auto``, ``cpu``, ``gpu``, ``cuda``, ``mps``.
        devices: Number of devices, a list of ids, or ``auto``.
        num_nodes: Machines for multi-node DDP.
        strategy: ``auto``, ``ddp``, ``ddp_spawn``, ``ddp_find_unused_parameters_true``, ``fsdp``...
        precision: ``32``, ``bf16-mixed``, ``16-mixed``, ``64``.
        accumulate_grad_batches: Gradient accumulation.
        gradient_clip_val: Clip gradients at this norm/value (``None``: no clipping).
        gradient_clip_algorithm: ``norm`` or ``value``.
        limit_train_batches: Batches per epoch (int) or fraction of the epoch (float).
        limit_val_batches: As above, for validation.
        limit_test_batches: As above, for test.
        limit_predict_batches: As above, for predict.
        check_val_every_n_epoch: Validate every N epochs.
        log_every_n_steps: Logging interval.
        deterministic: Deterministic algorithms (bitwise-reproducible on CPU).
        enable_progress_bar: Lightning's progress bar.
        loggers: Any of ``csv``, ``tensorboard``.
        monitor: Metric for the best checkpoint.
        monitor_mode: ``min`` or ``max``.
        save_top_k: Best checkpoints to keep (-1: all, 0: none; ``last.ckpt`` is always written each epoch).
        nonfinite_loss: ``stop`` (raise, naming the step) or ``skip`` (skip and count the step).
    """

    max_epochs: int = 10
    max_steps: int = -1
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | int = "32"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    limit_test_batches: int | float = 1.0
    limit_predict_batches: int | float = 1.0
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    deterministic: bool = False
    enable_progress_bar: bool = True
    loggers: list[Literal["csv", "tensorboard"]] = dataclasses.field(
        default_factory=lambda: ["csv", "tensorboard"]
    )
    monitor: str = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"
    save_top_k: int = 1
    nonfinite_loss: Literal["stop", "skip"] = "stop"


@dataclasses.dataclass
class Config:
    """A whole run: the recipe's name, the seed and every section.

    ``data`` and ``task`` are instances of the recipe's ``data_schema`` and ``task_schema``.
    """

    recipe: str = "classification"
    seed: int = 0
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    mix: MixConfig = dataclasses.field(default_factory=MixConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: Any = None
    task: Any = None


# ------------------------------------------------------------------ validation
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
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigTypeError(f"config key {key!r}: expected a mapping (section {tp.__name__}), "
                                  f"got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _convert(value, arm, key)
            except ConfigError:
                continue
        raise ConfigTypeError(f"config key {key!r}: expected {_type_name(tp)}, "
                              f"got {type(value).__name__} {value!r}")
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"config key {key!r}: {value!r} is not one of {_type_name(tp)}{hint}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigTypeError(f"config key {key!r}: expected {_type_name(tp)}, "
                                  f"got {type(value).__name__} {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigTypeError(f"config key {key!r}: expected {len(args)} items "
                                      f"({_type_name(tp)}), got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigTypeError(f"config key {key!r}: expected a mapping, got {type(value).__name__} {value!r}")
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
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigTypeError(f"config key {key!r}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for k in raw:
        if k not in fields:
            name = f"{prefix}.{k}" if prefix else str(k)
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
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
    from mmix_applied.tasks.base import get_recipe, list_recipes

    raw = dict(raw or {})
    if not isinstance(raw, Mapping):
        raise ConfigTypeError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    recipe_name = raw.get("recipe", Config.recipe)
    if not isinstance(recipe_name, str):
        raise ConfigTypeError(f"config key 'recipe': expected str, got {recipe_name!r}")
    try:
        recipe = get_recipe(recipe_name)
    except KeyError:
        close = difflib.get_close_matches(recipe_name, list_recipes(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigKeyError(f"config key 'recipe': unknown recipe {recipe_name!r}.{hint} "
                             f"Valid recipes: {', '.join(list_recipes())}") from None
    data = raw.pop("data", None) or {}
    task = raw.pop("task", None) or {}
    cfg = _build(Config, raw, "")
    cfg.data = _convert(data, recipe.data_schema, "data")
    cfg.task = _convert(task, recipe.task_schema, "task")
    _check_ranges(cfg)
    return cfg


def _check_ranges(cfg: Config) -> None:
    checks = [
        ("mix.alpha", cfg.mix.alpha > 0, "must be > 0 (try 2.0 for small images, 0.2 for large data)"),
        ("mix.prob", 0.0 <= cfg.mix.prob <= 1.0, "must be in [0, 1]"),
        ("mix.off_last_epochs", cfg.mix.off_last_epochs >= 0, "must be >= 0"),
        ("mix.off_last_epochs", cfg.mix.off_last_epochs == 0 or cfg.train.max_epochs >= 1,
         "counts back from train.max_epochs, which is unset (-1); set train.max_epochs"),
        ("optim.lr", cfg.optim.lr > 0, "must be > 0"),
        ("train.max_epochs", cfg.train.max_epochs >= 1 or cfg.train.max_steps > 0, "must be >= 1"),
        ("train.accumulate_grad_batches", cfg.train.accumulate_grad_batches >= 1, "must be >= 1"),
        ("model.freeze_backbone_epochs", cfg.model.freeze_backbone_epochs >= 0, "must be >= 0"),
        ("model.backbone_lr_mult", cfg.model.backbone_lr_mult >= 0, "must be >= 0"),
    ]
    if isinstance(cfg.mix.points, str) and cfg.mix.points != "auto":
        raise ConfigError(f"config key 'mix.points': {cfg.mix.points!r} must be 'auto' or a list of "
                          "module names, e.g. [input, layer1]")
    for key, ok, msg in checks:
        if not ok:
            raise ConfigError(f"config key {key!r}: {msg} (got {_get(cfg, key)!r})")
    batch = getattr(cfg.data, "batch_size", None)
    if batch is not None and cfg.mix.variant != "none" and batch < 2:
        raise ConfigError(f"config key 'data.batch_size': mixing needs batches of at least 2 samples, "
                          f"got {batch}; raise it or set mix.variant=none")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


# ------------------------------------------------------------------ overrides and files
def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted ``key=value`` overrides applied (values parsed as YAML).

    Example: ``apply_overrides(raw, ["train.max_epochs=3", "mix.points=[input,layer1]"])``.

    Raises:
        ConfigError: For an override without ``=`` or one that descends into a non-mapping.
    """
    import copy

    out = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.max_epochs=3)")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: depth + 1])!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist; see configs/ for examples")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigTypeError(f"config file {str(path)!r}: expected a mapping of sections, "
                              f"got {type(raw).__name__}")
    return raw


def load_config(source: str | os.PathLike | Mapping[str, Any] | None = None,
                overrides: Iterable[str] = ()) -> Config:
    """Load a YAML file (or mapping; ``None`` for all defaults), apply overrides, validate."""
    raw = dict(source) if isinstance(source, Mapping) else read_yaml(source) if source is not None else {}
    return parse_config(apply_overrides(raw, overrides))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain-Python (YAML/checkpoint-safe) form of a config."""

    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, (list, tuple)):
            return [plain(v) for v in obj]
        if isinstance(obj, dict):
            return {str(k): plain(v) for k, v in obj.items()}
        return obj

    return plain(cfg)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dump_config(cfg))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
