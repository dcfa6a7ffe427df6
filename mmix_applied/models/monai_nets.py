"""MONAI segmentation networks (2D and 3D) and their default mix points.

Default points are the encoder levels of each network, read from the network's structure:

* ``BasicUNet``: its five encoder blocks ``conv_0``, ``down_1`` ... ``down_4``.
* ``UNet`` and ``AttentionUnet``: these nest their levels recursively (``Sequential(down,
  SkipConnection(subblock), up)`` and ``AttentionLayer(submodule=Sequential(down, subblock))``).
  :func:`monai_points` walks the nesting: a module that *keeps its input for later* (MONAI's
  ``SkipConnection``, ``AttentionLayer``) is descended into; inside a ``Sequential`` the children
  before the first one that contains such a module are encoder blocks (points), the children
  after it are decoder blocks; a block without any skip inside is the bottom. This works for
  any depth and any ``num_res_units``, without index strings.
* ``DynUNet``: the ``DynUNetSkipLayer`` recursion, ``downsample`` at each level then the
  ``bottleneck`` (named as in ``named_modules()``: ``input_block``, ``downsamples.i``,
  ``bottleneck``).
* ``SwinUNETR``: the Swin encoder stages ``swinViT.patch_embed`` and ``swinViT.layersK.0``.

Importing this module registers :func:`monai_points` with :mod:`mmix_applied.core.points`; it answers
None for models that are not one of these networks (without importing MONAI). Whatever a
network saves for later (U-Net skips, the raw input that SwinUNETR's ``encoder1`` reads) is
mixed at the cut by the core, which computes the live set of the traced graph.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from torch import nn

from mmix_applied.core.points import register_point_resolver

from ._registry import close_matches

__all__ = ["MONAI_NETS", "build_monai", "monai_init_args", "monai_names", "monai_points"]

# Registry name -> class name in monai.networks.nets.
MONAI_NETS = {
    "basicunet": "BasicUNet",
    "unet": "UNet",
    "attentionunet": "AttentionUnet",
    "dynunet": "DynUNet",
    "swinunetr": "SwinUNETR",
}


def monai_names() -> list[str]:
    """The MONAI networks this family builds."""
    return sorted(MONAI_NETS)


def _strides(channels: Any) -> tuple[int, ...]:
    return (2,) * (len(channels) - 1)


def build_monai(name: str, *, num_classes: int, in_channels: int = 1, **options: Any) -> nn.Module:
    """Build a MONAI network with fresh weights.

    Args:
        name: one of :data:`MONAI_NETS` (case-insensitive; class names such as ``"BasicUNet"``
            work too).
        num_classes: output channels (``out_channels``).
        in_channels: input channels.
        **options: passed to the network's constructor. ``spatial_dims`` defaults to 3.
            ``UNet``/``AttentionUnet``: ``channels`` defaults to ``(16, 32, 64, 128, 256)`` and
            ``strides`` to 2 per level. ``DynUNet``: give ``filters`` (or ``channels``) and the
            ``kernel_size``/``strides``/``upsample_kernel_size`` default to 3, ``[1, 2, ...]``
            and the strides after the first.

    Raises:
        ValueError: unknown name (with close matches) or options the network does not take.
    """
    from monai.networks import nets

    class_name, opts = monai_init_args(name, num_classes=num_classes, in_channels=in_channels, **options)
    cls = getattr(nets, class_name)
    try:
        return cls(**opts)
    except TypeError as err:
        raise ValueError(f"MONAI {cls.__name__} rejected the options {sorted(opts)}: {err}") from err


def monai_init_args(name: str, *, num_classes: int, in_channels: int = 1, **options: Any) -> tuple[str, dict[str, Any]]:
    """The class name in ``monai.networks.nets`` and the keyword arguments :func:`build_monai` passes it.

    An exported MONAI network is rebuilt from these (``getattr(monai.networks.nets, name)(**kwargs)``).

    Raises:
        ValueError: unknown name (with close matches) or conflicting options.
    """
    key = name.lower()
    if key not in MONAI_NETS:
        close = close_matches(key, MONAI_NETS)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown MONAI network {name!r}.{hint} Available: {monai_names()}.")
    opts = dict(options)
    opts.setdefault("spatial_dims", 3)
    if key in ("unet", "attentionunet"):
        opts.setdefault("channels", (16, 32, 64, 128, 256))
        opts.setdefault("strides", _strides(opts["channels"]))
    elif key == "dynunet":
        if "channels" in opts:
            if "filters" in opts:
                raise ValueError("DynUNet takes `filters` or its alias `channels`, not both.")
            opts["filters"] = opts.pop("channels")
        levels = len(opts["filters"]) if opts.get("filters") is not None else 5
        opts.setdefault("kernel_size", [3] * levels)
        opts.setdefault("strides", [1] + [2] * (levels - 1))
        opts.setdefault("upsample_kernel_size", list(opts["strides"])[1:])
    elif key == "basicunet" and "channels" in opts:
        raise ValueError(
            "BasicUNet takes `features` (six numbers: five encoder levels and the last decoder level), "
            "not `channels`; e.g. features=(8, 8, 16, 32, 64, 8)."
        )
    elif key == "swinunetr" and "img_size" in opts:
        raise ValueError("SwinUNETR in MONAI >= 1.5 takes no img_size; inputs must be divisible by 32.")
    return MONAI_NETS[key], {"in_channels": in_channels, "out_channels": num_classes, **opts}


# --------------------------------------------------------------------------------------------
# Default points


def _keeps_input(module: nn.Module) -> bool:
    """Modules that save their input and join it with a deeper result later (a U-Net level)."""
    from monai.networks.layers.simplelayers import SkipConnection
    from monai.networks.nets.attentionunet import AttentionLayer

    return isinstance(module, (SkipConnection, AttentionLayer))


def _contains_skip(module: nn.Module) -> bool:
    return any(_keeps_input(m) for m in module.modules())


def _encoder_path(module: nn.Module, prefix: str) -> Iterator[str]:
    """Yield the encoder blocks of a recursively nested U-Net, shallow to deep."""
    join = (lambda n: f"{prefix}.{n}") if prefix else (lambda n: n)
    if _keeps_input(module):
        # SkipConnection and AttentionLayer both hold the deeper levels in `.submodule`.
        yield from _encoder_path(module.submodule, join("submodule"))
    elif _contains_skip(module):
        if not isinstance(module, nn.Sequential):
            raise ValueError(
                f"cannot read encoder levels through a {type(module).__name__} at {prefix!r}; "
                "name the mix points explicitly."
            )
        for child_name, child in module.named_children():
            if _contains_skip(child) or _keeps_input(child):
                yield from _encoder_path(child, join(child_name))
                return  # the children after the skip level belong to the decoder
            yield join(child_name)
    else:
        yield prefix  # the bottom of the U: a block with no skip inside


def _canonical_names(model: nn.Module) -> dict[int, str]:
    """Module id -> the name ``named_modules()`` (and torch.fx) uses for it."""
    return {id(m): n for n, m in model.named_modules()}


def _dynunet_points(model: nn.Module) -> list[str]:
    from monai.networks.nets.dynunet import DynUNetSkipLayer

    names = _canonical_names(model)
    points = []
    layer = model.skip_layers
    while isinstance(layer, DynUNetSkipLayer):
        points.append(names[id(layer.downsample)])
        layer = layer.next_layer
    points.append(names[id(layer)])
    return points


def _swin_points(model: nn.Module) -> list[str]:
    vit = model.swinViT
    points = ["swinViT.patch_embed"]
    for name, child in vit.named_children():
        # Stage modules are ModuleLists of one stage each: layers1, layers2, ... (layersKc are the
        # v2 residual conv blocks that run before a stage; the stage output is the boundary).
        if name.startswith("layers") and not name.endswith("c") and isinstance(child, nn.ModuleList):
            points += [f"swinViT.{name}.{i}" for i in range(len(child))]
    return points


@register_point_resolver
def monai_points(model: nn.Module) -> list[str] | None:
    """Default mix points (module names, without ``"input"``) of a MONAI network, or None.

    Args:
        model: any module; only ``BasicUNet``, ``UNet``, ``AttentionUnet``, ``DynUNet`` and
            ``SwinUNETR`` (and subclasses) get points, anything else returns None.

    Returns:
        The encoder levels, shallow to deep, including the bottom of the U.
    """
    if "monai" not in sys.modules:  # a MONAI network cannot exist without MONAI imported
        return None
    from monai.networks import nets

    if isinstance(model, nets.BasicUNet):
        return ["conv_0", "down_1", "down_2", "down_3", "down_4"]
    if isinstance(model, (nets.UNet, nets.AttentionUnet)):
        return list(_encoder_path(model.model, "model"))
    if isinstance(model, nets.DynUNet):
        return _dynunet_points(model)
    if isinstance(model, nets.SwinUNETR):
        return _swin_points(model)
    return None
