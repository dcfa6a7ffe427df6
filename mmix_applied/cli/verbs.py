"""The ``compare`` and ``spectrum`` verbs of ``mmix-applied``, and the quiet Lightning console.

``mmix-applied compare -c CONFIG --variants none,input,manifold --seeds 0,1,2 [--out DIR] [KEY=VALUE ...]``
trains and tests every variant with the same seeds (:func:`mmix_applied.compare.compare`).
``mmix-applied spectrum --checkpoint RUN [RUN ...] --point NAME [--out DIR]`` reports how many
singular directions hold 90 % of each class's variance at a point (the flattening of Verma et
al., ICML 2019, section 3) and plots the spectra of the runs on one figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

__all__ = ["add_verbs", "compare_command", "parse_csv", "quiet_console", "spectrum_command"]


def quiet_console(verbose: bool) -> None:
    """Hide Lightning's tips and banners ("💡 Tip", litlogger, litmodels, "GPU available") unless ``verbose``.

    They are ``rank_zero_info`` messages on the ``lightning.pytorch`` / ``lightning.fabric``
    loggers; warnings and errors still show. Calibration warnings are printed once in the fit
    summary instead of as Python warnings.
    """
    level = logging.INFO if verbose else logging.WARNING
    if verbose:  # undo levels set on Lightning's child loggers earlier in this process (e.g. by the demo)
        for name in list(logging.root.manager.loggerDict):
            if name.startswith(("lightning.", "pytorch_lightning.")):
                logging.getLogger(name).setLevel(logging.NOTSET)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(level)
    if not verbose:
        from mmix_applied.metrics.temperature import CalibrationWarning

        warnings.filterwarnings("ignore", category=CalibrationWarning)


def parse_csv(kind: type, text: str, flag: str) -> list:
    """``"0,1,2"`` as ``[0, 1, 2]`` (``kind`` of each item); a bad item names ``flag`` and an example."""
    try:
        return [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag}: received {text!r}; give a comma-separated list, e.g. "
                         f"{'0,1,2' if kind is int else 'none,input,manifold'}") from None


def add_verbs(sub: argparse._SubParsersAction) -> None:
    """Add ``compare`` and ``spectrum`` to the CLI's sub-parsers."""
    comp = sub.add_parser("compare", help="train and test every mixing variant with paired seeds; write a report",
                          description="train and test every mixing variant with paired seeds; write a report")
    comp.add_argument("-c", "--config", required=True,
                      help="the recipe's YAML config: a path, or a shipped recipe config's name (e.g. classification)")
    comp.add_argument("--variants", default="none,input,manifold", help="comma-separated mix.variant values")
    comp.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    comp.add_argument("--out", default="runs/compare", help="output directory (runs, results.jsonl, report.md)")
    comp.add_argument("--spectrum-point", help="classification: also report the class spectra at this module")
    comp.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides for every run")
    spec = sub.add_parser("spectrum", help="class-conditional singular value spectra at a point of trained runs",
                          description="class-conditional singular value spectra at a point of trained runs")
    spec.add_argument("--checkpoint", required=True, nargs="+", metavar="RUN",
                      help="run directories (their best checkpoint, else last.ckpt), RUN:best, RUN:last or .ckpt "
                           "files (two or more are plotted on one figure)")
    spec.add_argument("--point", required=True, help="module name whose output states are measured, or 'input'")
    spec.add_argument("--out", default="runs/spectrum", help="where the JSON and the PNG go")
    spec.add_argument("--max-samples", type=int, default=2000, help="test samples used per run")


def compare_command(args: argparse.Namespace) -> int:
    """Run ``compare`` from parsed arguments; prints the report's path."""
    from mmix_applied.compare import compare

    report = compare(args.config, variants=parse_csv(str, args.variants, "--variants"),
                     seeds=parse_csv(int, args.seeds, "--seeds"), overrides=list(args.overrides), out_dir=args.out,
                     command=" ".join(sys.argv), spectrum_point=args.spectrum_point)
    print(f"report: {report}")
    return 0


def _check_spectrum_run(config: object, ckpt: Path, run: Path) -> None:
    """A classification run whose checkpoint is its own (recipe, model and shapes as its config.yaml says)."""
    from mmix_applied.engine.checkpoints import read_run_checkpoint

    read_run_checkpoint(ckpt, config)  # a checkpoint of another run or recipe: CheckpointError naming both
    if config.recipe != "classification":
        raise ValueError(
            f"spectrum measures class-conditional spectra (one per class label of an image), so it takes "
            f"classification runs; {str(run)!r} is a {config.recipe} run. For {config.recipe}, compare runs with "
            f"`mmix-applied test` (or `mmix-applied compare`) instead"
        )


def spectrum_command(args: argparse.Namespace) -> int:
    """Compute, print, save and plot the spectra of each ``--checkpoint`` at ``--point``."""
    from mmix_applied.compare import checkpoint_spectrum
    from mmix_applied.engine.runner import config_of_checkpoint, locate_checkpoint
    from mmix_applied.metrics.spectrum import ClassSpectra
    from mmix_applied.reports.figures import plot_spectra
    from mmix_applied.utils.atomic import atomic_write_text

    out = Path(args.out)
    runs: dict[str, ClassSpectra] = {}
    for source in args.checkpoint:
        found = locate_checkpoint(source)
        print(found.describe(), file=sys.stderr, flush=True)  # which checkpoint, and why
        ckpt = found.path
        run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        label = run.name if run.name not in runs else str(run)
        config = config_of_checkpoint(ckpt)
        _check_spectrum_run(config, ckpt, run)
        found = checkpoint_spectrum(config, ckpt, args.point, max_samples=args.max_samples)
        spectra = ClassSpectra.from_dict(found)
        runs[label] = spectra
        atomic_write_text(out / f"{label.replace('/', '_')}_{args.point}.json",
                          json.dumps({"run": str(run), "point": args.point, **found}))
        per_class = ", ".join(f"{c}: {d}" for c, d in sorted(spectra.directions.items()))
        print(f"{label} at {args.point}: directions holding {spectra.variance:.0%} of the variance per class "
              f"[{per_class}]; mean {spectra.mean_directions:.2f}"
              f"{f' (skipped classes {spectra.skipped})' if spectra.skipped else ''}")
    figure = out / f"spectrum_{args.point}.png"
    plot_spectra(runs, figure, title=f"class-conditional spectra at {args.point}")
    print(f"figure: {figure}")
    return 0
