"""Text-line images with transcriptions, for CTC line recognition (Graves et al., ICML 2006).

Two list formats are read:

* the IAM Handwriting Database ``lines.txt`` (Marti & Bunke, IJDAR 2002): ``#`` comment lines,
  then ``<id> <ok|err> <graylevel> <components> <x> <y> <w> <h> <transcription>`` where ``|``
  separates words; images live at ``<root>/<a01>/<a01-000u>/<a01-000u-00>.png`` (or flat at
  ``<root>/<a01-000u-00>.png``);
* a plain TSV of ``path<TAB>text`` (relative paths resolve against the TSV's folder).

Images are read with OpenCV as grayscale and normalised to *ink = 1, paper = 0* (dark ink on light
paper is inverted), so zero padding is blank paper. Each line is resized to a fixed height keeping
its aspect ratio; :class:`LineCollate` pads a batch to its widest line and returns every line's
true width, from which the model computes each line's true CTC output length.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from mmix_applied.text import Charset, UnknownCharacterError

__all__ = [
    "LineRecord",
    "read_iam_lines",
    "read_tsv",
    "check_charset",
    "load_line_image",
    "normalise_height",
    "LineAugment",
    "prepare_line",
    "TextLineDataset",
    "LineCollate",
]

IAM_STATUSES = ("ok", "err")


@dataclass(frozen=True)
class LineRecord:
    """One line image and its transcription.

    Attributes:
        image_path: Where the image is.
        text: The transcription (IAM's ``|`` already turned into spaces).
        source: ``file:line`` of the list entry, quoted in every error about this record.
    """

    image_path: Path
    text: str
    source: str



def _open_utf8(path: Path) -> io.StringIO:
    """The text of a list file as a line iterator; a file that is not UTF-8 is a ValueError naming the line."""
    data = path.read_bytes()
    try:
        return io.StringIO(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start}); save the list as UTF-8, "
                         f"e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}") from None

def _iam_image_path(root: Path, line_id: str) -> Path:
    parts = line_id.split("-")
    if len(parts) < 3:
        return root / f"{line_id}.png"
    nested = root / parts[0] / "-".join(parts[:2]) / f"{line_id}.png"
    flat = root / f"{line_id}.png"
    return flat if (not nested.exists() and flat.exists()) else nested


def read_iam_lines(
    lines_file: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    include_err: bool = True,
    ids: Iterable[str] | None = None,
) -> list[LineRecord]:
    """Read an IAM ``lines.txt``.

    Args:
        lines_file: The list file.
        image_root: Folder holding the line images (IAM's ``lines/``); defaults to a ``lines``
            folder beside the list file.
        include_err: Keep lines whose *word segmentation* status is ``err``. Their line
            transcription is still correct, so line recognisers usually keep them.
        ids: Keep only these line ids (``a01-000u-00``) or form ids (``a01-000u``), e.g. from
            the IAM task split lists; None keeps every line.

    Returns:
        The records, in file order.

    Raises:
        FileNotFoundError: The list file does not exist.
        ValueError: A line is malformed (quoted with ``file:line``).
    """
    path = Path(lines_file)
    if not path.is_file():
        raise FileNotFoundError(f"IAM lines file not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent / "lines"
    wanted = None if ids is None else {i.strip() for i in ids if i.strip()}
    records = []
    with _open_utf8(path) as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split(" ")
            where = f"{path}:{number}"
            if len(fields) < 9:
                raise ValueError(
                    f"{where}: expected 9 space-separated fields (id, status, graylevel, components, "
                    f"x, y, w, h, transcription), got {len(fields)}: {line!r}"
                )
            status = fields[1]
            if status not in IAM_STATUSES:
                raise ValueError(f"{where}: status must be one of {IAM_STATUSES}, got {status!r}")
            try:
                [int(v) for v in fields[2:8]]
            except ValueError:
                raise ValueError(
                    f"{where}: graylevel, components and the x y w h box must be integers, got {fields[2:8]}"
                ) from None
            if status == "err" and not include_err:
                continue
            if wanted is not None and fields[0] not in wanted and fields[0].rsplit("-", 1)[0] not in wanted:
                continue
            text = " ".join(fields[8:]).replace("|", " ").replace("&quot;", '"')
            records.append(LineRecord(_iam_image_path(root, fields[0]), text, where))
    return records


def read_tsv(
    tsv_file: str | os.PathLike, *, image_root: str | os.PathLike | None = None, require_text: bool = True
) -> list[LineRecord]:
    """Read ``path<TAB>text`` lines; blank lines and lines starting with ``#`` are skipped.

    Args:
        tsv_file: The list file.
        image_root: Base for relative image paths; defaults to the TSV's folder.
        require_text: A line without a tab is an error; False reads it as a bare path with empty
            text (lists of images to transcribe).

    Raises:
        FileNotFoundError: The list file does not exist.
        ValueError: A line has no tab (quoted with ``file:line``).
    """
    path = Path(tsv_file)
    if not path.is_file():
        raise FileNotFoundError(f"TSV file not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    records = []
    with _open_utf8(path) as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            if "\t" not in line and not require_text:
                records.append(LineRecord(root / line, "", f"{path}:{number}"))
                continue
            if "\t" not in line:
                raise ValueError(f"{path}:{number}: expected 'path<TAB>text', found no tab in {line!r}")
            image, text = line.split("\t", 1)
            records.append(LineRecord(root / image, text, f"{path}:{number}"))
    return records


def check_charset(
    records: Sequence[LineRecord], charset: Charset | str, *, on_unknown: str = "error"
) -> list[LineRecord]:
    """Check transcriptions against a charset; every unknown character is reported with its ``file:line``.

    Args:
        records: The records to check.
        charset: A :class:`~mmix_applied.text.Charset` or its characters.
        on_unknown: ``"error"`` raises, ``"drop"`` removes the offending records.

    Returns:
        The records that use only known characters.

    Raises:
        UnknownCharacterError: (a ValueError) unknown characters were found and ``on_unknown="error"``.
    """
    if on_unknown not in ("error", "drop"):
        raise ValueError(f"on_unknown must be 'error' or 'drop', got {on_unknown!r}")
    charset = charset if isinstance(charset, Charset) else Charset(charset)
    records = list(records)
    unknown = charset.find_unknown([r.text for r in records], sources=[r.source for r in records])
    if not unknown:
        return records
    if on_unknown == "error":
        raise UnknownCharacterError(unknown, charset)
    bad = {source for where in unknown.values() for source, _ in where}
    return [r for r in records if r.source not in bad]


def load_line_image(path: str | os.PathLike, *, invert: bool = True, source: str | None = None) -> np.ndarray:
    """Read a line image as grayscale uint8 with ink high (255) and paper low (0).

    Args:
        path: The image file.
        invert: The file has dark ink on light paper (the usual case), so invert it.
        source: ``file:line`` of the list entry, added to error messages.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: OpenCV cannot decode it.
    """
    where = f" (listed at {source})" if source else ""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"line image not found: {path}{where}")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None or image.size == 0:
        raise ValueError(f"cannot read line image {path}{where}: not an image format OpenCV decodes")
    return 255 - image if invert else image


def normalise_height(image: np.ndarray, *, height: int, max_width: int | None = None) -> np.ndarray:
    """Resize to ``height`` rows keeping the aspect ratio (width at least 1, at most ``max_width``)."""
    h, w = image.shape[:2]
    width = max(1, int(round(w * height / h)))
    if max_width is not None:
        width = min(width, max_width)
    if (h, w) == (height, width):
        return image
    shrink = height < h
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class LineAugment:
    """Handwriting-style augmentation (small affine and elastic warps, blur, contrast) with its own seed.

    albumentations' ``Compose`` draws from its own generator, re-seeded here from
    ``(seed, epoch, DataLoader worker id)`` whenever the epoch (:meth:`set_epoch`, called by the
    engine through the data set) or the worker changes: the draws never depend on global RNG, workers
    don't repeat each other, and a resumed run sees the augmentation an uninterrupted one would.

    Args:
        seed: Seed of the augmentation stream.
        strength: Scales every magnitude.
        p: Probability of each transform.
    """

    def __init__(self, *, seed: int = 0, strength: float = 1.0, p: float = 0.5) -> None:
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        s = float(strength)
        self.seed, self.epoch = int(seed), 0
        self.transform = A.Compose(
            [
                A.Affine(
                    scale=(1 - 0.08 * s, 1 + 0.05 * s), rotate=(-2 * s, 2 * s), shear={"x": (-10 * s, 10 * s)},
                    translate_px={"y": (-int(2 * s), int(2 * s))}, border_mode=cv2.BORDER_CONSTANT, fill=0, p=p,
                ),
                A.ElasticTransform(alpha=4.0 * s, sigma=3.0, border_mode=cv2.BORDER_CONSTANT, fill=0, p=p * 0.5),
                A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.1, 0.2 + 0.6 * s), p=p * 0.5),
                A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=(-0.3 * s, 0.1 * s), p=p),
            ],
            seed=self.seed,
        )
        self._key: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation stream the next call draws from."""
        self.epoch = int(epoch)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Augment a uint8 ``(H, W)`` ink-high image; the shape is kept."""
        info = get_worker_info()
        key = (self.epoch, -1 if info is None else int(info.id))
        if key != self._key:
            self._key = key
            state = np.random.SeedSequence([self.seed, key[0], key[1] + 1]).generate_state(1)[0]
            self.transform.set_random_seed(int(state))
        return self.transform(image=image)["image"]


def prepare_line(
    image: np.ndarray,
    *,
    height: int,
    augment: Callable[[np.ndarray], np.ndarray] | None = None,
    min_width: int = 1,
    max_width: int | None = None,
) -> torch.Tensor:
    """Height-normalise, augment and convert an ink-high uint8 image to a ``(1, height, W)`` float tensor in [0, 1].

    Lines narrower than ``min_width`` are padded on the right with paper (0).
    """
    line = normalise_height(image, height=height, max_width=max_width)
    if augment is not None:
        line = augment(np.ascontiguousarray(line))
    if line.shape[1] < min_width:
        line = np.pad(line, ((0, 0), (0, min_width - line.shape[1])))
    return torch.from_numpy(np.ascontiguousarray(line, dtype=np.float32) / 255.0).unsqueeze(0)


class TextLineDataset(Dataset):
    """Line images from disk with their transcriptions.

    Items are dicts ``{"image": (1, height, W) float, "text": str, "width": W, "source": "file:line",
    "path": image path}``.

    Args:
        records: From :func:`read_iam_lines` or :func:`read_tsv`.
        height: Height every line is resized to.
        augment: Applied after resizing (e.g. :class:`LineAugment`); None for evaluation.
        invert: Images are dark ink on light paper.
        min_width: Narrow lines are padded to this width (keep it >= what the model needs for the
            longest transcription's CTC path).
        max_width: Wider lines are squeezed to this width.
    """

    def __init__(
        self,
        records: Sequence[LineRecord],
        *,
        height: int = 32,
        augment: Callable[[np.ndarray], np.ndarray] | None = None,
        invert: bool = True,
        min_width: int = 1,
        max_width: int | None = None,
    ) -> None:
        if height < 1:
            raise ValueError(f"height must be >= 1, got {height}")
        self.records = list(records)
        self.height, self.augment, self.invert = height, augment, invert
        self.min_width, self.max_width = min_width, max_width

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch to the augmentation (the engine calls this at each training epoch)."""
        if callable(getattr(self.augment, "set_epoch", None)):
            self.augment.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = load_line_image(record.image_path, invert=self.invert, source=record.source)
        tensor = prepare_line(
            image, height=self.height, augment=self.augment, min_width=self.min_width, max_width=self.max_width
        )
        return {
            "image": tensor,
            "text": record.text,
            "width": tensor.shape[-1],
            "source": record.source,
            "path": str(record.image_path),
        }


class LineCollate:
    """Pad a list of line items into a batch for CTC.

    Returns ``{"images": (B, 1, H, W_max), "widths": (B,), "targets": (B, S_max), "target_lengths": (B,),
    "texts": [...], "sources": [...], "paths": [...]}``. Images are right-padded with 0 (paper); targets with 0 (the
    CTC blank, never read past ``target_lengths``). ``widths`` are the true widths before padding.

    Args:
        encode: Maps a transcription to class indices (1..C-1; 0 is the blank).
        pad_to_multiple: Round the padded width up to a multiple of this (e.g. the model's stride).
    """

    def __init__(self, encode: Callable[[str], Sequence[int]], *, pad_to_multiple: int = 1) -> None:
        if pad_to_multiple < 1:
            raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
        self.encode, self.pad_to_multiple = encode, pad_to_multiple

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        heights = {item["image"].shape[-2] for item in items}
        if len(heights) != 1:
            raise ValueError(f"all lines in a batch must share one height, got heights {sorted(heights)}")
        widths = torch.tensor([item["image"].shape[-1] for item in items], dtype=torch.long)
        width = int(widths.max())
        width = -(-width // self.pad_to_multiple) * self.pad_to_multiple
        images = torch.zeros(len(items), items[0]["image"].shape[0], heights.pop(), width)
        for i, item in enumerate(items):
            images[i, :, :, : item["image"].shape[-1]] = item["image"]
        encoded = [list(self.encode(item["text"])) for item in items]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        targets = torch.zeros(len(items), max(1, int(lengths.max())), dtype=torch.long)
        for i, e in enumerate(encoded):
            targets[i, : len(e)] = torch.as_tensor(e, dtype=torch.long)
        return {
            "images": images,
            "widths": widths,
            "targets": targets,
            "target_lengths": lengths,
            "texts": [item["text"] for item in items],
            "sources": [item.get("source", "") for item in items],
            "paths": [item.get("path", item.get("source", "")) for item in items],
        }
