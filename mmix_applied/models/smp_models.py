"""segmentation-models-pytorch encoder–decoders behind the model registry.

``create_model("smp", "unet", num_classes=4, encoder_name="resnet34")`` is
``smp.create_model`` with ``encoder_weights=None`` (weights come from local files only) and
``classes=num_classes``. Every smp encoder works, including ``tu-`` timm encoders. Default mix
points (input + encoder stages, skip-consistent) come from smp's encoder contract
(:func:`smp_points`, registered with :mod:`mmix_applied.core.points`); the core mixes every encoder
feature computed before the cut that the decoder reads.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

import torch
from torch import nn

from mmix_applied.core.points import register_point_resolver

from ._registry import close_matches
from .timm_models import timm_points

__all__ = ["build_smp", "smp_names", "smp_encoder_names", "smp_points", "DEFAULT_ENCODER"]

DEFAULT_ENCODER = "resnet18"


def smp_names() -> list[str]:
    """The smp architectures (lower-case keys of ``smp.create_model``)."""
    import segmentation_models_pytorch as smp

    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


def smp_encoder_names() -> list[str]:
    """smp's own encoders; any ``"tu-<timm name>"`` works as well."""
    import segmentation_models_pytorch as smp

    return sorted(smp.encoders.encoders)


def _check_encoder(encoder_name: str) -> None:
    import segmentation_models_pytorch as smp

    if encoder_name.startswith("tu-"):
        import timm
        from timm.models import split_model_name_tag

        base = split_model_name_tag(encoder_name[3:])[0]
        if not timm.is_model(base):
            close = close_matches(base, timm.list_models())
            hint = f" Did you mean {', '.join('tu-' + c for c in close)}?" if close else ""
            raise ValueError(f"unknown timm encoder {encoder_name!r}.{hint}")
        return
    if encoder_name not in smp.encoders.encoders:
        close = close_matches(encoder_name, smp.encoders.encoders)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown smp encoder {encoder_name!r}.{hint} Use an smp encoder name or 'tu-<timm model>'."
        )


def build_smp(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder_name: str = DEFAULT_ENCODER,
    **options: Any,
) -> nn.Module:
    """Build an smp model with fresh weights.

    Args:
        name: architecture, case-insensitive: ``unet``, ``unetplusplus``, ``fpn``, ``deeplabv3``,
            ``deeplabv3plus``, ``linknet``, ``pspnet``, ``manet``, ``pan``, ``upernet``,
            ``segformer``, ``dpt`` (DPT needs a ViT-like ``tu-`` encoder).
        num_classes: output channels (smp's ``classes``).
        in_channels: input channels.
        encoder_name: smp encoder or ``"tu-<timm name>"``.
        **options: passed to the architecture (``encoder_depth``, ``decoder_channels``,
            ``activation``, ``aux_params``...). When ``encoder_depth`` is given without
            ``decoder_channels`` to an architecture whose decoder has one block per level
            (Unet, UnetPlusPlus, MAnet), the default decoder channels are cut to that depth.

    Raises:
        ValueError: unknown architecture or encoder (with close matches), or a hub download asked for.
    """
    import segmentation_models_pytorch as smp

    key = name.lower()
    if key not in smp.MODEL_ARCHITECTURES_MAPPING:
        close = close_matches(key, smp.MODEL_ARCHITECTURES_MAPPING)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown smp architecture {name!r}.{hint} Available: {smp_names()}.")
    if options.pop("encoder_weights", None) is not None:
        raise ValueError(
            "smp encoder_weights would download from a hub; leave it unset and pass pretrained='path' "
            "(a full-model or an encoder-only checkpoint) to create_model."
        )
    _check_encoder(encoder_name)
    cls = smp.MODEL_ARCHITECTURES_MAPPING[key]
    params = inspect.signature(cls.__init__).parameters
    depth = options.get("encoder_depth")
    default_dc = params["decoder_channels"].default if "decoder_channels" in params else None
    if depth is not None and "decoder_channels" not in options and isinstance(default_dc, (list, tuple)):
        if len(default_dc) == 5 and depth != 5:  # one decoder block per encoder level
            options["decoder_channels"] = tuple(default_dc[:depth])
    return smp.create_model(
        key, encoder_name=encoder_name, encoder_weights=None, in_channels=in_channels, classes=num_classes, **options
    )


@register_point_resolver
def smp_points(model: nn.Module) -> list[str] | None:
    """Default mix points of an smp model: the encoder modules that produce the features its
    decoder reads (found with one probe forward), or None for a model that is not smp's.

    smp is looked up in ``sys.modules``: a model of it cannot exist unless it was imported.
    """
    smp = sys.modules.get("segmentation_models_pytorch")
    if smp is None or not isinstance(model, smp.base.SegmentationModel):
        return None
    encoder = model.encoder
    prefix = next(n for n, m in model.named_modules() if m is encoder)
    in_ch = getattr(encoder, "_in_channels", None) or 3
    producers: dict[int, str] = {}

    def hook(name: str):
        def record(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                producers[id(output)] = name  # the last module to finish with this tensor wins
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in encoder.named_modules() if n]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            features = encoder(torch.zeros(1, in_ch, 64, 64, device=device))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    points, unmatched = [], 0
    for feat in features[1:]:
        name = producers.get(id(feat))
        if name is not None:
            points.append(f"{prefix}.{name}")
        elif feat.numel():
            unmatched += 1
    inner = getattr(encoder, "model", None)
    if unmatched and inner is not None:
        # A timm encoder whose features are reshaped tokens (smp's DPT with a ViT): no module
        # returns them, so cut at the blocks the timm model itself lists.
        nested = timm_points(inner)
        if nested:
            return [f"{prefix}.model.{n}" for n in nested]
    return points
