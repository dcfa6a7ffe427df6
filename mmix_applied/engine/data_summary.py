"""What ``fit`` is about to train on, printed before training starts (rank 0 only).

One compact block: each split with its size and where it came from, the classes (or the charset),
the image sizes seen (read from file headers, a sample of each split), how evaluation batches
images of different sizes, and whether ``model.pretrained`` loaded (tensors matched, missing,
unexpected, head reset: :class:`mmix_applied.models.LoadReport`). A recipe says what its data is
through :meth:`mmix_applied.engine.recipe.Recipe.describe_data`; without it the block gives the
split sizes alone. :func:`announce_data` is what ``fit`` calls: it also checks (on resume) and
writes the split record (:mod:`mmix_applied.engine.split_record`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from mmix_applied.data.image_files import describe_sizes, read_header
from mmix_applied.engine.split_record import check_split_record, split_record, write_split_record
from mmix_applied.models.weights import LoadReport

__all__ = ["SIZE_SAMPLE", "DataDescription", "SplitDescription", "announce_data", "describe_data",
           "format_data_summary", "weights_reports"]

#: Image headers read per split for "sizes seen" (evenly spread over the split; all when fewer).
SIZE_SAMPLE = 200


@dataclass
class SplitDescription:
    """One split as the summary shows it.

    Attributes:
        name: ``train``, ``val`` or ``test``.
        count: Items in the split.
        source: Where it came from (a folder, a list file and key, "20% of data.path, seeded" ...).
        files: Image files of the split (their headers give the sizes seen); ``None`` when not files.
        ids: Stable names of the items (paths relative to the data root, with the label where it
            is not in the path) for the split record (:mod:`mmix_applied.engine.split_record`);
            ``None`` for embedded data fixed by the seed.
        sizes: The ``(height, width)`` of every item when already known (then ``files`` is not read).
    """

    name: str
    count: int
    source: str = ""
    files: Sequence[str] | None = None
    ids: Sequence[str] | None = None
    sizes: Sequence[tuple[int, int]] | None = None


@dataclass
class DataDescription:
    """What a recipe's data is.

    Attributes:
        splits: The splits, in order.
        classes: Class names in index order (``None`` for a charset).
        charset: The characters recognised (handwriting).
        model_input: What the model sees (e.g. ``"resized to 224x224, 3 channels"``).
        notes: Further lines (e.g. "data.path holds train/ val/ test/: used as the splits").
    """

    splits: list[SplitDescription]
    classes: list[str] | None = None
    charset: str | None = None
    model_input: str = ""
    notes: list[str] = field(default_factory=list)


def describe_data(recipe: Any, datamodule: Any) -> DataDescription:
    """The recipe's :class:`DataDescription`, or the split sizes of ``datamodule`` when it gives none."""
    described = recipe.describe_data(datamodule)
    if described is not None:
        return described
    splits = []
    for name in ("train", "val", "test"):
        try:
            splits.append(SplitDescription(name, len(datamodule.dataset(name))))
        except (ValueError, TypeError):  # a recipe without that split (or an unsized data set)
            continue
    return DataDescription(splits)


def weights_reports(model: nn.Module) -> list[LoadReport]:
    """The load reports ``create_model(pretrained=...)`` left on ``model`` or its submodules (``weights_report``)."""
    return [m.weights_report for m in model.modules() if isinstance(getattr(m, "weights_report", None), LoadReport)]


def _sizes_seen(split: SplitDescription) -> tuple[list[tuple[int, int]], int]:
    """``(sizes, sampled)``: the known sizes, or those of up to :data:`SIZE_SAMPLE` file headers."""
    if split.sizes is not None:
        return list(split.sizes), len(split.sizes)
    files = list(split.files or [])
    if not files:
        return [], 0
    picked = files[:: max(1, len(files) // SIZE_SAMPLE)][:SIZE_SAMPLE]
    headers = [read_header(path) for path in picked]
    return [(h.height, h.width) for h in headers if h is not None], len(picked)


def _few(keys: Sequence[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _weights_lines(pretrained: str | None, reports: list[LoadReport]) -> list[str]:
    if pretrained is None:
        return ["weights: random initialisation (model.pretrained is unset)"]
    if not reports:
        return [f"weights: model.pretrained={pretrained!r} (no load report)"]
    lines = []
    for report in reports:
        parts = [f"{len(report.loaded)} tensors loaded"]
        for label, keys in (("head reset (fresh)", report.reset), ("input conv adapted", report.adapted),
                            ("missing (initial values kept)", report.missing),
                            ("unexpected (ignored)", report.unexpected)):
            if keys:
                parts.append(f"{label}: {_few(keys)}")
        if not report.missing and not report.unexpected:
            parts.append("no key missing or unexpected")
        lines.append(f"weights: {os.fspath(report.path)}: " + "; ".join(parts))
        if report.strip_prefix or report.add_prefix:
            lines.append(f"  key prefix {report.strip_prefix!r} -> {report.add_prefix!r}")
    return lines


def format_data_summary(description: DataDescription, *, pretrained: str | None = None,
                        reports: Sequence[LoadReport] = (), eval_sizes: dict[str, int] | None = None,
                        eval_batch_size: int | None = None) -> str:
    """The block ``fit`` prints.

    Args:
        description: What the data is.
        pretrained: ``model.pretrained`` (``None``: random initialisation).
        reports: The weights' load reports (:func:`weights_reports`).
        eval_sizes: ``split -> distinct item sizes`` of the evaluation splits whose items differ in size.
        eval_batch_size: The evaluation batch size, for the line on size-batched evaluation.
    """
    lines = ["data:"]
    width = max((len(s.name) for s in description.splits), default=5)
    for split in description.splits:
        sizes, sampled = _sizes_seen(split)
        seen = ""
        if sizes:
            of = f" of {sampled} sampled" if sampled < split.count else ""
            seen = f"; sizes {describe_sizes(sizes)}{of}"
        source = f" from {split.source}" if split.source else ""
        lines.append(f"  {split.name:<{width}} {split.count:>7,}{source}{seen}")
    if description.classes is not None:
        lines.append(f"  classes ({len(description.classes)}): {_few(description.classes, 12)}")
    if description.charset is not None:
        shown = description.charset if len(description.charset) <= 80 else description.charset[:77] + "..."
        lines.append(f"  charset ({len(description.charset)} characters): {shown!r}")
    if description.model_input:
        lines.append(f"  model input: {description.model_input}")
    for split, count in (eval_sizes or {}).items():
        most = f"at most {eval_batch_size} " if eval_batch_size else ""
        lines.append(f"  {split}: whole images of {count} sizes, evaluated in batches of one size ({most}images each)")
    lines += [f"  {note}" for note in description.notes]
    lines += [f"  {line}" for line in _weights_lines(pretrained, list(reports))]
    return "\n".join(lines)


def announce_data(config: Any, recipe: Any, model: nn.Module, datamodule: Any, run_dir: Any, *, resume: bool,
                  rank_zero: bool) -> Callable[[], None]:
    """Before training: on resume, refuse changed data (the split record); on rank 0, print the summary.

    Args:
        config: The resolved config.
        recipe: The recipe.
        model: The built model (its load reports are shown).
        datamodule: The recipe's data module.
        run_dir: The run directory.
        resume: Whether this ``fit`` resumes (the split record is then checked).
        rank_zero: Print (and later write) only on the global rank 0.

    Returns:
        A function writing the split record into ``run_dir`` (a fresh run, or a resumed run without
        one); call it once the run directory is locked.

    Raises:
        DataChangedError: ``resume`` and the splits differ from those the run recorded.
    """
    description = describe_data(recipe, datamodule)
    record = split_record(description.splits)
    recorded = check_split_record(run_dir, record) if resume else False
    if rank_zero:
        eval_sizes = {}
        for split in ("val", "test"):
            try:
                sizes = datamodule.item_sizes(split)
            except (ValueError, KeyError, FileNotFoundError):  # no such split here (described by the recipe)
                continue
            if sizes is not None and len(set(sizes)) > 1:
                eval_sizes[split] = len(set(sizes))
        print(format_data_summary(description, pretrained=config.model.pretrained, reports=weights_reports(model),
                                  eval_sizes=eval_sizes, eval_batch_size=getattr(datamodule, "eval_batch_size", None)),
              flush=True)

    def save() -> None:
        if rank_zero and not recorded:
            write_split_record(run_dir, record)

    return save
