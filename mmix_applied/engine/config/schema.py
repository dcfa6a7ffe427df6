"""The run configuration's schema: the fixed sections as dataclasses, and the config errors.

A config has fixed sections (``run``, ``model``, ``mix``, ``optim``, ``scheduler``, ``train``) and
two owned by the recipe (``data`` and ``options``: the dataclasses ``Recipe.data_schema`` and
``Recipe.options_schema``). Every key and its default is documented in ``docs/configs.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from mmix_applied.core.mixer import DEFAULT_ALPHA
from mmix_applied.errors import ConfigError, ConfigKeyError, ConfigTypeError

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
    "config_to_dict",
]


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
        pretrained: A local weights file (``.safetensors``/``.pth``), ``hf-hub:ORG/REPO`` or a tagged timm name
            read from the local Hugging Face cache (never downloaded); ``None`` trains from scratch.
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
        alpha: Beta(alpha, alpha) parameter of the mixing weight (default
            :data:`mmix_applied.core.mixer.DEFAULT_ALPHA`, 0.2; docs/core.md says why).
        mode: ``mixup`` (interpolation) or ``cutmix`` (box swap at the point's resolution).
        points: ``auto`` (the family's default: timm CNNs the paper's {input, stage 1, stage 2},
            other families every stage), ``all`` (input + every stage the model declares) or a
            list of module names / ``input``.
        prob: Probability that a training step is mixed.
        lam_per_sample: One mixing weight per sample instead of one per batch.
        warmup_epochs: Train the first N epochs without mixing (e.g. past CTC's all-blank phase).
        off_last_epochs: Train the last N epochs without mixing.
        clean_weight: RegMixup-style clean term (Pinto et al., NeurIPS 2022), 0 = off: on a mixed
            step the loss is ``mixed_loss + clean_weight * clean_loss``, with a second, unmixed
            forward of the same batch (unmixed steps keep the plain loss). RegMixup writes
            ``L(clean) + eta * L(mixed)``; ``clean_weight = 1 / eta`` is the same objective up to
            a factor ``eta`` (the paper's eta = 1 is ``clean_weight: 1``). Measured cost: see
            ``configs/classification.yaml``.
    """

    variant: Literal["none", "input", "manifold"] = "manifold"
    alpha: float = DEFAULT_ALPHA
    mode: Literal["mixup", "cutmix"] = "mixup"
    points: str | list[str] = "auto"
    prob: float = 1.0
    lam_per_sample: bool = False
    warmup_epochs: int = 0
    off_last_epochs: int = 0
    clean_weight: float = 0.0


@dataclasses.dataclass
class OptimConfig:
    """The optimizer.

    Attributes:
        name: ``adamw``, ``adam`` or ``sgd``.
        lr: Learning rate (of the head; see ``model.backbone_lr_mult``).
        weight_decay: Decoupled (adamw) or L2 (adam, sgd) weight decay.
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        fused: torch's fused kernel for the update (one kernel over all parameters): ``auto`` uses it
            where torch has one for the parameters' device (CPU and CUDA; on a CPU 4-10x faster than
            the default ``foreach`` update, benchmarks/optimizer_step.py) and Lightning accepts it
            (not with gradient clipping under mixed precision), ``true`` requires it, ``false``
            keeps torch's default.
    """

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    fused: bool | Literal["auto"] = "auto"


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
        precision: ``auto`` (``bf16-mixed`` on a CUDA GPU that supports bf16, else ``32``), ``32``,
            ``bf16-mixed``, ``16-mixed``, ``64``.
        channels_last: ``auto`` (``true`` on a CUDA GPU for models with 2D/3D convolutions, else
            ``false``), ``true`` or ``false``: the model and its inputs in channels-last memory layout.
        compile: Compile the model (``torch.compile``, in place, once, after the mixer is attached).
        compile_mode: ``default``, ``reduce-overhead`` or ``max-autotune``.
        compile_backend: ``torch.compile`` backend (``eager``: Dynamo only, no code generation).
        loader_check_steps: Steps per epoch over which the wait for the next batch is timed against
            the step; a warning says when the loader cannot keep up (0: off).
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
        loggers: Any of ``csv``, ``tensorboard``, ``mlflow`` (needs the mlflow package; ``MLFLOW_TRACKING_URI``
            or ``run_dir/mlruns``).
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
    precision: str | int = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    compile_backend: str = "inductor"
    loader_check_steps: int = 20
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
    loggers: list[Literal["csv", "tensorboard", "mlflow"]] = dataclasses.field(
        default_factory=lambda: ["csv", "tensorboard"]
    )
    monitor: str = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"
    save_top_k: int = 1
    nonfinite_loss: Literal["stop", "skip"] = "stop"


@dataclasses.dataclass
class Config:
    """A whole run: the recipe's name, the seed and every section.

    ``data`` and ``options`` are instances of the recipe's ``data_schema`` and ``options_schema``.
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
    options: Any = None


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
