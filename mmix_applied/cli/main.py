"""The ``mmix-applied`` command line: fit, test, predict, demo, points, list-models.

Examples::

    mmix-applied fit -c configs/classification.yaml train.max_epochs=3
    mmix-applied fit -c classification train.max_epochs=3     # the same config, shipped with the package
    mmix-applied fit -c configs/classification.yaml --resume last
    mmix-applied test --checkpoint runs/my-run
    mmix-applied predict --checkpoint runs/my-run --input my_images/ --output preds.csv
    mmix-applied points -c configs/classification.yaml model.name=convnext_atto
    mmix-applied list-models 'timm/resnet*'
    mmix-applied fit -c configs/classification.yaml --print-config
    mmix-applied compare -c configs/classification.yaml --variants none,manifold --seeds 0,1,2
    mmix-applied spectrum --checkpoint runs/compare/runs/none-seed0 runs/compare/runs/manifold-seed0 --point layer2
    mmix-applied export --checkpoint runs/my-run --format safetensors,onnx,torchscript --output exported/my-run

Also runnable as ``python -m mmix_applied.cli``. Errors in the user's config or files print one
clear line and return exit status 2 (``--debug`` shows the traceback). Lightning's tips and
banners are hidden unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence

from mmix_applied.cli.export import add_export, export_command
from mmix_applied.cli.stops import CommandContext, quiet_rank, quiet_writer_threads, stop_message
from mmix_applied.cli.tune import add_tune_verb, tune_command
from mmix_applied.cli.verbs import add_verbs, compare_command, quiet_console, spectrum_command
from mmix_applied.errors import MmixError
from mmix_applied.utils import interrupts

__all__ = ["main"]

_context = CommandContext()  # what the running command has resolved (reported if a signal stops it)

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmix-applied", description="Manifold Mixup for applied deep learning.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--verbose", action="store_true", help="show Lightning's banners, tips and info lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, *, checkpoint: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-c", "--config", help="YAML config: a path, or a shipped recipe config's name such as "
                                              "classification (default: the run's config.yaml with --checkpoint/"
                                              "--resume PATH, else built-in defaults)")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        if checkpoint:
            p.add_argument("--checkpoint", required=True,
                           help="a run directory (its best checkpoint, else last.ckpt), RUN:best, RUN:last, "
                                "a .ckpt file, or 'last'")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.max_epochs=3")
        return p

    fit = add("fit", "train a model from a config")
    fit.add_argument("--resume", help="continue from a checkpoint: PATH (file or run directory) or 'last'")
    add("test", "evaluate a checkpoint on the test split (unmixed)", checkpoint=True)
    predict = add("predict", "write per-image predictions of a checkpoint", checkpoint=True)
    predict.add_argument("--input", help="what to predict on (recipe-defined; default: the test split)")
    predict.add_argument("--output", help="output file, or a folder for FOLDER/predictions.csv (default: "
                                          "RUN_DIR/predictions.csv); never a checkpoint")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace an existing --output file that is not a previous prediction")
    predict.add_argument("--raw", action="store_true",
                         help="write raw probabilities (default: calibrated with the checkpoint's temperature)")
    predict.add_argument("--overlays", action="store_true",
                         help="segmentation: also write colour overlays and probability maps beside the masks "
                              "(options.overlays=true)")
    add("points", "print the mix points of the configured model")
    models = sub.add_parser("list-models", help="list buildable models (fnmatch pattern over family/name)")
    models.add_argument("pattern", nargs="?", default="*")
    models.add_argument("--family", help="only this family (timm, smp, monai, crnn)")
    add_verbs(sub)
    add_export(sub)
    add_tune_verb(sub)
    demo = sub.add_parser("demo", help="run the end-to-end demo (arguments go to the demo)", add_help=False)
    demo.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _load(args: argparse.Namespace, run_hint: str | None) -> object:
    """Resolve the config: --config, else the run directory's config.yaml, else defaults; then overrides."""
    from mmix_applied.config import load_config, read_yaml

    source: object = args.config
    if source is None and run_hint:
        from mmix_applied.engine.runner import resolve_checkpoint, stored_config

        # `last` looks under run.dir / run.name of the defaults + overrides
        ckpt = resolve_checkpoint(run_hint, load_config(None, args.overrides) if run_hint == "last" else None)
        run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        if (run_dir / "config.yaml").is_file():
            source = read_yaml(run_dir / "config.yaml")
        elif getattr(args, "checkpoint", None):  # a checkpoint copied without its run directory: its own config
            source = stored_config(ckpt)
    return load_config(source, args.overrides)


def _points(config: object) -> int:
    from mmix_applied import ManifoldMixup
    from mmix_applied.engine.recipe import get_recipe

    recipe = get_recipe(config.recipe)(config)
    model = recipe.build_model()
    points = ["input"] if config.mix.variant == "input" else config.mix.points
    mixer = ManifoldMixup(model, points=points, alpha=config.mix.alpha, seed=0)
    try:
        print(f"# {config.model.family}/{config.model.name}: {len(mixer.points)} mix points"
              f"{' (variant none: mixing is off)' if config.mix.variant == 'none' else ''}")
        for name in mixer.points:
            print(name)
    finally:
        mixer.close()
    return 0


def _list_models(pattern: str, family: str | None) -> int:
    try:
        from mmix_applied.models import list_models
    except ImportError:
        list_models = None
    if list_models is not None:
        names = list_models(pattern, family=family)
    else:
        import fnmatch

        import timm

        names = [f"timm/{n}" for n in timm.list_models() if fnmatch.fnmatch(f"timm/{n}", pattern)]
    for name in names:
        print(name)
    if not names:
        print(f"no model matches {pattern!r}", file=sys.stderr)
        return 1
    return 0


def _demo(argv: list[str]) -> int:
    try:
        from mmix_applied.tasks.demo import main as demo_main
    except ImportError as err:
        print(f"error: the demo is not available in this installation ({err}); "
              "try `mmix-applied fit -c configs/classification.yaml` instead", file=sys.stderr)
        return 1
    return int(demo_main(argv) or 0)


def _run(args: argparse.Namespace) -> int:
    from mmix_applied.config import dump_config

    if args.command == "list-models":
        return _list_models(args.pattern, args.family)
    if args.command == "demo":
        return _demo(list(args.args))
    quiet_console(args.verbose)
    _context.args = args
    if args.command == "compare":
        return compare_command(args)
    if args.command == "spectrum":
        return spectrum_command(args)
    if args.command == "export":
        return export_command(args)
    if args.command == "tune":
        return tune_command(args)
    hint = getattr(args, "resume", None) or getattr(args, "checkpoint", None)
    if getattr(args, "overlays", False):
        args.overrides = [*args.overrides, "options.overlays=true"]
    config = _load(args, hint)
    _context.config = config
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    if args.command == "points":
        return _points(config)

    from mmix_applied.engine import runner
    from mmix_applied.engine.summary import (
        FIT_SUMMARY_FILE,
        format_fit_summary,
        format_prediction_line,
        format_test_table,
    )

    if args.command == "fit":
        run_dir = runner.fit(config, resume=args.resume)
        summary = run_dir / FIT_SUMMARY_FILE
        print(format_fit_summary(json.loads(summary.read_text())) if summary.is_file()
              else f"run directory: {run_dir}")
    elif args.command == "test":
        found = runner.locate_checkpoint(args.checkpoint, config)
        print(found.describe(), file=sys.stderr, flush=True)  # which checkpoint, and why
        runner.test(config, checkpoint=found.path,
                    on_metrics=lambda m: print(format_test_table(m), flush=True))  # printed before writing
    elif args.command == "predict":
        found = runner.locate_checkpoint(args.checkpoint, config)
        print(found.describe(), file=sys.stderr, flush=True)
        path = runner.predict(config, checkpoint=found.path, input=args.input, output=args.output,
                              raw=args.raw, overwrite=args.overwrite)
        print(format_prediction_line(path, raw=args.raw))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mmix-applied``; returns the exit status.

    Ctrl-C (SIGINT) and SIGTERM stop a command cleanly (a checkpoint being saved is finished first):
    one line says what was saved and the command that continues, and the status is 130 or 143.
    """
    global _context
    argv = list(sys.argv[1:] if argv is None else argv)
    _context = CommandContext(started=time.time())
    restore_signals, restore_threads = interrupts.install(), quiet_writer_threads()
    try:
        return _main(argv)
    except interrupts.Stopped as stop:
        return _stopped(stop, argv)
    except KeyboardInterrupt:  # the handlers could not be installed (main() called outside the main thread)
        return _stopped(interrupts.Stopped(signal.SIGINT), argv)
    except SystemExit:  # Lightning's own SIGTERM exit (a bare SystemExit), had it come first
        signum = interrupts.received()
        if signum is None:
            raise
        return _stopped(interrupts.Stopped(signum), argv)
    finally:
        restore_threads()
        restore_signals()


def _stopped(stop: interrupts.Stopped, argv: list[str]) -> int:
    interrupts.ignore()  # the report is not cut short by another Ctrl-C
    if not quiet_rank():
        print(stop_message(stop, argv, _context), file=sys.stderr, flush=True)
    return stop.exit_code


def _main(argv: list[str]) -> int:
    demo_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if demo_at is not None and argv[demo_at] == "demo":  # everything after `demo` belongs to the demo
        return _demo(argv[demo_at + 1:])
    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # overrides may come before and after options
    unknown = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if args.command is None:
        parser.print_help()
        return 2
    if args.debug:
        return _run(args)
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return _run(args)
    except MmixError as err:  # every library error: config, checkpoint, run directory, non-finite loss, data
        return _user_error(err)
    except MisconfigurationException as err:  # Lightning rejected a train.* value (accelerator, devices...)
        print(f"error: {err} Check the train section (train.accelerator, train.devices, train.strategy, "
              "train.precision; e.g. train.accelerator=cpu on a machine without a GPU).", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError) as err:  # built-ins for bad input
        return _user_error(err)
    except RuntimeError as err:
        cause = _data_cause(err)
        if cause is None:
            raise
        return _user_error(cause)


def _data_cause(err: RuntimeError) -> BaseException | None:
    """The user error inside a wrapper: MONAI's ``applying transform <...>`` hides the reader's error
    (which names the file) in ``__cause__``; return the innermost cause, or None for other errors."""
    user = (MmixError, ValueError, TypeError, KeyError, FileNotFoundError)
    monai_wrapper = str(err).startswith("applying transform")
    cause, found = err.__cause__, None
    while cause is not None:
        if isinstance(cause, user) or monai_wrapper:
            found = cause
        cause = cause.__cause__
    return found


def _user_error(err: BaseException) -> int:
    """Print a library error or a user error (bad value, type, key or file) as one line; the exit status is 2."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    print(f"error: {type(err).__name__}: {message} (run with --debug for the traceback)", file=sys.stderr)
    return 2

