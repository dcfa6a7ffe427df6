"""``export_run``: a run as a Hugging-Face-style folder that timm, smp, MONAI, ONNX Runtime and TorchScript load.

The folder (``mmix-applied export --checkpoint RUN --output DIR``)::

    model.safetensors      the plain network's state_dict (no mixer, no Lightning prefix)
    config.json            what each tool needs (below) + "_mmix_applied": the run's record
    README.md              the model card: data, test figures raw and scaled, calibration caveat, loading
    model.onnx             (onnx) input "input"; outputs "logits", "probs_calibrated" (CTC: "log_probs")
    model.torchscript.pt   (torchscript) the same outputs, for torch.jit.load

``config.json`` holds, beside ``"_mmix_applied"``, the keys of the network's own tool: timm's
``architecture`` / ``num_classes`` / ``label_names`` / ``pretrained_cfg`` / ``model_args``; smp's
``_model_class`` and constructor arguments (``smp.from_pretrained(DIR)``); MONAI's
``network_def`` (``_target_`` and arguments, a MONAI-bundle-style definition); the CRNN's
``model_args``. The folder is written into a temporary sibling folder and renamed into place, so a
failure leaves nothing half-written; an existing folder is replaced only with ``overwrite`` and
only when it is a previous export (or empty); the run itself is never written to.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mmix_applied._version import __version__
from mmix_applied.deploy.card import model_card
from mmix_applied.deploy.formats import CalibratedOutputs, output_names, save_safetensors, to_onnx, to_torchscript
from mmix_applied.deploy.info import EXPORT_KEY, RunInfo
from mmix_applied.deploy.loaded import WEIGHTS_FILE, LoadedRun, is_export_folder, load_run
from mmix_applied.deploy.runs import RunCheckpoint
from mmix_applied.models.monai_nets import monai_init_args
from mmix_applied.utils.atomic import atomic_write_text

__all__ = ["EXPORT_FORMATS", "FILES", "export_run", "parse_formats"]

#: The formats ``export`` writes (safetensors always: every tool loads it).
EXPORT_FORMATS = ("safetensors", "onnx", "torchscript")
#: File of each format in the folder.
FILES = {"safetensors": WEIGHTS_FILE, "onnx": "model.onnx", "torchscript": "model.torchscript.pt"}


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    """``"onnx,torchscript"`` or a list -> the formats in order, ``safetensors`` first (always written).

    Raises:
        ValueError: An unknown format (the message lists the valid ones).
    """
    items = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [f for f in items if f not in EXPORT_FORMATS]
    if unknown or not items:
        raise ValueError(f"export format{'s' if len(unknown) > 1 else ''} {unknown or formats!r} unknown; valid: "
                         f"{', '.join(EXPORT_FORMATS)} (comma-separated, e.g. --format safetensors,onnx)")
    return ["safetensors"] + [f for f in EXPORT_FORMATS[1:] if f in items]


# ---------------------------------------------------------------------- config.json
def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def tool_config(info: RunInfo, model: nn.Module) -> dict[str, Any]:
    """The keys the network's own tool reads from ``config.json``."""
    pre = info.preprocessing
    if info.family == "timm":
        size = int(pre.get("image_size", 224))
        return {"architecture": info.name, "num_classes": info.num_classes, "label_names": info.classes,
                "num_features": int(getattr(model, "num_features", 0)) or None,
                "model_args": {"in_chans": info.in_channels, **_jsonable(info.model_options)},
                "pretrained_cfg": {"input_size": [info.in_channels, size, size], "mean": pre.get("mean"),
                                   "std": pre.get("std"), "interpolation": "bilinear", "crop_pct": 1.0,
                                   "crop_mode": "center", "num_classes": info.num_classes,
                                   "file": WEIGHTS_FILE}}
    if info.family == "smp":
        init = getattr(model, "_hub_mixin_config", None)
        if not isinstance(init, dict):
            raise ValueError(f"smp model {type(model).__name__} has no constructor record (_hub_mixin_config); "
                             "smp >= 0.4 keeps one")
        return {"_model_class": type(model).__name__, **_jsonable(init)}
    if info.family == "monai":
        name, kwargs = monai_init_args(info.name, num_classes=info.num_classes, in_channels=info.in_channels,
                                       **info.model_options)
        return {"network_def": {"_target_": f"monai.networks.nets.{name}", **_jsonable(kwargs)}}
    extra: dict[str, Any] = {"architecture": info.name, "model_args": {
        "num_classes": info.num_classes, "in_channels": info.in_channels, **_jsonable(info.model_options)}}
    if hasattr(model, "_stride"):  # CRNN: output steps of a line W pixels wide = floor((W + offset) / stride)
        extra["output_lengths"] = {"stride": int(model._stride), "offset": int(model._offset)}
    return extra


def _example(info: RunInfo) -> tuple[torch.Tensor, dict[int, str], list[dict[int, str]]]:
    """An input batch for tracing, its varying axes and each output's varying axes."""
    g = torch.Generator().manual_seed(0)
    pre, c = info.preprocessing, info.in_channels
    if info.task == "classification":
        size = int(pre["image_size"])
        return torch.randn(2, c, size, size, generator=g), {0: "batch"}, [{0: "batch"}] * 2
    if info.task == "handwriting":
        h = int(pre["height"])
        return (torch.rand(2, c, h, max(4 * h, int(pre.get("min_width") or 1)), generator=g), {0: "batch", 3: "width"},
                [{0: "time", 1: "batch"}])
    if info.spatial_dims == 3:
        roi = [int(v) for v in (info.sliding_window or {})["roi_size"]]
        return torch.randn(2, c, *roi, generator=g), {0: "batch"}, [{0: "batch"}] * 2
    side = 2 * max(32, int(pre.get("pad_divisor", 32)))
    axes = {0: "batch", 2: "height", 3: "width"}
    return torch.randn(2, c, side, side, generator=g), axes, [axes] * 2


def _check_onnx(path: Path, wrapped: Any, example: torch.Tensor) -> float | None:
    """Largest absolute difference between ONNX Runtime and PyTorch on ``example`` (``None``: no onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": example.numpy()})
    with torch.no_grad():
        ref = wrapped(example)
    ref = ref if isinstance(ref, tuple) else (ref,)
    return max(float((torch.as_tensor(a) - b).abs().max()) for a, b in zip(got, ref))


# ---------------------------------------------------------------------- the folder
def _check_output(output: Path, run_dir: Path | None, *, overwrite: bool) -> None:
    out = output.resolve()
    if run_dir is not None:
        run = run_dir.resolve()
        if out == run or out in run.parents or out == run / "checkpoints" or (run / "checkpoints") in out.parents:
            raise FileExistsError(f"--output {str(output)!r} is the run directory {str(run_dir)!r}, a folder above it "
                                  "or its checkpoints/: an export never writes there; choose another folder, e.g. "
                                  f"{str(run_dir / 'export')!r}")
    if not output.exists():
        return
    if not output.is_dir():
        raise FileExistsError(f"--output {str(output)!r} exists and is a file; choose a folder that does not exist")
    previous = is_export_folder(output)
    if not overwrite:
        raise FileExistsError(f"--output {str(output)!r} exists; choose a new folder, or pass --overwrite to replace "
                              f"{'the previous export' if previous else 'it'}")
    if not previous and any(output.iterdir()):
        raise FileExistsError(f"--output {str(output)!r} exists and is not an export of mmix-applied (no config.json "
                              "with _mmix_applied); --overwrite replaces only a previous export or an empty folder. "
                              "Choose another folder")


def _replace(tmp: Path, output: Path) -> None:
    """Move the finished folder into place (an existing one is removed only after the new one is there)."""
    if not output.exists():
        os.replace(tmp, output)
        return
    old = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.old."))
    os.replace(output, old / output.name)
    try:
        os.replace(tmp, output)
    except BaseException:
        os.replace(old / output.name, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_run(run: str | os.PathLike | LoadedRun, output: str | os.PathLike, *,
               formats: str | Iterable[str] = EXPORT_FORMATS, overwrite: bool = False,
               which: Literal["best", "last"] = "best") -> Path:
    """Write the exported folder of ``run`` at ``output``.

    Args:
        run: A run directory (its best checkpoint, else ``last.ckpt``), ``RUN:best``, ``RUN:last``,
            a ``.ckpt`` file, an exported folder, or a :class:`LoadedRun`.
        output: The folder to write (must not exist unless ``overwrite``).
        formats: Among ``safetensors``, ``onnx``, ``torchscript`` (safetensors is always written).
        overwrite: Replace ``output`` when it is a previous export (or empty).
        which: What a bare run directory means.

    Returns:
        ``output``.

    Raises:
        ValueError: An unknown format.
        FileNotFoundError: Nothing at ``run``, or a run without checkpoints.
        FileExistsError: ``output`` exists (without ``overwrite``), is not a previous export, or is the run.
    """
    chosen = parse_formats(formats)
    loaded = run if isinstance(run, LoadedRun) else load_run(run, which=which)
    source = loaded.source
    run_dir = source.run_dir if isinstance(source, RunCheckpoint) else None
    output = Path(output)
    _check_output(output, run_dir, overwrite=overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    try:
        _write_folder(loaded, tmp, chosen)
        _replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def _write_folder(loaded: LoadedRun, folder: Path, chosen: list[str]) -> None:
    info, model = loaded.info, loaded.model.cpu().eval()
    source = loaded.source
    described = (f"`{source.path.name}` of run `{source.run_dir}` ({source.note})" if isinstance(source, RunCheckpoint)
                 else f"the exported folder `{source}`")
    files = {fmt: FILES[fmt] for fmt in chosen}
    save_safetensors(model, folder / FILES["safetensors"])
    activation, t = info.activation, info.temperature
    example, axes, out_axes = _example(info)
    checks: dict[str, Any] = {}
    if "onnx" in chosen:
        exporter = to_onnx(model, folder / FILES["onnx"], example=example, dynamic_axes=axes, temperature=t,
                           activation=activation, output_axes=out_axes)
        wrapped = CalibratedOutputs(model, temperature=t, activation=activation).eval()
        checks["onnx"] = {"exporter": exporter, "input": "input", "outputs": output_names(activation),
                          "dynamic_axes": {str(k): v for k, v in axes.items()},
                          "max_abs_diff_vs_pytorch": _check_onnx(folder / FILES["onnx"], wrapped, example)}
    if "torchscript" in chosen:
        to_torchscript(model, folder / FILES["torchscript"], example=example, temperature=t, activation=activation)
        checks["torchscript"] = {"outputs": output_names(activation)}
    record = {"format_version": 1, "library": f"mmix_applied {__version__}", **info.to_record(),
              "files": files, "exports": checks,
              "source": {"checkpoint": str(getattr(source, "path", source)), "note": getattr(source, "note", "")}}
    config = {**tool_config(info, model), EXPORT_KEY: _jsonable(record)}
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2))
    run_dir = source.run_dir if isinstance(source, RunCheckpoint) else None
    atomic_write_text(folder / "README.md", model_card(info, run_dir=run_dir, files=files, source=described,
                                                       loading=loading_snippet(info, chosen)))


def loading_snippet(info: RunInfo, formats: list[str]) -> str:
    """The card's "How to load" markdown for this family and these formats (docs/deploy.md has the tested forms)."""
    blocks = ["With mmix_applied (calibrated probabilities, masks or strings):", "", "```python",
              "from mmix_applied import load_run", "", "run = load_run(\"THIS_FOLDER\")",
              "out = run.predict([\"image.png\"])", "```", ""]
    if info.family == "timm":
        blocks += ["With timm alone:", "", "```python", "import timm", "",
                   f"model = timm.create_model(\"{info.name}\", pretrained=True, num_classes={info.num_classes}, "
                   f"in_chans={info.in_channels},",
                   "                          pretrained_cfg_overlay=dict(file=\"THIS_FOLDER/model.safetensors\"))",
                   "```", ""]
    elif info.family == "smp":
        blocks += ["With segmentation_models_pytorch alone:", "", "```python",
                   "import segmentation_models_pytorch as smp", "", "model = smp.from_pretrained(\"THIS_FOLDER\")",
                   "```", ""]
    elif info.family == "monai":
        blocks += ["With MONAI alone (the network definition is in `config.json` under `network_def`):", "",
                   "```python", "import json", "from monai.bundle import ConfigParser",
                   "from safetensors.torch import load_file", "",
                   "parser = ConfigParser(json.load(open(\"THIS_FOLDER/config.json\")))",
                   "net = parser.get_parsed_content(\"network_def\")",
                   "net.load_state_dict(load_file(\"THIS_FOLDER/model.safetensors\"))", "```", ""]
    if "onnx" in formats:
        blocks += ["With ONNX Runtime (input `input`; outputs " + ", ".join(
            f"`{n}`" for n in output_names(info.activation)) + "):", "", "```python", "import onnxruntime as ort", "",
            "session = ort.InferenceSession(\"THIS_FOLDER/model.onnx\")",
            "outputs = session.run(None, {\"input\": batch})  # batch: float32, preprocessed as above", "```", ""]
    if "torchscript" in formats:
        blocks += ["With TorchScript:", "", "```python", "import torch", "",
                   "model = torch.jit.load(\"THIS_FOLDER/model.torchscript.pt\")", "```", ""]
    if info.spatial_dims == 3:
        sw = info.sliding_window or {}
        blocks += [f"3D: the network takes windows of {sw.get('roi_size')} voxels; run whole volumes through MONAI's "
                   f"`sliding_window_inference(volume, {sw.get('roi_size')}, {sw.get('sw_batch_size')}, net, "
                   f"overlap={sw.get('overlap')}, mode=\"gaussian\")` (see docs/deploy.md for ONNX Runtime).", ""]
    return "\n".join(blocks)
