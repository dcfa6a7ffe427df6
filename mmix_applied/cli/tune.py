"""The ``tune`` verb of ``mmix-applied``: search the mixing setting with Optuna, then compare it.

``mmix-applied tune -c CONFIG --trials N [--seeds 0,1] [--space FILE] [--storage URL] [--study NAME]
[--out DIR] [KEY=VALUE ...]`` runs :func:`mmix_applied.tune.tune`. Several processes given the same
``--storage`` and ``--study`` (one per GPU, one per SLURM job) share the study (docs/tune.md).
"""

from __future__ import annotations

import argparse
import sys

from mmix_applied.cli.verbs import parse_csv

__all__ = ["add_tune_verb", "tune_command"]


def add_tune_verb(sub: argparse._SubParsersAction) -> None:
    """Add ``tune`` to the CLI's sub-parsers."""
    text = "search the mixing setting on validation with Optuna, then compare it with none on fresh seeds"
    p = sub.add_parser("tune", help=text, description=text)
    p.add_argument("-c", "--config", required=True, help="the recipe's YAML config")
    p.add_argument("--trials", required=True, type=int, help="finished trials the study should hold")
    p.add_argument("--seeds", default="0,1", help="comma-separated tuning seeds (each trial's mean is over them)")
    p.add_argument("--space", help="a YAML search space overriding the recipe's default (docs/tune.md)")
    p.add_argument("--storage", help="an Optuna RDB URL or a journal file path (default: OUT/tune.journal)")
    p.add_argument("--study", help="the study's name (default: the config file's stem)")
    p.add_argument("--out", default="runs/tune", help="output directory (trial runs, final comparison, report)")
    p.add_argument("--final-seeds", help="fresh seeds of the final comparison (default: the three after --seeds); "
                                         "'none' skips it")
    p.add_argument("--no-prune", action="store_true", help="train every trial to the end")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the trial runs' checkpoints")
    p.add_argument("--sampler-seed", type=int, help="seed of Optuna's TPE sampler (one per process)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides for every run")


def tune_command(args: argparse.Namespace) -> int:
    """Run ``tune`` from parsed arguments; prints the report's path (exit 2 without Optuna)."""
    from mmix_applied.tune import require_optuna, tune

    try:
        require_optuna()
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    final = args.final_seeds is None or args.final_seeds.strip().lower() != "none"
    final_seeds = parse_csv(int, args.final_seeds, "--final-seeds") if final and args.final_seeds else None
    report = tune(args.config, trials=args.trials, seeds=parse_csv(int, args.seeds, "--seeds"), space=args.space,
                  storage=args.storage, study_name=args.study, overrides=list(args.overrides), out_dir=args.out,
                  final_seeds=final_seeds, final=final, prune=not args.no_prune,
                  keep_checkpoints=args.keep_checkpoints, sampler_seed=args.sampler_seed,
                  command=" ".join(["mmix-applied", *sys.argv[1:]]))
    print(f"report: {report}")
    return 0
