"""The ``export`` verb of ``mmix-applied``: a run as a folder that timm, smp, MONAI, ONNX Runtime and TorchScript load.

``mmix-applied export --checkpoint RUN [--format safetensors,onnx,torchscript] --output DIR [--overwrite]``
writes :func:`mmix_applied.deploy.export_run`'s folder and says which checkpoint it read. The deploy
layer is imported when the verb runs (the CLI starts without the image libraries).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_export", "export_command"]


def add_export(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` to the CLI's sub-parsers."""
    text = "write a run as model.safetensors + config.json + README.md (+ ONNX, TorchScript) for other tools"
    p = sub.add_parser("export", help=text, description=text)
    p.add_argument("--checkpoint", required=True, metavar="RUN",
                   help="a run directory (its best checkpoint, else last.ckpt), RUN:best, RUN:last, a .ckpt file, "
                        "or an exported folder")
    p.add_argument("--format", default="safetensors,onnx,torchscript",
                   help="comma-separated, among safetensors, onnx, torchscript (default: all; safetensors is always "
                        "written)")
    p.add_argument("--output", required=True, metavar="DIR", help="the folder to write (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace --output when it is a previous export")


def export_command(args: argparse.Namespace) -> int:
    """Run ``export`` from parsed arguments; prints the checkpoint used and the files written."""
    from mmix_applied.deploy.export import FILES, export_run, parse_formats
    from mmix_applied.deploy.loaded import load_run

    formats = parse_formats(args.format)  # an unknown format fails before anything is loaded
    loaded = load_run(args.checkpoint)
    source = loaded.source
    print(source.describe() if hasattr(source, "describe") else f"exported folder: {source}", file=sys.stderr,
          flush=True)
    out = export_run(loaded, args.output, formats=formats, overwrite=args.overwrite)
    print(f"exported: {out} ({', '.join([FILES[f] for f in formats] + ['config.json', 'README.md'])})")
    return 0
