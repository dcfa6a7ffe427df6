"""``load_run``: a trained run (or its exported folder) as a plain model with its preprocessing and ``predict``.

No Lightning is imported, at load or at prediction: the network is built by
:func:`mmix_applied.models.create_model` and filled from the checkpoint's ``state_dict`` (or the
export's ``model.safetensors``); the class names, charset, preprocessing and temperature come
from the run's record (:mod:`mmix_applied.deploy.info`), never from the training data, so a run
folder copied to another machine predicts. The model is the plain network: no mixer attached,
in ``eval()`` mode.

Example::

    from mmix_applied import load_run

    run = load_run("runs/my-run")            # its best checkpoint (RUN:last for the last epoch's)
    probs = run.predict(["cat.png", "dog.png"])  # classification: (N, C), calibrated with run.temperature
    run.model                                    # the timm / smp / MONAI / CRNN network itself
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mmix_applied.adapters.base import plain
from mmix_applied.data.charset import Charset
from mmix_applied.data.masks import mask_labels
from mmix_applied.data.segmentation_3d import VolumeDataset, build_3d_transforms, invert_prediction
from mmix_applied.deploy.info import EXPORT_KEY, RunInfo, build_network, network_state
from mmix_applied.deploy.preprocess import (
    ImageInput,
    as_list,
    classification_batch,
    line_batch,
    segmentation_image,
)
from mmix_applied.deploy.runs import RunCheckpoint, resolve_run_checkpoint
from mmix_applied.utils.safe_load import CheckpointError, load_checkpoint

__all__ = ["WEIGHTS_FILE", "LoadedRun", "SegmentationPrediction", "is_export_folder", "load_run"]

#: The weights file of an exported folder.
WEIGHTS_FILE = "model.safetensors"


@dataclasses.dataclass
class SegmentationPrediction:
    """Masks and probabilities, one per input image or volume (cropped to its own size).

    Attributes:
        masks: Class indices ``(*S)`` (multiclass), 0/1 ``(*S)`` (binary) or ``(C, *S)`` (multilabel), uint8.
        probs: ``(C, *S)`` probabilities: softmax (multiclass) or sigmoid (binary, multilabel) of ``logits / T``.
        affines: 3D volumes read from files: each volume's affine (the masks are on its own grid).
    """

    masks: list[torch.Tensor]
    probs: list[torch.Tensor]
    affines: list[np.ndarray] | None = None


class LoadedRun:
    """A run's plain network with what inference needs (built by :func:`load_run`).

    Attributes:
        model: The network (timm, smp, MONAI or CRNN), ``eval()`` mode, no mixer attached. 3D
            segmentation: the network on one window; :meth:`predict` runs MONAI's sliding-window
            inference around it.
        info: The run's record (:class:`~mmix_applied.deploy.info.RunInfo`).
        source: Where the weights came from: the checkpoint (and why it was chosen) or the folder.
    """

    def __init__(self, model: nn.Module, info: RunInfo, *, source: RunCheckpoint | Path) -> None:
        self.model = model.eval()
        self.info = info
        self.source = source
        self.charset = Charset(info.charset) if info.charset else None

    def __repr__(self) -> str:
        return (f"LoadedRun(task={self.task!r}, model={self.info.family}/{self.info.name}, "
                f"temperature={self.temperature}, source={str(getattr(self.source, 'path', self.source))!r})")

    @property
    def task(self) -> str:
        """``classification``, ``segmentation`` or ``handwriting``."""
        return self.info.task

    @property
    def classes(self) -> list[str] | None:
        """Class names in index order (classification, segmentation)."""
        return self.info.classes

    @property
    def temperature(self) -> float | None:
        """The temperature fitted on the validation split (``None``: none was fitted)."""
        return self.info.temperature

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing record (image size, channels, mean/std, resize and pad rules)."""
        return self.info.preprocessing

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config the run was trained with."""
        return self.info.config

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> LoadedRun:
        """Move the model to ``device``; returns ``self``."""
        self.model.to(device)
        return self

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor, *, raw: bool = False,
                batch_size: int = 32) -> Any:
        """Predict on image files, arrays as read from image files, or a preprocessed batch tensor.

        Args:
            images: Paths, ``uint8`` arrays (``(H, W)``/``(H, W, C)``; 3D: NIfTI paths), or a
                ``torch.Tensor`` batch already preprocessed (what the network takes).
            raw: Probabilities of the raw logits instead of ``logits / temperature``.
            batch_size: Images per forward pass (handwriting pads each batch to its widest line,
                as ``mmix-applied predict`` does with ``data.eval_batch_size``).

        Returns:
            classification: ``(N, C)`` probabilities (calibrated unless ``raw``);
            segmentation: a :class:`SegmentationPrediction` (masks and probabilities per image);
            handwriting: the transcriptions, one string per line.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1; received {batch_size!r}")
        t = 1.0 if raw or self.temperature is None else float(self.temperature)
        if self.task == "classification":
            return self._classify(images, t, batch_size)
        if self.task == "handwriting":
            return self._read_lines(images, batch_size)
        if self.info.spatial_dims == 3:
            return self._segment_volumes(images, t)
        return self._segment_images(images, t, batch_size)

    def probabilities(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Softmax (over dim 1) or sigmoid of ``logits / temperature``, as this run's task reads its logits."""
        scaled = logits.float() / temperature
        return torch.sigmoid(scaled) if self.info.activation == "sigmoid" else torch.softmax(scaled, dim=1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device))

    def _classify(self, images: Any, t: float, batch_size: int) -> torch.Tensor:
        x = images if isinstance(images, torch.Tensor) else classification_batch(as_list(images), self.preprocessing)
        logits = torch.cat([self._forward(x[i:i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])
        return self.probabilities(logits, t)

    def _read_lines(self, images: Any, batch_size: int) -> list[str]:
        if isinstance(images, torch.Tensor):
            widths = torch.full((len(images),), images.shape[-1], dtype=torch.long)
            batches = [(images, widths)]
        else:
            items = as_list(images)
            batches = [line_batch(items[i:i + batch_size], self.preprocessing)
                       for i in range(0, len(items), batch_size)]
        texts: list[str] = []
        for x, widths in batches:
            log_probs = self._forward(x).float().cpu()
            texts += self.charset.decode_ctc(log_probs, self.model.output_lengths(widths))
        return texts

    def _labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Masks from ``(B, C, *S)`` logits, as the segmentation recipe's ``predict`` writes them."""
        return mask_labels(logits, self.info.mode or "multiclass", self.info.num_classes)

    def _segment_images(self, images: Any, t: float, batch_size: int) -> SegmentationPrediction:
        if isinstance(images, torch.Tensor):
            pairs = [(images[i:i + batch_size], None) for i in range(0, len(images), batch_size)]
        else:
            pairs = [(x[None], size) for x, size in (segmentation_image(i, self.preprocessing)
                                                     for i in as_list(images))]
        masks, probs = [], []
        for x, size in pairs:
            logits = self._forward(x).float().cpu()
            h, w = size if size is not None else logits.shape[-2:]
            masks += list(self._labels(logits)[..., :h, :w])
            probs += list(self.probabilities(logits, t)[..., :h, :w])
        return SegmentationPrediction(masks=masks, probs=probs)

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        from monai.inferers import sliding_window_inference  # MONAI loads only when a volume is inferred

        sw = self.info.sliding_window or {}
        roi = sw.get("roi_size") or list(x.shape[2:])
        return sliding_window_inference(x.to(self.device), roi, int(sw.get("sw_batch_size", 4)), self.model,
                                        overlap=float(sw.get("overlap", 0.25)), mode=str(sw.get("mode", "gaussian")))

    def _segment_volumes(self, images: Any, t: float) -> SegmentationPrediction:
        if isinstance(images, torch.Tensor):
            logits = [self._window(v[None]).float().cpu() for v in images]
            return SegmentationPrediction(masks=[self._labels(x)[0] for x in logits],
                                          probs=[self.probabilities(x, t)[0] for x in logits])
        from monai.data import decollate_batch, list_data_collate  # MONAI loads only for volumes

        masks, probs, affines = [], [], []
        dataset, transform = self._volume_dataset(as_list(images))
        for index in range(len(dataset)):
            batch = list_data_collate([dataset[index]])
            image = batch["image"]
            batch["pred"] = self._window(plain(image)).cpu()
            for item in decollate_batch(batch):
                pred = invert_prediction(item, transform)
                logits = plain(pred)[None].float()
                masks.append(self._labels(logits)[0])
                probs.append(self.probabilities(logits, t)[0])
                affines.append(np.asarray(pred.affine, dtype=np.float64))
        return SegmentationPrediction(masks=masks, probs=probs, affines=affines)

    def _volume_dataset(self, files: list[Any]) -> tuple[Any, Any]:
        """The run's 3D predict pipeline over NIfTI files (``datalist`` runs), or loading alone (``brain``)."""
        from monai import transforms as T

        pre = self.preprocessing
        paths = [{"image": os.fspath(f)} for f in files if not isinstance(f, np.ndarray)]
        if len(paths) != len(files):
            raise TypeError("3D segmentation predicts NIfTI files (paths) or a preprocessed (B, C, X, Y, Z) tensor; "
                            "received an array")
        if pre.get("source") == "datalist":
            transform = build_3d_transforms(train=False, with_label=False, mode=self.info.mode or "multiclass",
                                            num_classes=self.info.num_classes, orientation=pre.get("orientation"),
                                            pixdim=pre.get("pixdim"), intensity_range=pre.get("intensity_range"))
        else:
            transform = T.Compose([T.LoadImaged(keys="image", ensure_channel_first=True, image_only=True)])
        return VolumeDataset(paths, transform, seed=None), transform


# ---------------------------------------------------------------------- loading
def _read_export(folder: Path) -> tuple[RunInfo, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    record = json.loads((folder / "config.json").read_text(encoding="utf-8")).get(EXPORT_KEY)
    info = RunInfo.from_record(record, source=f"exported folder {str(folder)!r}")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"exported folder {str(folder)!r} has no {WEIGHTS_FILE}; export it again "
                                "(mmix-applied export --checkpoint RUN --output DIR --overwrite)")
    return info, dict(load_file(str(weights), device="cpu"))


def is_export_folder(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``mmix-applied export`` (its config.json holds the record)."""
    config = path / "config.json"
    if not (path.is_dir() and config.is_file()):
        return False
    try:
        record = json.loads(config.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return isinstance(record, dict) and EXPORT_KEY in record


def load_run(run: str | os.PathLike, *, device: str | torch.device = "cpu",
             which: Literal["best", "last"] = "best") -> LoadedRun:
    """Load a trained run, one of its checkpoints, or a folder written by ``mmix-applied export``.

    Args:
        run: A run directory (its best checkpoint when one is recorded, else ``last.ckpt``),
            ``RUN:best``, ``RUN:last``, a ``.ckpt`` file, or an exported folder.
        device: Where the model goes.
        which: What a bare run directory means (``best`` or ``last``).

    Returns:
        A :class:`LoadedRun`; ``.source`` says which checkpoint was read and why.

    Raises:
        FileNotFoundError: Nothing at ``run``, or a run without checkpoints.
        CheckpointError: A damaged checkpoint, one not written by ``mmix-applied fit``, or one
            whose weights do not fit the recorded network.
    """
    path = Path(os.fspath(run))
    if is_export_folder(path):
        info, state = _read_export(path)
        source: RunCheckpoint | Path = path
        where = f"exported folder {str(path)!r}"
    else:
        found = resolve_run_checkpoint(run, default=which)
        checkpoint = load_checkpoint(found.path)
        where = f"checkpoint {str(found.path)!r}"
        info = RunInfo.from_checkpoint(checkpoint, source=where)
        state = network_state(checkpoint.get("state_dict") or {}, info, source=where)
        source = found
    model = build_network(info)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{where}: its weights do not fit {info.family}/{info.name} built from its record "
                              f"({str(err).splitlines()[0]} ...)") from err
    return LoadedRun(model.to(device), info, source=source)
