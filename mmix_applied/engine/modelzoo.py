"""The engine's bridge to :mod:`mmix_applied.models`: build the configured network, group its parameters."""

from __future__ import annotations

from typing import Any

from torch import nn

from mmix_applied.errors import ConfigTypeError
from mmix_applied.models import create_model, param_groups, set_backbone_trainable

__all__ = ["backbone_param_groups", "build_model", "set_backbone_trainable"]


def build_model(model_cfg: Any, *, num_classes: int, in_channels: int, **extra: Any) -> nn.Module:
    """Build ``model_cfg.family``/``model_cfg.name`` with ``num_classes`` outputs and ``in_channels`` inputs.

    Args:
        model_cfg: The ``model`` config section (:class:`mmix_applied.engine.config.schema.ModelConfig`).
        num_classes: Output classes.
        in_channels: Input channels.
        **extra: Builder options overriding ``model_cfg.options``.
    """
    try:
        return create_model(model_cfg.family, model_cfg.name, num_classes=num_classes, in_channels=in_channels,
                            pretrained=model_cfg.pretrained, **{**model_cfg.options, **extra})
    except TypeError as err:  # a misspelled or unsupported builder option from model.options
        if "unexpected keyword argument" not in str(err) or not model_cfg.options:
            raise
        raise ConfigTypeError(
            f"config key 'model.options': {model_cfg.family}/{model_cfg.name} does not take one of "
            f"{sorted(model_cfg.options)} ({err}); remove or rename it (see docs/models.md for each "
            "family's options)") from err


def backbone_param_groups(model: nn.Module, *, lr: float, backbone_lr_mult: float, weight_decay: float,
                          layer_decay: float | None = None) -> list[dict[str, Any]]:
    """Optimizer parameter groups: head at ``lr``, backbone at ``lr * backbone_lr_mult``.

    With one learning rate for everything (``backbone_lr_mult == 1`` and no layer decay) no
    backbone needs to be found, so networks without one (MONAI U-Nets) train too; biases and
    normalisation weights (1-D tensors) still get no weight decay.
    """
    if backbone_lr_mult == 1.0 and layer_decay is None:
        named = [(n, p) for n, p in model.named_parameters()]
        decay = [p for _, p in named if p.ndim > 1]
        no_decay = [p for _, p in named if p.ndim <= 1]
        groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay, "name": "decay"},
                  {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": "no_decay"}]
        return [g for g in groups if g["params"]]
    return param_groups(model, lr=lr, backbone_lr_mult=backbone_lr_mult, weight_decay=weight_decay,
                        layer_decay=layer_decay)
