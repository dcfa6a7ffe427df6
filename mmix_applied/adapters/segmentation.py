"""Segmentation adapter: soft dense targets for 2D and 3D masks, CE with probabilities + soft Dice.

Mixing at a hidden state mixes the whole image, so the target is the same mix of the two masks,
pixel by pixel: ``lam * onehot(m) + (1 - lam) * onehot(m[perm])`` (Manifold Mixup, Verma et al.,
ICML 2019); in cutmix mode the plan's box, resized to the mask, swaps target pixels. Dice is not
linear in the target, so the target is mixed, not the loss. Pixels marked ``ignore_index`` in
either partner (mixup) or in the partner they come from (cutmix) stay ignored.

Adapters note:

- **Soft Dice.** The Dice term is the soft-label Dice of :mod:`mmix_applied.adapters.dice`
  (MONAI's ``DiceLoss(soft_label=True)``): 0 at a prediction equal to the mixed target, MONAI's
  default ``DiceLoss`` on hard targets. MONAI's default (``soft_label=False``) is about 0.3 there.
- **Compile.** The loss is plain tensor ops: no graph break under ``torch.compile``; mask value
  checks run in eager calls only.
- **mix_targets.** ``mix_targets(mask, plan)`` gives the ``(B, C, *S)`` mixed soft target (ignored
  pixels 0 in every channel) for a loop whose loss is ``criterion(output, target)``.
- **MONAI shapes.** Channel-first masks ``(B, 1, *S)`` and ``MetaTensor`` s are accepted as they
  come; the spatial rank is read from the output in ``loss`` and from the mask in ``mix_targets``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmix_applied.core.functional import box_mask
from mmix_applied.core.plan import MixPlan

from .base import Adapter, box_for, check_batch, check_tensor, checking_values, mix_dense
from .dice import soft_dice_loss

__all__ = ["Segmentation", "SEG_MODES"]

SEG_MODES = ("multiclass", "binary", "multilabel")
_LAYOUTS = {"multiclass": "(B, H, W), (B, 1, H, W), (B, D, H, W) or (B, 1, D, H, W) class indices",
            "binary": "(B, H, W), (B, 1, H, W), (B, D, H, W) or (B, 1, D, H, W) of 0/1",
            "multilabel": "(B, C, H, W) or (B, C, D, H, W) of 0/1"}


class Segmentation(Adapter):
    """Dense 2D/3D segmentation.

    Args:
        num_classes: ``C``; 1 for ``binary``.
        mode: ``"multiclass"`` (output ``(B, C, *S)`` logits, mask ``(B, *S)`` or ``(B, 1, *S)`` class
            indices), ``"binary"`` (output ``(B, 1, *S)``, mask of 0/1), ``"multilabel"`` (output
            ``(B, C, *S)``, mask ``(B, C, *S)`` of 0/1). ``*S`` is ``H, W`` or ``D, H, W``.
        dice_weight: weight of the soft-label Dice term (:func:`~mmix_applied.adapters.dice.soft_dice_loss`,
            MONAI's ``DiceLoss(soft_label=True)``).
        ce_weight: weight of the cross-entropy term (BCE for binary/multilabel).
        ignore_index: mask value whose pixels count in neither term (None: every pixel counts).
        include_background: whether channel 0 counts in Dice (multiclass).
        dice_batch: Dice over the whole batch per class (True) or per sample then averaged.
        validate: check mask values on every eager call (one device sync; skipped under
            ``torch.compile``).
        smooth_nr: Dice numerator smoothing (MONAI's default).
        smooth_dr: Dice denominator smoothing (MONAI's default).

    Mask layouts (MONAI and smp ones included): ``(B, *S)`` or channel-first ``(B, 1, *S)`` for
    multiclass and binary, ``(B, C, *S)`` for multilabel; plain tensors or ``MetaTensor`` s. In
    ``mix_targets`` a 4-dim multiclass/binary mask ``(B, 1, H, W)`` reads as 2D channel-first: a
    3D mask of depth 1 needs ``spatial=3``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mode: str = "multiclass",
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        ignore_index: int | None = None,
        include_background: bool = True,
        dice_batch: bool = True,
        validate: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
    ) -> None:
        super().__init__()
        if mode not in SEG_MODES:
            raise ValueError(f"Segmentation: mode must be one of {SEG_MODES}; received {mode!r}.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"Segmentation: num_classes must be an int >= 1; received {num_classes!r}.")
        if mode == "binary" and num_classes != 1:
            raise ValueError(f"Segmentation: mode='binary' has one output channel; received num_classes={num_classes}. "
                             "Use num_classes=1, or mode='multiclass' with 2 classes.")
        if mode == "multiclass" and num_classes < 2:
            raise ValueError("Segmentation: mode='multiclass' needs num_classes >= 2; use mode='binary' for one class.")
        if dice_weight < 0 or ce_weight < 0 or dice_weight + ce_weight == 0:
            raise ValueError(f"Segmentation: weights must be >= 0 and not both 0; received dice_weight={dice_weight}, "
                             f"ce_weight={ce_weight}.")
        self.num_classes, self.mode = num_classes, mode
        self.dice_weight, self.ce_weight = float(dice_weight), float(ce_weight)
        self.ignore_index = ignore_index
        self.validate = validate
        self.include_background = bool(include_background) or mode != "multiclass"
        self.dice_batch = bool(dice_batch)
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)

    def dice(self, probs: Tensor, target: Tensor) -> Tensor:
        """The soft-label Dice term on ``(B, C, *S)`` probabilities and (masked) soft targets."""
        return soft_dice_loss(probs, target, batch=self.dice_batch, include_background=self.include_background,
                              smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr)

    # ------------------------------------------------------------------ targets
    def spatial_dims(self, mask: Tensor) -> int:
        """The number of spatial dims (2 or 3) of a mask read on its own, as :meth:`mix_targets` does.

        Multilabel: ``(B, C, *S)``. Multiclass and binary: ``(B, 1, *S)`` when dim 1 has size 1 (MONAI's
        and smp's channel-first layout), else ``(B, *S)``.
        """
        mask = check_tensor(mask, "target", "Segmentation")
        if self.mode == "multilabel":
            spatial = mask.dim() - 2
        elif mask.dim() in (4, 5) and mask.shape[1] == 1:
            spatial = mask.dim() - 2
        else:
            spatial = mask.dim() - 1
        if spatial not in (2, 3):
            raise ValueError(f"Segmentation({self.mode}): cannot read a mask of shape {tuple(mask.shape)}; "
                             f"valid layouts "
                             f"are {_LAYOUTS[self.mode]}. A one-hot multiclass mask needs mask.argmax(1); or pass "
                             "spatial=2 or spatial=3.")
        return spatial

    def soft_targets(self, mask: Tensor, spatial: int | None = None) -> tuple[Tensor, Tensor]:
        """``(B, C, *S)`` float targets and a ``(B, 1, *S)`` bool mask of counted pixels.

        Args:
            mask: the target mask (any layout of the class docstring).
            spatial: number of spatial dims; None reads it from the mask (:meth:`spatial_dims`).
        """
        mask = check_tensor(mask, "target", "Segmentation")
        if spatial is None:
            spatial = self.spatial_dims(mask)
        elif isinstance(spatial, bool) or spatial not in (2, 3):
            raise ValueError(f"Segmentation: spatial must be 2 or 3; received {spatial!r}.")
        C = self.num_classes
        if self.mode == "multilabel":
            if mask.dim() != spatial + 2 or mask.shape[1] != C:
                raise ValueError(f"Segmentation(multilabel): mask must be (B, {C}, *spatial) with {spatial} spatial "
                                 f"dims; received shape {tuple(mask.shape)}.")
            valid = torch.ones_like(mask[:, :1], dtype=torch.bool)
            if self.ignore_index is not None:
                valid = (mask != self.ignore_index).all(dim=1, keepdim=True)
            target = torch.where(valid, mask, torch.zeros_like(mask)).float()
            self._check_range(target, 0, 1, "0/1 values")
            return target, valid
        if mask.dim() == spatial + 2 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if mask.dim() != spatial + 1:
            hint = " A one-hot mask needs mask.argmax(1)." if self.mode == "multiclass" else ""
            raise ValueError(f"Segmentation({self.mode}): mask must be (B, *spatial) or (B, 1, *spatial) with "
                             f"{spatial} spatial dims to match the output; received shape {tuple(mask.shape)}.{hint}")
        if self.mode == "multiclass" and (mask.is_floating_point() or mask.dtype == torch.bool):
            raise TypeError(f"Segmentation(multiclass): mask must hold integer class indices; received dtype "
                            f"{mask.dtype}. Convert with mask.long() (for probability maps, use mode='multilabel').")
        valid = torch.ones_like(mask, dtype=torch.bool) if self.ignore_index is None else mask != self.ignore_index
        clean = torch.where(valid, mask, torch.zeros_like(mask))
        if self.mode == "multiclass":
            self._check_range(clean, 0, C - 1, f"class indices in [0, {C})")
            classes = torch.arange(C, device=clean.device).view(1, C, *([1] * spatial))
            target = (clean.unsqueeze(1) == classes).float()  # one-hot without a value check: compiles
        else:
            self._check_range(clean, 0, 1, "0/1 values")
            target = clean.float().unsqueeze(1)
        return target, valid.unsqueeze(1)

    def _check_range(self, values: Tensor, lo: float, hi: float, what: str) -> None:
        if checking_values(self.validate) and values.numel():
            vmin, vmax = float(values.min()), float(values.max())
            if vmin < lo or vmax > hi:
                extra = "" if self.ignore_index is None else f" (ignore_index={self.ignore_index} excepted)"
                raise ValueError(f"Segmentation({self.mode}): mask must hold {what}{extra}; received values from "
                                 f"{vmin:g} to {vmax:g}. Check num_classes={self.num_classes} and the mask encoding.")

    def mix_targets(self, target: Tensor, plan: MixPlan | None, *, spatial: int | None = None) -> Tensor:
        """The mixed soft target ``(B, C, *S)`` (ignored pixels are 0 in every channel).

        Args:
            target: the mask, in any layout of the class docstring (``MetaTensor`` included).
            plan: the step's plan; None gives the unmixed soft target.
            spatial: 2 or 3 to override the spatial rank read from the mask (a depth-1 3D mask).
        """
        soft, valid = self.soft_targets(target, spatial)
        if plan is not None:
            soft, valid = self._mix(soft, valid, plan)
        return soft * valid

    def _mix(self, soft: Tensor, valid: Tensor, plan: MixPlan) -> tuple[Tensor, Tensor]:
        perm = plan.perm.to(soft.device)
        mixed = mix_dense(soft, plan)
        if plan.box is None:
            valid = valid & valid[perm]
        else:
            box = box_for(plan.box, soft.dim() - 2)
            valid = torch.where(box_mask(box, soft.shape[2:], device=soft.device), valid[perm], valid)
        return mixed, valid

    # ------------------------------------------------------------------ loss
    def loss(self, output: Tensor, target: Tensor, plan: MixPlan | None = None) -> Tensor:
        """``ce_weight * CE + dice_weight * soft Dice`` against the mixed soft target, over counted pixels.

        The cross-entropy (BCE for binary/multilabel) is averaged over the pixels not marked
        ``ignore_index``; the Dice term is :meth:`dice` on the probabilities and the target, both
        zeroed at ignored pixels. In cutmix mode the plan's box, resized to the mask, swaps pixels.

        Args:
            output: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` logits (``C = 1`` for binary).
            target: The mask in any layout of the class docstring (``MetaTensor`` included), with
                the output's spatial size; the spatial rank is read from the output.
            plan: The step's :class:`~mmix_applied.core.plan.MixPlan`; ``None`` for an unmixed step.

        Returns:
            The weighted sum of both terms, a float32 scalar.

        Raises:
            TypeError: ``output`` or ``target`` is not a tensor, or a multiclass mask is not integer.
            ValueError: The output's channels or rank are wrong, the mask's layout, spatial size or
                batch size (or the plan's) does not match, or mask values are out of range
                (checked in eager calls only).
        """
        output = check_tensor(output, "output", "Segmentation")
        channels = 1 if self.mode == "binary" else self.num_classes
        if output.dim() not in (4, 5) or output.shape[1] != channels:
            raise ValueError(f"Segmentation({self.mode}): output must be (B, {channels}, H, W) or (B, "
                             f"{channels}, D, H, W) "
                             f"logits; received shape {tuple(output.shape)}. Check the network's out channels.")
        check_batch(output, check_tensor(target, "target", "Segmentation"), "Segmentation")
        spatial = output.dim() - 2
        soft, valid = self.soft_targets(target.to(output.device), spatial)
        if tuple(soft.shape[2:]) != tuple(output.shape[2:]):
            raise ValueError(f"Segmentation: mask spatial size {tuple(soft.shape[2:])} differs from output "
                             f"spatial size "
                             f"{tuple(output.shape[2:])}; resize the mask (nearest) or the output to match.")
        if plan is not None:
            soft, valid = self._mix(soft, valid, plan)
        logits = output.float()
        weight = valid.float()
        counted = weight.sum().clamp_min(1.0)
        total = logits.new_zeros(())
        if self.mode == "multiclass":
            if self.ce_weight:
                ce = -(soft * F.log_softmax(logits, dim=1)).sum(dim=1, keepdim=True)
                total = total + self.ce_weight * (ce * weight).sum() / counted
            probs = logits.softmax(dim=1)
        else:
            if self.ce_weight:
                bce = F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
                total = total + self.ce_weight * (bce * weight).sum() / (counted * logits.shape[1])
            probs = logits.sigmoid()
        if self.dice_weight:
            # masked as MONAI's ignore_index does: ignored pixels are 0 in both, so |p - t| = 0 there
            total = total + self.dice_weight * self.dice(probs * weight, soft * weight)
        return total
