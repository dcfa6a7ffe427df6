"""The training engine (PyTorch Lightning): module, trainer, checkpoints, run directories.

``from mmix_applied.engine import fit`` trains a :class:`mmix_applied.config.Config`; see
:mod:`mmix_applied.engine.runner`. The engine owns the recipe contract (:mod:`.recipe`: the
``Recipe`` base and its registry), the run configuration (:mod:`.config`), the one data module
every recipe uses (:mod:`.datamodule`) and the prediction writer (:mod:`.predictions`).
Importing this package imports Lightning; the mixing core does not.
"""

from mmix_applied.data.sampling import SeededRandomSampler, make_loader
from mmix_applied.engine.checkpoints import AtomicCheckpointIO, CheckpointError, load_checkpoint
from mmix_applied.engine.datamodule import DataModule
from mmix_applied.engine.module import MixupModule, NonFiniteLossError, build_mixer
from mmix_applied.engine.predictions import write_table
from mmix_applied.engine.recipe import RECIPES, DataConfig, NoOptions, Recipe, get_recipe, list_recipes, register_recipe
from mmix_applied.engine.runner import build_trainer, fit, predict, resolve_checkpoint, test

__all__ = [
    "RECIPES",
    "AtomicCheckpointIO",
    "CheckpointError",
    "DataConfig",
    "DataModule",
    "MixupModule",
    "NoOptions",
    "NonFiniteLossError",
    "Recipe",
    "SeededRandomSampler",
    "build_mixer",
    "build_trainer",
    "fit",
    "get_recipe",
    "list_recipes",
    "load_checkpoint",
    "make_loader",
    "predict",
    "register_recipe",
    "resolve_checkpoint",
    "test",
    "write_table",
]
