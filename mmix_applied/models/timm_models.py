"""timm classifiers, and the fine-tuning helpers for any backbone + head model.

The builder is ``timm.create_model`` with ``pretrained=False`` always (local weights are loaded by
:func:`mmix_applied.models.weights.load_weights`). Options such as ``drop_rate``,
``drop_path_rate`` and ``img_size`` pass straight through. Default mix points are what the
model's own ``feature_info`` lists (:func:`timm_points`, registered with :mod:`mmix_applied.core.points`).

Fine-tuning on small labeled sets (Verma et al. 2019 mix hidden states of pretrained networks as
well): :func:`set_backbone_trainable` freezes the backbone for the first epochs, and
:func:`param_groups` gives the backbone a lower learning rate than the head, optionally with
timm's layer-wise decay.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mmix_applied.core.points import PointSets, register_point_resolver

from ._registry import close_matches

__all__ = [
    "build_timm",
    "timm_names",
    "backbone_prefixes",
    "set_backbone_trainable",
    "param_groups",
    "timm_points",
]


def timm_names() -> list[str]:
    """Every architecture name timm can build."""
    import timm

    return timm.list_models()


def build_timm(name: str, *, num_classes: int, in_channels: int = 3, **options: Any) -> nn.Module:
    """Build a timm classifier with fresh weights.

    Args:
        name: a timm model name, optionally with a pretrained tag (``"resnet18.a1_in1k"``: the tag
            selects the model's config only; weights come from ``pretrained=`` paths).
        num_classes: classifier outputs.
        in_channels: input channels.
        **options: passed to ``timm.create_model`` (``drop_rate``, ``drop_path_rate``,
            ``img_size``, ``global_pool``...).

    Raises:
        ValueError: unknown name (with close matches) or ``pretrained`` given here.
    """
    import timm
    from timm.models import split_model_name_tag

    if "pretrained" in options:
        raise ValueError("timm models never download weights; pass pretrained='path/to/file' to create_model.")
    base, _ = split_model_name_tag(name)
    if not timm.is_model(base):
        close = close_matches(base, timm.list_models())
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown timm model {name!r}.{hint} List them with list_models('timm/*').")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **options)


def _module_name(model: nn.Module, module: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if m is module), None)


def backbone_prefixes(model: nn.Module) -> tuple[list[str], bool]:
    """Where the backbone of ``model`` is, read from the model's own structure.

    Returns:
        ``(prefixes, inverted)``: with ``inverted`` False the backbone is the modules named by
        ``prefixes``; with ``inverted`` True it is everything except them (they are the head).

    Raises:
        ValueError: the model has no recognisable backbone; the message says how to name one.
    """
    declared = getattr(model, "backbone_names", None)
    if declared is not None:
        return list(declared() if callable(declared) else declared), False
    if hasattr(model, "get_classifier"):  # timm: everything but the classifier
        head = model.get_classifier()
        name = _module_name(model, head) if isinstance(head, nn.Module) else None
        if name:
            return [name], True
    for attr in ("encoder", "backbone"):  # smp encoder-decoders, our CRNN
        if isinstance(getattr(model, attr, None), nn.Module):
            return [attr], False
    raise ValueError(
        f"cannot tell the backbone of a {type(model).__name__} from its head: it is not a timm "
        "classifier and has no `encoder` or `backbone` submodule. Pass backbone=[module names]."
    )


def _is_backbone(name: str, prefixes: list[str], inverted: bool) -> bool:
    inside = any(name == p or name.startswith(p + ".") for p in prefixes)
    return inside != inverted


def _resolve(model: nn.Module, backbone: list[str] | None) -> tuple[list[str], bool]:
    if backbone is None:
        return backbone_prefixes(model)
    modules = dict(model.named_modules())
    unknown = [b for b in backbone if b not in modules]
    if unknown:
        raise ValueError(f"backbone names {unknown} are not modules of {type(model).__name__}.")
    return list(backbone), False


def set_backbone_trainable(model: nn.Module, trainable: bool, *, backbone: list[str] | None = None) -> int:
    """Freeze or unfreeze the backbone; the head always stays trainable.

    Frozen BatchNorm layers still update their running statistics in ``train()`` mode; call
    ``.eval()`` on the backbone as well to keep them fixed.

    Args:
        model: a timm classifier (head: ``model.get_classifier()``), an smp model (backbone:
            ``encoder``), a CRNN (backbone: ``backbone``) or any model with ``backbone_names``.
        trainable: False freezes, True unfreezes.
        backbone: module names to treat as the backbone, overriding the default.

    Returns:
        The number of parameter tensors changed.
    """
    prefixes, inverted = _resolve(model, backbone)
    count = 0
    for name, p in model.named_parameters():
        if _is_backbone(name, prefixes, inverted):
            p.requires_grad_(trainable)
            count += 1
    return count


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    backbone_lr_mult: float = 1.0,
    layer_decay: float | None = None,
    weight_decay: float = 0.0,
    backbone: list[str] | None = None,
) -> list[dict]:
    """Optimizer parameter groups: a lower learning rate for the backbone than for the head.

    Every parameter is included, frozen or not, so unfreezing later needs no new optimizer
    (optimizers skip parameters whose ``grad`` is None). Biases and normalisation weights (1-D
    tensors) and the model's ``no_weight_decay()`` names get no weight decay.

    Args:
        model: see :func:`set_backbone_trainable`.
        lr: learning rate of the head.
        backbone_lr_mult: backbone learning rate = ``lr * backbone_lr_mult``.
        layer_decay: timm models only: layer-wise decay (timm's ``param_groups_layer_decay``);
            each layer's rate is further scaled by ``layer_decay ** depth_from_top``.
        weight_decay: weight decay of the decayed tensors.
        backbone: module names to treat as the backbone, overriding the default.

    Returns:
        A list of dicts with ``params``, ``lr``, ``weight_decay`` and ``name``, ready for any
        ``torch.optim`` optimizer (learning rates are absolute; there is no ``lr_scale`` key).
    """
    if lr <= 0 or backbone_lr_mult < 0:
        raise ValueError(f"need lr > 0 and backbone_lr_mult >= 0; received lr={lr}, "
                         f"backbone_lr_mult={backbone_lr_mult}.")
    prefixes, inverted = _resolve(model, backbone)
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    scale_of: dict[int, float] = {}
    if layer_decay is not None:
        if not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1]; received {layer_decay}.")
        if not hasattr(model, "group_matcher"):
            raise ValueError(
                f"layer_decay needs a timm model (it reads model.group_matcher); {type(model).__name__} has none."
            )
        from timm.optim import param_groups_layer_decay

        for group in param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay):
            for p in group["params"]:
                scale_of[id(p)] = group["lr_scale"]
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        in_backbone = _is_backbone(name, prefixes, inverted)
        no_decay = p.ndim <= 1 or name in skip or name.endswith(".bias")
        scale = scale_of.get(id(p), 1.0) * (backbone_lr_mult if in_backbone else 1.0)
        wd = 0.0 if no_decay else weight_decay
        key = ("backbone" if in_backbone else "head", scale, wd)
        if key not in groups:
            tag = f"{key[0]}_lr{lr * scale:.3g}_wd{wd:g}"
            groups[key] = {"params": [], "lr": lr * scale, "weight_decay": wd, "name": tag}
        groups[key]["params"].append(p)
    return list(groups.values())


@register_point_resolver
def timm_points(model: nn.Module) -> PointSets | None:
    """Default mix points of a timm model, from the modules its ``feature_info`` lists, or None.

    ``all`` is every listed module. ``auto`` is the paper's set for CNNs (Verma et al., ICML 2019,
    Table 5: {input, stage 1, stage 2} beat every other set on CIFAR-10/100): the first two listed
    stages at reduction >= 4, so a stride-2 stem (resnet ``act1``, efficientnet ``blocks.0``) does
    not count as a stage. Token models (ViT, DeiT) list every block at one resolution; no paper set
    applies and both sets are today's: every block, or for more than six the patch embedding and
    four blocks spread over the depth.
    Answers None for a model that is not timm's (checked from ``type(model).__module__``,
    without importing timm).
    """
    info = getattr(model, "feature_info", None)
    if info is None or "timm" not in type(model).__module__:
        return None
    entries = [dict(e) for e in info] if not hasattr(info, "get_dicts") else info.get_dicts()
    names = dict(model.named_modules())
    modules: list[str] = []
    reductions: list[Any] = []
    for e in entries:
        name = e.get("module")
        for candidate in (name, str(name).replace("_", ".")):
            if candidate in names:
                modules.append(candidate)
                reductions.append(e.get("reduction"))
                break
    if len(modules) > 6 and len(set(reductions)) == 1:
        # Token models (ViT, DeiT): every block is listed at one resolution. Take the patch
        # embedding and a spread of four blocks instead of all of them.
        n = len(modules)
        spread = [modules[round(i * (n - 1) / 3)] for i in range(4)]
        embed = ["patch_embed"] if "patch_embed" in names else []
        tokens = embed + list(dict.fromkeys(spread))
        return PointSets(auto=tokens, all=tokens)
    if len(set(reductions)) == 1:
        return PointSets(auto=modules, all=modules)  # one resolution: no stages to pick from
    stages = [m for m, r in zip(modules, reductions) if not isinstance(r, (int, float)) or r >= 4]
    return PointSets(auto=stages[:2] if len(stages) >= 2 else modules[:2], all=modules)
