"""Model families behind one builder: timm classifiers, smp encoder–decoders, MONAI nets, CRNN.

``create_model("family/name", num_classes=..., in_channels=..., pretrained=..., **options)`` (or
``create_model(family, name, ...)``) builds any registered model with fresh weights, then loads a
local weights file, or hub weights from the local cache, if given (nothing is downloaded). Every
built model has default mix points (see :func:`default_points`), which
``ManifoldMixup(model, points="auto")`` resolves.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from torch import nn

from mmix_applied.errors import MmixWarning

from ._registry import get_family, list_families, list_models, register_family, resolve_model_name
from .crnn import CRNN, build_crnn, crnn_names
from .hub import HUB_PREFIX, resolve_weights
from .monai_nets import build_monai, monai_names, monai_points
from .smp_models import build_smp, smp_names
from .timm_models import build_timm, param_groups, set_backbone_trainable, timm_names
from .weights import LoadReport, head_prefixes, load_weights, read_state_dict, reset_head

__all__ = [
    "create_model",
    "list_models",
    "list_families",
    "register_family",
    "resolve_model_name",
    "resolve_weights",
    "default_points",
    "param_groups",
    "set_backbone_trainable",
    "load_weights",
    "read_state_dict",
    "reset_head",
    "head_prefixes",
    "LoadReport",
    "CRNN",
    "monai_points",
]

def _timm_has(name: str) -> bool:
    """timm builds ``name`` with or without a pretrained tag (``resnet18.a1_in1k``)."""
    import timm
    from timm.models import split_model_name_tag

    return timm.is_model(split_model_name_tag(name)[0])


register_family("timm", build_timm, names=timm_names, description="timm classifiers (CNNs, NFNets, ViT/DeiT)",
                contains=_timm_has)
register_family("smp", build_smp, names=smp_names, description="segmentation-models-pytorch encoder-decoders")
register_family("monai", build_monai, names=monai_names, description="MONAI segmentation networks, 2D and 3D")
register_family("crnn", build_crnn, names=crnn_names, description="CRNN text-line recognizer for CTC")


def create_model(
    family: str,
    name: str | None = None,
    *,
    num_classes: int,
    in_channels: int = 3,
    pretrained: str | os.PathLike | None = None,
    **options: Any,
) -> nn.Module:
    """Build a model of a registered family, optionally with pretrained weights.

    Args:
        family: ``"timm"``, ``"smp"``, ``"monai"``, ``"crnn"`` or a family added with
            :func:`register_family`; or, with ``name`` omitted, the model as :func:`list_models`
            prints it (``"smp/unet"``, ``"timm/resnet18"``), or a bare name that one family alone
            builds (``"basicunet"``).
        name: the model within the family (``"resnet18"``, ``"unet"``, ``"basicunet"``, ``"crnn"``).
        num_classes: outputs (classes, segmentation channels, or charset size + 1 for CTC).
        in_channels: input channels.
        pretrained: path to a local ``.safetensors`` or ``.pth`` file, or hub weights read from the
            local Hugging Face cache, never downloaded: ``"hf-hub:timm/resnet18.a1_in1k"`` or a
            timm name with a pretrained tag (``"resnet18.a1_in1k"``). The head is reset when its
            shape differs from ``num_classes``, and the key report is logged (a warning is issued
            when keys outside the head are missing or unexpected).
        **options: passed to the family's builder (timm: ``drop_rate``, ``drop_path_rate``,
            ``img_size``...; smp: ``encoder_name``, ``encoder_depth``...; monai:
            ``spatial_dims``, ``channels``...; crnn: ``backbone``, ``hidden_size``...).

    Raises:
        ValueError: unknown or ambiguous family or name (with close matches), invalid options, or
            weights that hold NaN/Inf or do not fit.
        FileNotFoundError: ``pretrained`` is not an existing file, or the cache lacks the named
            weights (the message gives the command that fetches them).
    """
    for given in (family, name):
        if isinstance(given, str) and HUB_PREFIX in given:
            repo = given[given.index(HUB_PREFIX) + len(HUB_PREFIX):]
            arch = repo.rpartition("/")[2].split(".")[0] or "<architecture>"
            raise ValueError(
                f"received the hub name {given!r} as the model; the model is built from its architecture and the "
                f"hub weights come through pretrained=: create_model('timm/{arch}', num_classes=..., "
                f"pretrained='{HUB_PREFIX}{repo}') (read from the local cache, never downloaded)."
            )
    family, name = resolve_model_name(family, name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; received {num_classes!r}.")
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int; received {in_channels!r}.")
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(
            f"pretrained takes a path to a local weights file, a hub name read from the local cache "
            f"('hf-hub:timm/resnet18.a1_in1k') or None; received {pretrained!r}. Nothing is downloaded."
        )
    fam = get_family(family)
    source = resolve_weights(pretrained) if pretrained is not None else None  # fail before building
    model = fam.build(name, num_classes=num_classes, in_channels=in_channels, **options)
    if source is not None:
        built = getattr(model, "pretrained_cfg", None)
        built = built.get("architecture") if isinstance(built, dict) else None
        if source.architecture and built and source.architecture != built:
            warnings.warn(f"pretrained {source.spec!r} holds weights of {source.architecture!r}, loaded into "
                          f"{built!r}; keys that differ are reported, shapes that differ are refused.",
                          MmixWarning, stacklevel=2)
        report = load_weights(model, source.path)
        model.weights_report = report  # what loaded: shown by fit's data summary
        if not report.clean:
            warnings.warn(f"weights loaded with differences:\n{report}", MmixWarning, stacklevel=2)
    return model


def default_points(model: nn.Module, *, which: str = "auto") -> list[str]:
    """The points ``ManifoldMixup(model, points=which)`` uses (``auto`` or ``all``): ``"input"`` then module names."""
    from mmix_applied.core.points import default_points as resolve

    return resolve(model, which=which)  # type: ignore[arg-type]
