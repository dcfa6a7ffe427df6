"""Leaving the library: load a trained run without Lightning, export it for other tools.

* :func:`load_run` (also ``mmix_applied.load_run``): a run directory, one of its checkpoints or an
  exported folder as a :class:`LoadedRun`: the plain network (no mixer, ``eval()``), its
  preprocessing, class names or charset, temperature, config, and ``predict``.
* :func:`export_run` (``mmix-applied export``): a Hugging-Face-style folder (``model.safetensors``,
  ``config.json``, a ``README.md`` model card) plus ONNX and TorchScript files, loadable by timm,
  smp, MONAI, ONNX Runtime and ``torch.jit.load`` without this package.
* :func:`resolve_run_checkpoint`: ``RUN``, ``RUN:best``, ``RUN:last`` or a file, and why.

This layer sits beside ``data`` (it uses ``models`` and ``data``, never the engine): importing it
loads no Lightning. See docs/deploy.md.
"""

from mmix_applied.deploy.export import EXPORT_FORMATS, export_run
from mmix_applied.deploy.formats import CalibratedOutputs, plain_copy, to_onnx, to_torchscript
from mmix_applied.deploy.info import RunInfo
from mmix_applied.deploy.loaded import LoadedRun, SegmentationPrediction, load_run
from mmix_applied.deploy.runs import RunCheckpoint, resolve_run_checkpoint

__all__ = [
    "EXPORT_FORMATS",
    "CalibratedOutputs",
    "LoadedRun",
    "RunCheckpoint",
    "RunInfo",
    "SegmentationPrediction",
    "export_run",
    "load_run",
    "plain_copy",
    "resolve_run_checkpoint",
    "to_onnx",
    "to_torchscript",
]
