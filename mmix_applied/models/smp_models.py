"""segmentation-models-pytorch encoder–decoders behind the model registry.

``create_model("smp", "unet", num_classes=4, encoder_name="resnet34")`` is
``smp.create_model`` with ``encoder_weights=None`` (weights come from local files only) and
``classes=num_classes``. Every smp encoder works, including ``tu-`` timm encoders. Default mix
points (input + encoder stages, skip-consistent) are resolved by :mod:`mmix_applied.points` from
smp's encoder contract; the core mixes every encoder feature computed before the cut that the
decoder reads.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ._registry import close_matches

__all__ = ["build_smp", "smp_names", "smp_encoder_names", "DEFAULT_ENCODER"]

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
