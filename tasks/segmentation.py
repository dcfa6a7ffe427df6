"""Recipe: mixed U-Nets for medical segmentation, 2D and 3D.

Any smp architecture or MONAI network trains with :class:`mmix_applied.adapters.Segmentation`
(soft dense targets, CE + soft Dice). Manifold Mixup (Verma et al., ICML 2019) mixes at an
encoder stage; every tensor crossing the cut, the U-Net skips included, is mixed with the same
``lam``/``perm`` by the core, and the masks are mixed the same way into soft targets.

Data (``data.source``): ``brain`` (the embedded MNI152 tissue default, :mod:`mmix_applied.data.brain`),
``digit_canvas`` (embedded MNIST digits on canvases, a real generalisation gap,
:mod:`mmix_applied.data.digit_canvas`), ``folders`` (2D image/mask folders) or ``datalist``
(3D Decathlon-style NIfTI datalist), see
:mod:`mmix_applied.data.segmentation`. Validation and test are unmixed; metrics: Dice per class
and mean Dice (MONAI), pixel NLL and ECE (:mod:`mmix_applied.metrics.segmentation`). 3D models evaluate
and predict whole volumes by sliding-window inference
(:class:`mmix_applied.models.sliding_window.SlidingWindowNet`).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mmix_applied.adapters import Segmentation
from mmix_applied.adapters.base import plain
from mmix_applied.data.brain import TISSUE_CLASSES
from mmix_applied.data.digit_canvas import CANVAS_CLASSES, CANVAS_MEAN, CANVAS_STD, NUM_CANVAS_CLASSES
from mmix_applied.data.masks import mask_labels
from mmix_applied.data.segmentation_3d import invert_prediction
from mmix_applied.engine.config.ranges import check_lengths
from mmix_applied.engine.datamodule import DataModule
from mmix_applied.engine.predictions import write_table
from mmix_applied.engine.recipe import DataConfig, Recipe
from mmix_applied.engine.rundir import check_output_folder
from mmix_applied.errors import ConfigError
from mmix_applied.metrics import SegmentationMetrics
from mmix_applied.metrics.temperature import TemperatureScaler
from mmix_applied.models.sliding_window import SlidingWindowNet, backbone_names
from mmix_applied.reports.overlays import middle_slice, write_overlay, write_probabilities
from mmix_applied.tasks.segmentation_data import SegmentationDatasets, datalist_class_names, describe_segmentation_data
from mmix_applied.utils.atomic import atomic_write_bytes
from mmix_applied.utils.rules import ANY_INT, ANY_NUMBER, above, at_least, half_open, one_of

__all__ = ["SegmentationData", "SegmentationOptions", "SegmentationRecipe"]


@dataclasses.dataclass
class SegmentationData(DataConfig):
    """The ``data`` section of the segmentation recipe.

    Attributes:
        source: ``brain`` (embedded MNI152 tissue, no download), ``digit_canvas`` (embedded MNIST
            digits on 64 x 64 canvases, 11 classes, glyphs of train/val/test from disjoint images:
            a task with a real generalisation gap), ``folders`` (2D) or ``datalist`` (3D).
        spatial_dims: 2 (slices/images) or 3 (volumes).
        mode: ``multiclass`` (class-index masks), ``binary`` or ``multilabel`` (one 0/1 channel per label).
        num_classes: Classes (multiclass), labels (multilabel) or 1 (binary). ``brain``: 4.
        in_channels: Image channels the model takes. ``brain``: 1.
        ignore_index: Mask value left out of loss and metrics (``None``: every pixel counts).
        class_names: Names for per-class Dice keys (default ``class0``...; ``brain``: tissue names).
        train_images: 2D training image folder (``folders``).
        train_masks: 2D training mask folder, files matched to images by name.
        val_images: 2D validation image folder.
        val_masks: 2D validation mask folder.
        test_images: 2D test image folder.
        test_masks: 2D test mask folder.
        datalist: Decathlon-style datalist JSON (``datalist``).
        base_dir: Folder the datalist paths are relative to (default: the JSON's folder).
        train_key: Datalist key of the training pairs.
        val_key: Datalist key of the validation pairs.
        test_key: Datalist key of the test pairs.
        pixdim: 3D: resample to this voxel spacing (mm); ``None`` keeps the input's.
        orientation: 3D: reorient to these axis codes (``RAS``); ``None`` keeps the input's.
        intensity_range: 3D: ``[a_min, a_max]`` scaled to [0, 1] and clipped (CT); ``None``: z-score (MR).
        patch_size: 3D: training patch size (also the sliding window unless ``task.roi_size``).
        num_samples: 3D: patches drawn per volume per step.
        crop_size: 2D: training crop ``[height, width]`` (``None``: whole images).
        pad_divisor: 2D: pad height and width to a multiple of this (the network's total stride).
        flip: Random flips in training.
        elastic: Random elastic deformation in training (2D; ``brain`` 3D too).
        intensity: Random intensity changes in training.
        resolution: ``brain``: template resolution, 1 or 2 (mm).
        slab_thickness: ``brain``: axial slab thickness in slices (``None``: 6 for 2D, 12 for 3D).
        slab_gap: ``brain``: slices dropped each side of held-out slabs.
        num_train: ``digit_canvas``: labeled training canvases (validation and test: 256 each,
            the same for every seed).
    """

    batch_size: int = 8
    source: Literal["brain", "digit_canvas", "folders", "datalist"] = "brain"
    spatial_dims: int = 2
    mode: Literal["multiclass", "binary", "multilabel"] = "multiclass"
    num_classes: int = 4
    in_channels: int = 1
    ignore_index: int | None = None
    class_names: list[str] | None = None
    train_images: str | None = None
    train_masks: str | None = None
    val_images: str | None = None
    val_masks: str | None = None
    test_images: str | None = None
    test_masks: str | None = None
    datalist: str | None = None
    base_dir: str | None = None
    train_key: str = "training"
    val_key: str = "validation"
    test_key: str = "test"
    pixdim: list[float] | None = None
    orientation: str | None = "RAS"
    intensity_range: list[float] | None = None
    patch_size: list[int] = dataclasses.field(default_factory=lambda: [48, 48, 8])
    num_samples: int = 2
    crop_size: list[int] | None = None
    pad_divisor: int = 32
    flip: bool = True
    elastic: bool = True
    intensity: bool = True
    resolution: int = 2
    slab_thickness: int | None = None
    slab_gap: int = 1
    num_train: int = 64


@dataclasses.dataclass
class SegmentationOptions:
    """The ``options`` section of the segmentation recipe.

    Attributes:
        dice_weight: Weight of the soft Dice term of the loss.
        ce_weight: Weight of the cross-entropy term.
        include_background: Whether class 0 counts in the Dice loss and the mean Dice (multiclass).
        roi_size: 3D sliding-window size (``None``: ``data.patch_size``).
        sw_batch_size: Windows per forward pass in sliding-window inference.
        sw_overlap: Overlap of neighbouring windows (0 to <1).
        ece_bins: Confidence bins of the expected calibration error.
        calibrate: Fit a temperature on the validation pixels after ``fit`` (multiclass: softmax;
            binary and multilabel: one sigmoid per label) and report pixel NLL and ECE raw and
            scaled in ``test`` (Dice and HD95 do not change under a temperature).
        overlays: ``predict`` also writes, beside each mask, ``<name>_overlay.png`` (the input with
            the predicted classes in colour; 3D: the middle axial slice) and the class
            probabilities (calibrated unless ``--raw``): ``<name>_probs.npy`` ``(C, H, W)`` float16
            in 2D, ``<name>_probs.nii.gz`` (float32, classes last, the input's affine) in 3D. CLI:
            ``predict --overlays``.
    """

    dice_weight: float = 1.0
    ce_weight: float = 1.0
    include_background: bool = False
    roi_size: list[int] | None = None
    sw_batch_size: int = 4
    sw_overlap: float = 0.25
    ece_bins: int = 15
    calibrate: bool = True
    overlays: bool = False


class SegmentationRecipe(Recipe):
    """2D/3D segmentation with smp or MONAI networks (see the module docstring)."""

    name = "segmentation"
    data_schema = SegmentationData
    options_schema = SegmentationOptions
    path_keys = ("data.train_images", "data.train_masks", "data.val_images", "data.val_masks", "data.test_images",
                 "data.test_masks", "data.datalist", "data.base_dir")
    range_rules = {
        "data.spatial_dims": one_of(2, 3),
        "data.num_classes": at_least(1),
        "data.in_channels": at_least(1),
        "data.ignore_index": ANY_INT,
        "data.pixdim": above(0, " (voxel spacing in mm)"),
        "data.intensity_range": ANY_NUMBER,
        "data.patch_size": at_least(1),
        "data.num_samples": at_least(1),
        "data.crop_size": at_least(1),
        "data.pad_divisor": at_least(1, " (the network's total stride, e.g. 32; 1 pads nothing)"),
        "data.resolution": one_of(1, 2),
        "data.slab_thickness": at_least(1, " (or null for the default)"),
        "data.slab_gap": at_least(0),
        "data.num_train": at_least(1, " (labeled training canvases; default 64)"),
        "options.dice_weight": at_least(0),
        "options.ce_weight": at_least(0),
        "options.roi_size": at_least(1),
        "options.sw_batch_size": at_least(1),
        "options.sw_overlap": half_open(0, 1, " (e.g. 0.25; 1 would never advance the window)"),
        "options.ece_bins": at_least(1, " (e.g. 15)"),
    }

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Ordered intensity bounds, list lengths fixed by ``spatial_dims``/``num_classes``, a loss to train on."""
        d, o = config.data, config.options
        bounds = d.intensity_range
        if bounds is not None and (len(bounds) != 2 or not bounds[0] < bounds[1]):
            raise ConfigError(f"config key 'data.intensity_range': must be [a_min, a_max] with a_min < a_max "
                              f"(received {bounds!r}), e.g. [-1000, 1000] for CT; null z-scores each volume")
        wanted = [("data.crop_size", d.crop_size, 2, "[height, width]")]
        if d.spatial_dims == 3:
            wanted += [("data.patch_size", d.patch_size, 3, "one size per axis, e.g. [48, 48, 8]"),
                       ("data.pixdim", d.pixdim, 3, "one spacing per axis in mm, e.g. [1.0, 1.0, 1.0]"),
                       ("options.roi_size", o.roi_size, 3, "one size per axis, or null for data.patch_size")]
        wanted.append(("data.class_names", d.class_names, d.num_classes,
                       f"one name per class (data.num_classes={d.num_classes})"))
        check_lengths(wanted)
        if o.dice_weight == 0 and o.ce_weight == 0:
            raise ConfigError("config keys 'options.dice_weight' and 'options.ce_weight' are both 0 (received 0 "
                              "and 0), which leaves no loss to train on; set at least one > 0")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._classes: list[str] | None = None  # from a checkpoint (from_inference_metadata)
        d = self.data
        if d.source == "brain" and (d.mode, d.num_classes, d.in_channels) != ("multiclass", 4, 1):
            raise ValueError(
                "data.source=brain has 4 tissue classes (background, CSF, grey matter, white matter) in one "
                f"channel: set data.mode=multiclass, data.num_classes=4, data.in_channels=1 (received {d.mode}, "
                f"{d.num_classes}, {d.in_channels})"
            )
        canvas = ("multiclass", NUM_CANVAS_CLASSES, 1, 2)
        if d.source == "digit_canvas" and (d.mode, d.num_classes, d.in_channels, d.spatial_dims) != canvas:
            raise ValueError(
                "data.source=digit_canvas has 11 classes (background and the digits 0-9) in one 2D channel: set "
                "data.mode=multiclass, data.num_classes=11, data.in_channels=1, data.spatial_dims=2 (received "
                f"{d.mode}, {d.num_classes}, {d.in_channels}, {d.spatial_dims})"
            )
        if isinstance(d.num_train, bool) or d.num_train < 1:
            raise ValueError(f"data.num_train must be an integer >= 1 (labeled training canvases); received "
                             f"{d.num_train!r}; the default is 64")
        if d.source == "folders" and d.spatial_dims != 2 or d.source == "datalist" and d.spatial_dims != 3:
            raise ValueError(f"data.source={d.source} needs data.spatial_dims={2 if d.source == 'folders' else 3}")

    # ------------------------------------------------------------------ builders
    def build_datamodule(self, *, predict_input: str | None = None) -> DataModule:
        d = self.data
        self._datasets = SegmentationDatasets(d, seed=self.config.seed, predict_input=predict_input)
        collate = None
        if d.spatial_dims == 3:
            from monai.data import list_data_collate  # MONAI loads only for 3D runs

            collate = list_data_collate
        return DataModule({split: functools.partial(self._datasets, split) for split in ("train", "val", "test",
                                                                                         "predict")},
                          batch_size=d.batch_size,
                          eval_batch_size=d.eval_batch_size or (1 if d.spatial_dims == 3 else d.batch_size),
                          num_workers=d.num_workers, seed=self.config.seed, collate_fn=collate, recipe=self.name)

    def build_model(self) -> nn.Module:
        extra: dict[str, Any] = {}
        if self.config.model.family == "monai":
            extra["spatial_dims"] = self.data.spatial_dims
        net = self.create_model(num_classes=self.data.num_classes, in_channels=self.data.in_channels, **extra)
        if self.data.spatial_dims == 2:
            if not any(hasattr(net, a) for a in ("backbone_names", "encoder", "backbone")):
                net.backbone_names = backbone_names(net)  # MONAI nets: the encoder levels
            return net
        roi = self.options.roi_size or self.data.patch_size
        return SlidingWindowNet(net, roi_size=list(roi), sw_batch_size=self.options.sw_batch_size,
                                overlap=self.options.sw_overlap)

    def build_adapter(self) -> Any:
        return Segmentation(self.data.num_classes, mode=self.data.mode, dice_weight=self.options.dice_weight,
                            ce_weight=self.options.ce_weight, ignore_index=self.data.ignore_index,
                            include_background=self.options.include_background)

    def class_names(self) -> list[str]:
        """Per-class names used in metric keys: ``data.class_names``, the embedded sets' names, a Decathlon
        ``dataset.json``'s ``labels``, or ``class0``, ``class1`` ..."""
        if self._classes:  # from a checkpoint (from_inference_metadata)
            return list(self._classes)
        if self.data.class_names:
            return list(self.data.class_names)
        if self.data.source == "brain":
            return list(TISSUE_CLASSES)
        if self.data.source == "digit_canvas":
            return list(CANVAS_CLASSES)
        if self.data.source == "datalist" and self.data.datalist is not None:
            named = datalist_class_names(self.data)
            if named is not None:
                return named
        return [f"class{i}" for i in range(self.data.num_classes)]

    def describe_data(self, datamodule: Any) -> Any:
        """Splits with sources, sizes and item names; the classes; what the model sees."""
        datasets = getattr(self, "_datasets", None) or SegmentationDatasets(self.data, seed=self.config.seed)
        return describe_segmentation_data(datasets, datamodule, class_names=self.class_names())

    def pixel_spacing(self) -> list[float] | None:
        """The pixel (voxel) size in mm known from the config: ``brain`` (its resolution) or ``data.pixdim``.

        3D batches carry their own spacing (the affine of each volume after resampling), which
        :meth:`update_metrics` passes on; ``None`` here means 2D images in pixels.
        """
        d = self.data
        if d.source == "brain":
            return [float(d.resolution)] * d.spatial_dims
        if d.source == "datalist" and d.pixdim:
            return [float(v) for v in d.pixdim]
        return None

    def inference_metadata(self) -> dict[str, Any]:
        """Class names, mode, the preprocessing of the source, and (3D) the sliding window around the network."""
        d, o = self.data, self.options
        meta = {**super().inference_metadata(), "classes": self.class_names(), "mode": d.mode,
                "spatial_dims": d.spatial_dims}
        if d.spatial_dims == 2:
            mean, std = (CANVAS_MEAN, CANVAS_STD) if d.source == "digit_canvas" else (0.0, 1.0)
            meta["preprocessing"] = {
                "source": d.source, "in_channels": d.in_channels, "mean": [float(mean)] * d.in_channels,
                "std": [float(std)] * d.in_channels, "pad_divisor": d.pad_divisor,
                "scale": "integer images divided by their type's maximum (uint8: 255); float images as they are",
                "pad": "zeros at the bottom and right up to a multiple of pad_divisor; masks cropped back"}
            return meta
        meta["preprocessing"] = {
            "source": d.source, "in_channels": d.in_channels, "orientation": d.orientation if d.source == "datalist"
            else None, "pixdim": d.pixdim if d.source == "datalist" else None,
            "intensity_range": d.intensity_range if d.source == "datalist" else None,
            "intensity": ("none (the embedded template is in [0, 1])" if d.source != "datalist" else
                          "scale intensity_range to [0, 1], clipped" if d.intensity_range is not None else
                          "z-score over non-zero voxels, per channel")}
        meta["sliding_window"] = {"roi_size": list(o.roi_size or d.patch_size), "sw_batch_size": o.sw_batch_size,
                                  "overlap": o.sw_overlap, "mode": "gaussian"}
        meta["network"] = "net"  # SlidingWindowNet.net is the plain network
        return meta

    def from_inference_metadata(self, metadata: dict[str, Any]) -> None:
        """Use the checkpoint's class names (e.g. read from a data set description that is gone)."""
        if metadata.get("classes"):
            self._classes = list(metadata["classes"])

    def build_metrics(self, stage: str) -> SegmentationMetrics:
        """Dice (and, on the test split, HD95, in mm where the spacing is known) per class, pixel NLL and ECE."""
        return SegmentationMetrics(num_classes=self.data.num_classes, mode=self.data.mode,
                                   ignore_index=self.data.ignore_index, class_names=self.class_names(),
                                   include_background=self.options.include_background, n_bins=self.options.ece_bins,
                                   hd95=stage == "test", spacing=self.pixel_spacing())

    def build_scaled_metrics(self, stage: str) -> SegmentationMetrics:
        """Pixel NLL and ECE only (what a temperature changes)."""
        return SegmentationMetrics(num_classes=self.data.num_classes, mode=self.data.mode,
                                   ignore_index=self.data.ignore_index, class_names=self.class_names(),
                                   n_bins=self.options.ece_bins, calibration_only=True)

    def calibration_scaler(self) -> _PixelScaler:
        """Pixel-wise over the counted pixels: softmax (multiclass) or a sigmoid per label."""
        return _PixelScaler(ignore_index=self.data.ignore_index, multilabel=self.data.mode != "multiclass",
                            seed=self.config.seed)

    # ------------------------------------------------------------------ steps
    def split_batch(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        # the spacing of each volume (its affine after resampling), for HD95 in mm in update_metrics
        self._spacing = _spacing(batch["image"]) if isinstance(batch, dict) else None
        if isinstance(batch, dict):  # MONAI dict batches (3D)
            image, label = plain(batch["image"]), plain(batch["label"])  # MetaTensors: no metadata needed
            if self.data.mode == "multiclass":
                return image, label[:, 0].round().long()
            return image, label.float()
        return batch[0], batch[1]

    def update_metrics(self, metrics: Any, output: Any, target: Any) -> None:
        """HD95 gets the batch's own voxel spacing (3D volumes); everything else as the base recipe."""
        spacing = getattr(self, "_spacing", None)
        if isinstance(metrics, SegmentationMetrics) and metrics.hd95 and spacing is not None:
            metrics.update(output, target, spacing=spacing)
        else:
            metrics.update(output, target)

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities of ``logits / T`` (``T``: the engine's temperature, ``None`` for raw)."""
        z = logits.float() / self.temperature if self.temperature is not None else logits.float()
        return z.softmax(1) if self.data.mode == "multiclass" else z.sigmoid()

    def _labels(self, logits: torch.Tensor) -> torch.Tensor:
        return mask_labels(logits, self.data.mode, self.data.num_classes)

    def predict_step(self, model: nn.Module, batch: Any) -> list[dict[str, Any]]:
        extras = self.options.overlays
        if self.data.spatial_dims == 2:
            x, names, sizes = batch
            logits = model(x)
            labels = self._labels(logits).cpu().numpy()
            rows = [{"name": n, "mask": m[..., : int(s[0]), : int(s[1])]} for n, m, s in zip(names, labels, sizes)]
            if extras:  # the input and the probabilities, cropped as the mask is
                probs = self._probabilities(logits).cpu().numpy().astype(np.float16)
                for row, image, p, s in zip(rows, x.float().cpu().numpy(), probs, sizes):
                    row["image"], row["probs"] = image[..., : int(s[0]), : int(s[1])], p[..., : int(s[0]), : int(s[1])]
            return rows
        from monai.data import decollate_batch

        batch = dict(batch)
        batch["pred"] = model(plain(batch["image"]))
        rows = []
        for item in decollate_batch(batch):
            on_model_grid = plain(item["pred"])
            pred = self._invert(item)
            row = {"name": _volume_name(item["image"]), "mask": self._labels(pred[None])[0].cpu().numpy(),
                   "affine": np.asarray(pred.affine, dtype=np.float64)}
            if extras:  # probabilities on the input's grid; the overlay's slice on the model's grid
                row["probs"] = self._probabilities(plain(pred)[None])[0].cpu().numpy().astype(np.float16)
                labels = self._labels(on_model_grid[None])[0].cpu().numpy()
                row["overlay"] = (middle_slice(plain(item["image"]).float().cpu().numpy()), middle_slice(labels))
            rows.append(row)
        return rows

    def _invert(self, item: dict[str, Any]) -> Any:
        """Map a prediction back to the input's voxel grid (undo orientation/spacing)."""
        return invert_prediction(item, getattr(getattr(self, "_datasets", None), "predict_transform", None))

    def check_prediction_output(self, path: Path) -> None:
        """The masks go to the folder named like ``path`` without its suffix: refuse one holding other files
        (``--output data/x/img.csv`` would put them among the images of ``data/x/img/``)."""
        check_output_folder(Path(path).parent / Path(path).stem, table=path)

    def write_predictions(self, predictions: list[Any], path: Path) -> Path:
        """One mask file per image (atomic) in ``<path without suffix>/``, and the ``name,mask`` table at ``path``."""
        rows = [row for batch in predictions for row in (batch if isinstance(batch, list) else [batch])]
        path = Path(path)
        self.check_prediction_output(path)
        out_dir = path.parent / path.stem
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for row in rows:
            files = [_write_mask(row, out_dir, binary=self.data.mode == "binary")]
            if self.options.overlays:
                files += _write_extras(row, out_dir)
            written.append((row["name"], *(str(f.relative_to(path.parent)) for f in files)))
        header = ["name", "mask", "overlay", "probabilities"] if self.options.overlays else ["name", "mask"]
        return write_table(path, written, header=header)


class _PixelScaler(TemperatureScaler):
    """A :class:`TemperatureScaler` that takes masks as the Segmentation adapter does."""

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Multiclass ``(B, 1, *S)`` masks lose their channel; 0/1 masks take the logits' shape."""
        if not self.multilabel and targets.dim() == logits.dim():
            targets = targets[:, 0]
        elif self.multilabel:
            targets = targets.reshape(logits.shape).float()
        super().update(logits, targets)


def _spacing(image: Any) -> torch.Tensor | None:
    """``(B, D)`` voxel sizes (mm) of a batched MONAI MetaTensor (from its affine), or ``None``."""
    pixdim = getattr(image, "pixdim", None) if getattr(image, "is_batch", False) else None
    return torch.stack([torch.as_tensor(p, dtype=torch.float64) for p in pixdim]) if pixdim else None


def _write_extras(row: dict[str, Any], out_dir: Path) -> list[Path]:
    """``<name>_overlay.png`` and ``<name>_probs.npy`` (2D) / ``<name>_probs.nii.gz`` (3D), atomically."""
    name = row["name"]
    if "affine" in row:
        image, labels = row["overlay"]
        return [write_overlay(out_dir / f"{name}_overlay.png", image, labels),
                write_probabilities(out_dir / f"{name}_probs.nii.gz", row["probs"], affine=row["affine"])]
    return [write_overlay(out_dir / f"{name}_overlay.png", row["image"], row["mask"]),
            write_probabilities(out_dir / f"{name}_probs.npy", row["probs"])]


def _volume_name(image: Any) -> str:
    source = str(getattr(image, "meta", {}).get("filename_or_obj", "volume"))
    name = Path(source).name
    for suffix in (".nii.gz", ".nii", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _write_mask(row: dict[str, Any], out_dir: Path, *, binary: bool) -> Path:
    """Write one predicted mask, atomically: PNG (2D, class indices; binary as 0/255) or NIfTI (3D, input's affine)."""
    mask = np.asarray(row["mask"])
    if "affine" in row:
        import nibabel as nib

        data = np.moveaxis(mask, 0, -1) if mask.ndim == 4 else mask  # multilabel: channels last
        image = nib.Nifti1Image(data.astype(np.uint8), row["affine"])
        # the single-file .nii bytes, gzipped at nibabel's own level (mtime 0: the same bytes for the same mask)
        return atomic_write_bytes(out_dir / f"{row['name']}_seg.nii.gz",
                                  gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))
    if mask.ndim == 3:  # multilabel: one PNG per label
        for c in range(mask.shape[0]):
            _write_png(out_dir / f"{row['name']}_label{c}.png", (mask[c] * 255).astype(np.uint8))
        return out_dir / f"{row['name']}_label0.png"
    dtype = np.uint8 if mask.max(initial=0) < 256 else np.uint16
    return _write_png(out_dir / f"{row['name']}.png", (mask * 255 if binary else mask).astype(dtype))


def _write_png(path: Path, array: np.ndarray) -> Path:
    """Encode ``array`` (uint8 or uint16) as PNG and write it atomically."""
    import cv2

    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"cannot encode a {array.dtype} array of shape {array.shape} as PNG for {str(path)!r}")
    return atomic_write_bytes(path, encoded.tobytes())
