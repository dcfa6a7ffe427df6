"""The ``README.md`` model card of an exported run: what it is, its data, its test figures, how to load it.

Written by :func:`mmix_applied.deploy.export_run` from the run's record, its ``test_metrics.json``
(raw and temperature-scaled figures, when ``test`` was run) and the comparison report it belongs
to (when it was trained by ``compare``). The card says what the figures are and where they come
from; it never states a figure the run folder does not hold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmix_applied.deploy.info import RunInfo

__all__ = ["model_card"]


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "–"


def _front_matter(info: RunInfo) -> str:
    tags = {"classification": "image-classification", "segmentation": "image-segmentation",
            "handwriting": "image-to-text"}[info.task]
    library = {"timm": "timm", "smp": "segmentation-models-pytorch", "monai": "monai"}.get(info.family, "pytorch")
    return f"---\nlibrary_name: {library}\npipeline_tag: {tags}\ntags:\n- mmix_applied\n- manifold-mixup\n---\n"


def _data(info: RunInfo) -> list[str]:
    data = info.config.get("data") or {}
    shown = {k: v for k, v in data.items() if v not in (None, "", [], {}) and k not in (
        "batch_size", "eval_batch_size", "num_workers")}
    lines = ["## Data", "", f"Trained by the `{info.task}` recipe of mmix_applied on:", "", "```yaml"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in sorted(shown.items())] + ["```", ""]
    if info.classes is not None:
        lines += [f"Classes ({len(info.classes)}, in output order): " + ", ".join(f"`{c}`" for c in info.classes), ""]
    if info.charset is not None:
        lines += [f"Charset ({len(info.charset)} characters; output 0 is the CTC blank, output i is character "
                  f"i): `{info.charset}`", ""]
    return lines


def _metrics(run_dir: Path | None) -> list[str]:
    path = run_dir / "test_metrics.json" if run_dir is not None else None
    if path is None or not path.is_file():
        return ["## Test metrics", "", "No test was run on this run (`mmix-applied test --checkpoint RUN` writes "
                "`test_metrics.json`, which the next export includes).", ""]
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ["## Test metrics", "", f"`{path.name}` of the run cannot be read.", ""]
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    names = sorted(k for k in numbers if not k.endswith("_scaled") and k != "temperature")
    lines = ["## Test metrics", "", f"From the run's `{path.name}` (the last `mmix-applied test` of the run). "
             "*Scaled*: the logits divided by the temperature; accuracy, Dice and error rates do not change "
             "under it.", "", "| metric | raw | scaled |", "|---|---|---|"]
    lines += [f"| {n} | {_num(numbers[n])} | {_num(numbers.get(f'{n}_scaled'))} |" for n in names]
    if "temperature" in numbers:
        lines += ["", f"Temperature used for *scaled*: {_num(numbers['temperature'])}."]
    return lines + [""]


def _comparison(run_dir: Path | None) -> list[str]:
    report = run_dir.parent.parent / "report.md" if run_dir is not None and run_dir.parent.name == "runs" else None
    if report is None or not report.is_file():
        return []
    return ["## Comparison", "", f"This run is one of a `compare` study (mix variants with paired seeds); the "
            f"study's report, with every variant's figures and the paired differences, is `{report}` on the machine "
            "that trained it.", ""]


def _caveat(info: RunInfo) -> list[str]:
    if info.task == "handwriting":
        return ["## Calibration", "", "A CTC recognizer has no temperature: its per-frame distributions are decoded "
                "(greedy, best path) into strings, and no string-level confidence is calibrated.", ""]
    t = info.temperature
    lines = ["## Calibration (read before using the probabilities)", "",
             "Mixed models come out underconfident (trained on soft targets everywhere): the raw softmax of a "
             "Manifold Mixup model understates how often it is right. A temperature `T` was fitted after training "
             "on the validation split (Guo et al., ICML 2017): use `probs_calibrated` (the ONNX / TorchScript second "
             "output, `load_run(...).predict`), which is `softmax(logits / T)`" + (
                 " (a sigmoid per label for binary and multilabel masks)." if info.activation == "sigmoid" else ".")]
    if t is None:
        lines += ["", "**No temperature was fitted for this run** (e.g. `options.calibrate=false` or no validation): "
                  "`probs_calibrated` equals the raw probabilities (T = 1)."]
    else:
        lines += ["", f"T = {_num(t)} (T > 1 softens, T < 1 sharpens the raw probabilities). A temperature fitted on "
                  "a small validation split is itself uncertain; check the calibration on your own data."]
    return lines + [""]


def model_card(info: RunInfo, *, run_dir: Path | None, files: Mapping[str, str], source: str,
               loading: str) -> str:
    """The card's markdown.

    Args:
        info: The run's record.
        run_dir: The run directory (for ``test_metrics.json`` and a comparison), or ``None``.
        files: ``format -> file name`` of the written files.
        source: Where the weights came from (the checkpoint and why).
        loading: The markdown of the "How to load" section.
    """
    mix = info.mix or {}
    mixing = (f"`{mix.get('variant')}`" + (f" (alpha {mix.get('alpha')}, points {mix.get('points')}, mode "
                                           f"{mix.get('mode')})" if mix.get("variant") not in (None, "none") else ""))
    lines = [_front_matter(info), f"# {info.family}/{info.name} — {info.task}, trained with mmix_applied", "",
             f"A `{info.family}/{info.name}` network ({info.in_channels} input channel(s), {info.num_classes} outputs) "
             f"trained by mmix_applied's `{info.task}` recipe with mixing {mixing} (Manifold Mixup: Verma et al., "
             "ICML 2019). Exported from " + source + ".", "", "## Files", ""]
    lines += [f"- `{name}` ({kind})" for kind, name in files.items()] + ["- `config.json`: the architecture, "
              "classes or charset, preprocessing, temperature and mix settings (under `_mmix_applied`)", ""]
    lines += ["## Intended use", "", "Research and evaluation on data like the training data below. The network has "
              "seen only that data: check it on data from your own setting before relying on it, and do not use it "
              "for clinical or other high-stakes decisions without a validation of your own.", ""]
    lines += _data(info) + _metrics(run_dir) + _comparison(run_dir) + _caveat(info)
    lines += ["## Preprocessing", "", "```json", json.dumps(info.preprocessing, indent=2), "```", ""]
    lines += ["## How to load", "", loading, ""]
    return "\n".join(lines)
